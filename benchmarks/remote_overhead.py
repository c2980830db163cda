"""Agent steps/s through the contest server + client vs. the same environment in-process.

Both sides play uniformly random actions on Airstriker (resetting when done), the same number of
steps, in the same run, in many short alternating rounds so that machine noise hits both alike;
the ratio reported is the median over rounds of (remote steps/s) / (in-process steps/s). The remote
side is the real thing: `python -m evaluation serve` in a subprocess, `RemoteEnv` here (with its
default copy of each observation, as an agent gets it).

    python benchmarks/remote_overhead.py [--steps 1000] [--rounds 10]

Last line: `BENCH remote_overhead ratio=<remote/in-process> target=0.90`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.contest.client import RemoteEnv  # noqa: E402
from evaluation.contest.env import make_contest_env  # noqa: E402

LEVEL = "Airstriker-Genesis-v0:Level1"
TARGET = 0.90


def play(env: Any, steps: int) -> float:
    """Seconds for `steps` random steps, going on from where the last call stopped (the contest
    forbids a reset before done); resets when done are part of the cost."""
    if not getattr(env, "_bench_started", False):
        env.reset()
        env._bench_started = True
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc, clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="steps per round and side")
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-"))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evaluation",
            "serve",
            "--level",
            LEVEL,
            "--socket",
            str(base / "s"),
            "--results-dir",
            str(base / "r"),
            "--seed",
            "0",
            "--budget",
            str(10 * args.steps * args.rounds + 1000),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        local = make_contest_env(LEVEL, seed=0)
        local.action_space.seed(0)
        remote = RemoteEnv(base / "s")
        remote.action_space.seed(0)
        play(local, 200)  # warm both up
        play(remote, 200)
        t_local = t_remote = 0.0
        cpu_local = cpu_remote = 0.0
        ratios = []
        for r in range(args.rounds):
            c0 = time.process_time()
            a = play(local, args.steps)
            c1 = time.process_time()
            s1 = cpu_seconds(server.pid)
            b = play(remote, args.steps)
            cpu_local += c1 - c0
            cpu_remote += time.process_time() - c1 + cpu_seconds(server.pid) - s1
            t_local += a
            t_remote += b
            ratios.append(a / b)
            print(
                f"round {r + 1}: in-process {args.steps / a:7.1f} steps/s   "
                f"remote {args.steps / b:7.1f} steps/s   ratio {a / b:.3f}",
                flush=True,
            )
        remote.close()
        local.close()
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(30)
        shutil.rmtree(base, ignore_errors=True)
    n = args.steps * args.rounds
    ratio = statistics.median(ratios)
    print(
        f"total: in-process {n / t_local:.1f} steps/s, remote {n / t_remote:.1f} steps/s "
        f"({n} steps each, {1e6 * (t_remote - t_local) / n:.0f} us/step overhead, "
        f"ratio of totals {t_local / t_remote:.3f})"
    )
    print(
        f"CPU per step: in-process {1e6 * cpu_local / n:.0f} us, remote (server + client) "
        f"{1e6 * cpu_remote / n:.0f} us"
    )
    print(f"median of per-round ratios {ratio:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"BENCH remote_overhead ratio={ratio:.3f} target={TARGET:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
