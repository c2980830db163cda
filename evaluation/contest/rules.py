"""The contest's numbers (Nichol et al. 2018, "Gotta Learn Fast", and openai/retro-contest's
code). Facts, not hyperparameters. Where each rule of the contest is enforced:

- scenario 'contest', filtered actions, no window: evaluation/contest/env.py `make_retro_env`
- stochastic frame skip (FRAMES_PER_STEP, STICK_PROB; no stick on the first step after a
  reset): evaluation/contest/env.py `StochasticFrameSkip`
- episode limit (EPISODE_STEPS): evaluation/contest/env.py `make_contest_env`
- timestep budget (BUDGET_STEPS; resets count): evaluation/contest/server.py `Budget.check_steps`,
  counted in `ContestServer._reset` and `._step`
- wall clock (WALLCLOCK_S): evaluation/contest/server.py `Budget.check_clock`
- no reset before done, no step after done (ResetError): evaluation/contest/server.py
  `ContestServer._reset` and `._step`
- one client per run: evaluation/contest/server.py `ContestServer._setup_and_serve`
- the wire format, actions folded into one integer: evaluation/contest/protocol.py
- score = mean return of the finished episodes (the cut-off one only when none finished):
  evaluation/contest/records.py `score`
- the agent reaches nothing but the connection, with bounded memory and lifetime:
  evaluation/contest/agent_process.py (local), evaluation/docker/runtime.py (docker)
"""

FRAMES_PER_STEP = 4  # each agent step runs 4 emulator frames
STICK_PROB = 0.25  # probability the previous action sticks for the first frame of a step
EPISODE_STEPS = 4500  # 18,000 frames: 5 minutes of game time
BUDGET_STEPS = 1_000_000  # timesteps per test level
WALLCLOCK_S = 12 * 3600  # wall-clock limit per test level
MAX_EPISODE_RETURN = 10_000.0  # 9000 for progress + up to 1000 completion bonus (Sonic)
