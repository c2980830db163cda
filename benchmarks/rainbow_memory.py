"""Rainbow's memory at the contest's full replay capacity (500 000 transitions).

    python benchmarks/rainbow_memory.py [--capacity 500000] [--updates 50]

Fills agent/learners/replay.py's FrameReplay with `--capacity` steps of 84×84 frames through its
real `add` (one environment, an episode end every 4500 steps, as the contest's episode limit), then
runs `--updates` Rainbow updates (the contest's network and batch, CPU), and reports:

- the buffer's bytes per transition (all its arrays, priority trees included), against a naive
  buffer that keeps each transition's stacked observation and next observation (2 × 4 × 7056
  bytes of frames alone);
- the process's peak resident memory (VmHWM), which is what the agent container's memory limit
  must hold, against that limit (evaluation/docker/images.py: AGENT_MEMORY).

Last line: `BENCH rainbow_memory peak_gib=<peak> target=<container limit in GiB>`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.learners.rainbow import Rainbow, RainbowConfig, RainbowNet, make_replay, rainbow_spec  # noqa: E402
from evaluation.contest.agent_process import parse_memory  # noqa: E402
from evaluation.docker.images import AGENT_MEMORY  # noqa: E402

FRAME = (84, 84)
EPISODE = 4500


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capacity", type=int, default=500_000)
    ap.add_argument("--updates", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = RainbowConfig(capacity=args.capacity, learning_starts=0)
    agent = Rainbow(RainbowNet(rainbow_spec((4, *FRAME), 7, cfg)), cfg)
    replay = make_replay(cfg, (4, *FRAME), nenvs=1)
    print(
        f"after setup: RSS {rss_mb('VmRSS'):.0f} MB, replay arrays "
        f"{replay.nbytes() / 1e9:.2f} GB "
        "(allocated, not yet touched)",
        flush=True,
    )
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (256, 1, *FRAME), dtype=np.uint8)
    replay.start(frames[0])
    t0 = time.monotonic()
    for t in range(args.capacity):
        replay.add(
            np.array([t % 7]),
            np.array([1.0]),
            np.array([t % EPISODE == EPISODE - 1]),
            frames[t % 256],
        )
        if t % 100_000 == 0 and t:
            print(f"  {t} steps, RSS {rss_mb('VmRSS'):.0f} MB", flush=True)
    fill_s = time.monotonic() - t0
    for _ in range(args.updates):
        agent.update(replay, rng)
    per_transition = replay.nbytes() / args.capacity
    naive = 2 * 4 * FRAME[0] * FRAME[1]
    peak_gib = rss_mb("VmHWM") / 1024.0
    limit_gib = parse_memory(AGENT_MEMORY["rainbow"]) / 2**30
    print(
        f"replay: {replay.size} transitions, {replay.nbytes() / 1e9:.3f} GB, "
        f"{per_transition:.0f} bytes per transition (naive obs + next_obs frames: {naive}; "
        f"ratio {per_transition / naive:.3f}); filled in {fill_s:.0f} s"
    )
    print(
        f"peak RSS after {args.updates} updates: {peak_gib:.2f} GiB "
        f"(container limit for rainbow: {AGENT_MEMORY['rainbow']})"
    )
    print(f"BENCH rainbow_memory peak_gib={peak_gib:.2f} target={limit_gib:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
