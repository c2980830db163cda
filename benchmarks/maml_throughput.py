"""Environment steps per second of MAML meta-training on HalfCheetah, learning included, against
raw Gymnasium HalfCheetah-v5 on the same number of processes.

    python benchmarks/maml_throughput.py [--tasks 40] [--trajectories 20] [--horizon 100]
        [--meta-optimizer trpo] [--workers 2] [--rounds 2]

ours: one meta-iteration of meta_train at pytorch-maml-rl's scale (40 tasks × 20 trajectories ×
100 steps, 1 inner step, TRPO): pre-update sampling, inner steps, post-update sampling, the TRPO
step; its environment steps (pre and post) over its wall time. The sampler workers start and
run one small iteration before the clock starts.
raw: `gym.make("HalfCheetah-v5")` stepped with random actions in `--workers` processes, the same
number of steps in total, nothing else (no policy, no learning).
Rounds alternate raw and ours; the ratio is of the medians. Also prints seconds per
meta-iteration, split into sampling and learning. Last line:
`BENCH maml_throughput ratio=<ours/raw> target=0.5`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from typing import Any

TARGET = 0.5


def raw_worker(steps: int) -> float:
    import gymnasium as gym
    import numpy as np

    from meta_train.tasks import quiet_mujoco

    quiet_mujoco()
    env = gym.make("HalfCheetah-v5", ctrl_cost_weight=0.05)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (1000, 6)).astype(np.float32)
    start = time.perf_counter()
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[t % 1000])
        if terminated or truncated:
            env.reset()
    return time.perf_counter() - start


def raw_rate(pool: Any, workers: int, steps: int) -> float:
    """Raw HalfCheetah-v5 steps/s over `workers` processes, stepping time of the slowest (the
    environments are made before the clock starts)."""
    return steps / max(pool.map(raw_worker, [steps // workers] * workers))


class MetaIteration:
    """A meta_train learner, sampler and meta-optimizer, ready to time iterations."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from agent.config import load_config
        from agent.policies import build_policy
        from meta_train.configs import DEFAULTS
        from meta_train.loop import make_learner, make_sampler, policy_spec
        from meta_train.meta_optimizers import make_meta_optimizer
        from meta_train.tasks import TaskDistribution

        self.cfg = load_config(
            None,
            [
                f"meta_batch={args.tasks}",
                f"trajectories={args.trajectories}",
                f"task.horizon={args.horizon}",
                f"workers={args.workers}",
                f"meta_optimizer={args.meta_optimizer}",
                f"task.action_scale={args.action_scale}",
                f"torch_threads={args.workers}",
            ],
            defaults=DEFAULTS,
        )
        torch.set_num_threads(args.workers)
        torch.manual_seed(0)
        self.policy = build_policy(policy_spec(self.cfg))
        self.learner = make_learner(self.policy, self.cfg)
        self.opt = make_meta_optimizer(args.meta_optimizer, self.learner, self.cfg)
        self.dist = TaskDistribution.from_config(self.cfg)
        self.sampler = make_sampler(self.cfg, self.policy, self.dist)
        self.iteration = 0
        self.run(tasks=min(4, args.tasks), count=2)  # start the workers

    def run(self, tasks: int | None = None, count: int | None = None) -> tuple[int, float, float]:
        """One meta-iteration: (environment steps, sampling s, learning s)."""
        from meta_train.collect import collect
        from meta_train.meta_learner import iteration_seeds

        tasks = tasks or int(self.cfg["meta_batch"])
        count = count or int(self.cfg["trajectories"])
        rng, seeds = iteration_seeds(0, self.iteration, tasks, self.learner.adapt_steps)
        self.iteration += 1
        t0 = time.perf_counter()
        batches = collect(self.learner, self.sampler, self.dist.sample(tasks, rng), count, seeds)
        t1 = time.perf_counter()
        self.opt.step(batches)
        t2 = time.perf_counter()
        steps = tasks * count * self.dist.horizon * (self.learner.adapt_steps + 1)
        return steps, t1 - t0, t2 - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--trajectories", type=int, default=20)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--meta-optimizer", default="trpo", choices=["trpo", "ppo", "vpg"])
    p.add_argument("--action-scale", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    ours = MetaIteration(args)
    raw_rates, our_rates, iters = [], [], []
    with mp.get_context("forkserver").Pool(args.workers) as pool:
        pool.map(raw_worker, [10] * args.workers)  # imports done before any clock starts
        try:
            for r in range(1, args.rounds + 1):
                steps, sampling, learning = ours.run()
                raw = raw_rate(pool, args.workers, steps)
                total = sampling + learning
                raw_rates.append(raw)
                our_rates.append(steps / total)
                iters.append(total)
                print(
                    f"round {r}: raw HalfCheetah-v5 {raw:8.0f} steps/s   meta-training "
                    f"{steps / total:8.0f} steps/s ({total:.1f} s/iteration: sampling "
                    f"{sampling:.1f} s, learning {learning:.1f} s)",
                    flush=True,
                )
        finally:
            ours.sampler.close()
    raw_med, our_med = statistics.median(raw_rates), statistics.median(our_rates)
    print(
        f"{args.tasks} tasks × {args.trajectories} trajectories × {args.horizon} steps, 1 inner "
        f"step, {args.meta_optimizer}, {args.workers} processes: median "
        f"{statistics.median(iters):.1f} s per meta-iteration"
    )
    print(f"median raw {raw_med:.0f} steps/s, meta-training {our_med:.0f} steps/s")
    print(f"BENCH maml_throughput ratio={our_med / raw_med:.3f} target={TARGET}")


if __name__ == "__main__":
    main()
