"""Peak memory and time of one real second-order MAML meta-iteration with levels as tasks, at the
full 84×84×4 observation: 8 levels × 10 trajectories × 500 steps per inner step (issue's scale).

    python benchmarks/maml_levels_memory.py [--levels 8] [--trajectories 10] [--horizon 500]
        [--grad-chunk 512] [--meta-optimizer vpg]

Runs `python -m meta_train --config meta_train/configs/atari-train.yaml --iterations 1` with
those settings (real Atari emulators, one per worker process; Nature CNN, one inner step, second
order) and samples the resident memory of its whole process tree (the trainer plus the emulator
workers) every 0.2 s; the trainer's own peak is its VmHWM. The time per meta-iteration comes
from its metrics.csv (sampling and learning).

The reference, in the same run: a naive meta-iteration (frames as float32, every task's
second-order graph kept until one backward: benchmarks/maml_memory.py's `naive`), measured on
synthetic frames at a small scale and extrapolated linearly in frames to this scale — the
memory the seed study ran out of. The 8 GB target is the issue's; the last line is
`BENCH maml_levels_memory peak_gb=<tree peak> target=<=8`.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo += [int(k) for k in kids]
        except (OSError, ValueError):
            continue
    return total


def naive_bytes_per_frame(threads: int) -> float:
    """Peak memory of benchmarks/maml_memory.py's naive meta-iteration per frame, from two
    small runs (slope, so the interpreter's fixed cost drops out)."""
    from maml_memory import run_child  # type: ignore[import-not-found]

    small = run_child("naive", 2, 200, threads)
    large = run_child("naive", 2, 600, threads)
    return (large["peak_rss_mb"] - small["peak_rss_mb"]) * 2**20 / (2 * (600 - 200) * 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--trajectories", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=500)
    parser.add_argument("--grad-chunk", type=int, default=512)
    parser.add_argument(
        "--meta-optimizer",
        default="vpg",
        help="vpg: one meta-gradient (PPO repeats it per epoch, TRPO adds HVPs)",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as d:
        cmd = [
            sys.executable,
            "-m",
            "meta_train",
            "--config",
            "meta_train/configs/atari-train.yaml",
            "--out",
            d,
            "--iterations",
            "1",
            "--no-progress",
            "--meta-optimizer",
            args.meta_optimizer,
            "--set",
            f"meta_batch={args.levels}",
            "--set",
            f"trajectories={args.trajectories}",
            "--set",
            f"task.horizon={args.horizon}",
            "--set",
            f"grad_chunk={args.grad_chunk}",
            "--set",
            "first_order=false",
            "--set",
            "adapt_steps=1",
            "--set",
            f"torch_threads={args.threads}",
            "--set",
            "tensorboard=false",
        ]
        print("$ " + " ".join(cmd), flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT)
        peak = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_rss_bytes(proc.pid))
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        rc = proc.wait()
        stop.set()
        watcher.join()
        wall = time.monotonic() - t0
        if rc != 0:
            raise SystemExit(f"meta_train failed (exit {rc})")
        with open(Path(d) / "metrics.csv", newline="") as f:
            row = list(csv.DictReader(f))[-1]
    frames = args.levels * args.trajectories * args.horizon * 2  # inner + outer batches
    per_frame = naive_bytes_per_frame(args.threads)
    naive = per_frame * frames
    gb = peak / 1e9
    print(
        f"scale: {args.levels} levels × {args.trajectories} trajectories × {args.horizon} "
        f"steps, 1 inner step, second order, grad_chunk {args.grad_chunk}, "
        f"{args.meta_optimizer}: {frames} frames of 84×84×4"
    )
    print(
        f"ours: peak RSS of the process tree {gb:.2f} GB; meta-iteration "
        f"{float(row['sampling_s']):.0f} s sampling + {float(row['learning_s']):.0f} s "
        f"learning (wall {wall:.0f} s with start-up)"
    )
    print(
        f"naive (float32 frames, all graphs kept): {per_frame / 2**20:.3f} MiB per frame "
        f"measured on synthetic frames → {naive / 1e9:.1f} GB at this scale"
    )
    print(f"ratio ours/naive: {peak / naive:.3f}")
    print(f"BENCH maml_levels_memory peak_gb={gb:.2f} target=<=8")


if __name__ == "__main__":
    main()
