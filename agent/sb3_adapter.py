"""A Gymnasium library (Stable-Baselines3, a checker, your own loop) on the contest connection.

The contest environment (`evaluation.contest.client.RemoteEnv`) keeps the 2018 contest's rules,
which a library written for plain Gymnasium environments runs into:

- **No reset before the episode is done.** The server answers a reset in mid-episode with
  ResetError (5) and the episode goes on; a step after `done` is refused the same way. A library
  that resets whenever it likes (Gymnasium's `check_env`, a time limit wrapper, SB3's
  `learn(reset_num_timesteps=...)`, an evaluation callback) gets `RemoteEnvError`.
- **Every reset is a timestep** of the budget, like every step.
- **The budget ends the run.** At the budget (or the wall clock) `step`/`reset` raise
  `BudgetExhausted` (a `RemoteEnvClosed`): catch it around the library's training loop.
- **The server owns the seed.** `reset(seed=...)` is accepted and ignored.
- `truncated` is always False and `info` always {} (the contest never sent either).

`contest_gym_env()` returns the connection with a reset that a library may call at any time: in
mid-episode it sends nothing and returns the current observation — the contest's episode goes
on (its return and the score are unchanged, no timestep is spent), the library sees a new
episode start there — under the baselines' agent-side wrappers (discrete actions, 84×84
grayscale, 4 stacked frames, reward × 0.01). Wrap it in SB3's `DummyVecEnv`, a `TimeLimit`, a
vector env. (Gymnasium's `check_env` still fails, at its determinism checks: the contest's
sticky actions are random and the server owns the seed.) `python -m agent.sb3_ppo` is a
complete contest agent built on it.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from agent.connection import make_env
from agent.wrappers import WrapperConfig, wrap_agent_env


class ResetAnyTime(gym.Wrapper):
    """A reset in mid-episode, which the contest refuses, becomes "go on from here": nothing is
    sent, the current observation comes back. Wrap the raw contest connection with it."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._done = True  # the server's state: a reset comes first
        self._obs: Any = None
        self.continued = 0  # mid-episode resets answered with the current observation

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if not self._done:
            self.continued += 1
            if seed is not None:  # seeds the env's own np_random, as the connection's reset does
                gym.Env.reset(self.env.unwrapped, seed=seed)
            return np.array(self._obs), {}
        self._obs, info = self.env.reset(seed=seed, options=options)
        self._done = False
        return self._obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        self._obs, reward, terminated, truncated, info = self.env.step(action)
        self._done = bool(terminated)
        return self._obs, reward, terminated, truncated, info


def contest_gym_env(raw: gym.Env | None = None, **wrapper_args: Any) -> gym.Env:
    """The contest connection ($CONTEST_SOCKET_DIR unless `raw` is given) as a Gymnasium
    environment a library can reset at will; `wrapper_args` go to `wrap_agent_env`."""
    env = ResetAnyTime(raw if raw is not None else make_env())
    return wrap_agent_env(env, WrapperConfig(**wrapper_args))
