"""Our PPO against Stable-Baselines3's PPO: environment steps per second, learning included.

Same environment (Airstriker-Genesis-v0:Level1, the contest env + agent-side wrappers: 7 actions,
(4, 84, 84) uint8 frames, reward × 0.01), same number of subprocess environments (2), rollout
length (2048 per env), minibatch (512), epochs (3), hyperparameters (lr 2e-4, clip 0.1 for the
surrogate and the value, entropy 0.01, Adam eps 1e-5, grad-norm 0.5) and network (Nature CNN
with a shared body, linear policy and value heads, orthogonal init). Each learner runs in its
own subprocess over the same number of timesteps; the clock runs from the first reset to the
end of the last update.

    python benchmarks/ppo_vs_sb3.py [--updates U] [--rounds R]

Needs `pip install stable-baselines3` (the `bench` extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import queue
import statistics
import sys
import time

LEVEL = "Airstriker-Genesis-v0:Level1"
NENVS = 2
NSTEPS = 2048
BATCH = 512
EPOCHS = 3
HYPER = {
    "lr": 2e-4,
    "clip": 0.1,
    "ent": 0.01,
    "vf": 0.5,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "max_grad_norm": 0.5,
}


def _sb3_env(rank: int):  # top level: pickled into SB3's worker processes
    from agent.wrappers import wrap_agent_env
    from evaluation.contest.env import make_contest_env

    return wrap_agent_env(make_contest_env(LEVEL, seed=rank))


def run_ours(timesteps: int, out: mp.Queue) -> None:
    import torch

    from agent.learners.ppo import PPO, PPOConfig, learn
    from agent.policies import build_policy
    from agent.training.level_envs import make_level_vec_env
    from sonic_common.devices import set_torch_threads

    set_torch_threads(0)
    torch.manual_seed(0)
    envs = make_level_vec_env([LEVEL], NENVS, seed=0)
    policy = build_policy(
        {
            "body": "cnn",
            "obs_shape": [4, 84, 84],
            "action": {"type": "discrete", "n": int(envs.single_action_space.n)},
        }
    )
    cfg = PPOConfig(
        nsteps=NSTEPS,
        nminibatches=NENVS * NSTEPS // BATCH,
        noptepochs=EPOCHS,
        lr=HYPER["lr"],
        cliprange=HYPER["clip"],
        ent_coef=HYPER["ent"],
        vf_coef=HYPER["vf"],
        gamma=HYPER["gamma"],
        gae_lambda=HYPER["gae_lambda"],
        max_grad_norm=HYPER["max_grad_norm"],
    )
    ppo = PPO(policy, cfg, "cpu")
    start = time.perf_counter()
    learn(ppo, envs, total_timesteps=timesteps, seed=0)
    elapsed = time.perf_counter() - start
    envs.close()
    out.put(("ours", ppo.timesteps / elapsed, torch.get_num_threads()))


def run_sb3(timesteps: int, out: mp.Queue) -> None:
    import torch
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from sonic_common.devices import set_torch_threads

    set_torch_threads(0)
    import functools

    envs = SubprocVecEnv(
        [functools.partial(_sb3_env, i) for i in range(NENVS)], start_method="forkserver"
    )
    model = SB3PPO(
        "CnnPolicy",
        envs,
        n_steps=NSTEPS,
        batch_size=BATCH,
        n_epochs=EPOCHS,
        learning_rate=HYPER["lr"],
        clip_range=HYPER["clip"],
        clip_range_vf=HYPER["clip"],
        ent_coef=HYPER["ent"],
        vf_coef=HYPER["vf"],
        gamma=HYPER["gamma"],
        gae_lambda=HYPER["gae_lambda"],
        max_grad_norm=HYPER["max_grad_norm"],
        normalize_advantage=True,
        seed=0,
        device="cpu",
        verbose=0,
        # NatureCNN (512 features) shared by both heads, heads straight on it: net_arch=[]
        policy_kwargs={"net_arch": [], "share_features_extractor": True},
    )
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    elapsed = time.perf_counter() - start
    envs.close()
    out.put(("sb3", model.num_timesteps / elapsed, torch.get_num_threads()))


def measure(target, timesteps: int) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(timesteps, out))
    proc.start()
    deadline = time.monotonic() + 1800
    while True:  # a learner that dies is reported at once, not after the timeout
        try:
            _, rate, threads = out.get(timeout=5)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise SystemExit(
                    f"error: the {target.__name__} learner died (exit code "
                    f"{proc.exitcode}); its traceback is above"
                ) from None
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"error: {target.__name__} gave no result in 1800 s") from None
    proc.join()
    return rate, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2, help="PPO updates per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (median)")
    args = parser.parse_args()
    if importlib.util.find_spec("stable_baselines3") is None:
        print(
            "error: Stable-Baselines3 is missing: install the bench extra "
            "(.venv/bin/pip install -e '.[bench]')",
            file=sys.stderr,
        )
        raise SystemExit(2)
    timesteps = args.updates * NENVS * NSTEPS
    print(
        f"{LEVEL}: {NENVS} envs x {NSTEPS} steps, minibatch {BATCH}, {EPOCHS} epochs, "
        f"Nature CNN, {args.updates} updates = {timesteps} steps per measurement",
        flush=True,
    )
    ours, sb3 = [], []
    for r in range(args.rounds):
        rate, threads = measure(run_sb3, timesteps)
        sb3.append(rate)
        print(f"round {r + 1}: sb3  {rate:7.1f} steps/s ({threads} torch threads)", flush=True)
        rate, threads = measure(run_ours, timesteps)
        ours.append(rate)
        print(f"round {r + 1}: ours {rate:7.1f} steps/s ({threads} torch threads)", flush=True)
    ours_rate, sb3_rate = statistics.median(ours), statistics.median(sb3)
    print(f"stable-baselines3 PPO: {sb3_rate:7.1f} env steps/s (learning included)")
    print(f"our PPO:               {ours_rate:7.1f} env steps/s (learning included)")
    print(f"BENCH ppo_vs_sb3 speedup={ours_rate / sb3_rate:.3f} target=1.25")


if __name__ == "__main__":
    main()
