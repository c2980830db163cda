"""Raw emulator frames/s against the contest environment plus agent-side wrappers, same game.

Each measurement runs in its own subprocess (one emulator per process), alternating raw and
wrapped for several rounds; the median of each is compared. Then 2 wrapped environments in 2
subprocesses at once against 1.

    python benchmarks/env_throughput.py [--level L] [--seconds S] [--rounds R]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

LEVEL = "Airstriker-Genesis-v0:Level1"


def raw_frames_per_s(level: str, seconds: float, out: mp.Queue) -> None:
    import numpy as np

    from evaluation.contest.env import make_retro_env

    env = make_retro_env(level)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(1024, env.action_space.n), dtype=np.int8)
    frames = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions[:256]:
            _, _, terminated, truncated, _ = env.step(a)
            frames += 1
            if terminated or truncated:
                env.reset()
        actions = np.roll(actions, 256, axis=0)
    out.put(frames / (time.perf_counter() - start))


def wrapped_frames_per_s(level: str, seconds: float, out: mp.Queue) -> None:
    import numpy as np

    from agent.wrappers import wrap_agent_env
    from evaluation.contest.env import StochasticFrameSkip, make_contest_env

    env = wrap_agent_env(make_contest_env(level, seed=0))
    inner = env
    while not isinstance(inner, StochasticFrameSkip):
        inner = inner.env
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, size=4096)
    start_frames = inner.frames_emulated
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        for _ in range(64):
            _, _, terminated, truncated, _ = env.step(actions[i % 4096])
            i += 1
            if terminated or truncated:
                env.reset()
    out.put((inner.frames_emulated - start_frames) / (time.perf_counter() - start))


def measure(target, level: str, seconds: float, procs: int = 1) -> float:
    """Total frames/s of `procs` subprocesses running `target` at once."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    workers = [ctx.Process(target=target, args=(level, seconds, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    total = sum(out.get(timeout=seconds * 10 + 60) for _ in workers)
    for w in workers:
        w.join()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", default=LEVEL)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    raw, wrapped = [], []
    for r in range(args.rounds):
        raw.append(measure(raw_frames_per_s, args.level, args.seconds))
        wrapped.append(measure(wrapped_frames_per_s, args.level, args.seconds))
        print(
            f"round {r + 1}: raw {raw[-1]:8.0f} frames/s   contest+wrappers {wrapped[-1]:8.0f} "
            "frames/s",
            flush=True,
        )
    raw_med, wrapped_med = statistics.median(raw), statistics.median(wrapped)
    ratio = wrapped_med / raw_med
    print(f"median raw emulator:            {raw_med:8.0f} frames/s")
    print(
        f"median contest env + wrappers:  {wrapped_med:8.0f} frames/s "
        f"({wrapped_med / 4:.0f} agent steps/s)"
    )
    one = measure(wrapped_frames_per_s, args.level, args.seconds, procs=1)
    two = measure(wrapped_frames_per_s, args.level, args.seconds, procs=2)
    print(
        f"wrapped env, 1 subprocess: {one:8.0f} frames/s; 2 subprocesses: {two:8.0f} frames/s "
        f"(x{two / one:.2f})"
    )
    print(f"BENCH env_throughput ratio={ratio:.3f} target=0.90")


if __name__ == "__main__":
    main()
