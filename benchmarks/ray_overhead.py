"""What the Ray backend costs on one machine: the same work locally and on a 2-node local Ray
cluster (`ray.cluster_utils.Cluster`, one CPU and a 78 MiB object store per node), in one run.

1. A suite: 8 runs of the random agent (2 agent names × 4 seeds) on Airstriker, `--budget`
   timesteps each. Local: `SuiteRunner` with 2 workers; Ray: `RaySuiteRunner`, one run per node
   at a time (2 at once). Throughput ratio = local seconds / Ray seconds (target ≥ 0.9).
2. Level meta-iterations (meta_train/configs/atari-train.yaml, smaller): `train` with the local
   level sampler (`workers` emulator processes) and with the Ray sampler (one actor per
   node, each with `workers / 2` emulators: the same number in all). Ratio = local
   seconds / Ray seconds of an iteration (sampling + learning), over the iterations after the
   first (which starts the actors and the emulators) (target ≥ 0.8).

Cluster start-up (≈ 10-20 s) is not counted: a cluster is started once for many suites.

    python benchmarks/ray_overhead.py [--budget 1500] [--iterations 3] [--horizon 128]

Last lines: `BENCH ray_overhead suite_ratio=... target=0.9` and
`BENCH ray_overhead meta_ratio=... target=0.8`.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.suites.ray_suite import RayOptions, RaySuiteRunner  # noqa: E402
from evaluation.suites.suite import SuiteRunner, open_suite  # noqa: E402

LEVEL = "Airstriker-Genesis-v0:Level1"
MIB = 1024**2


def start_cluster(tmp: Path) -> Any:
    import ray
    from ray.cluster_utils import Cluster

    (tmp / "ray").mkdir()
    os.environ.update(
        {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp)}
    )
    node = {"num_cpus": 1, "object_store_memory": 78 * MIB}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    return cluster


def suite_seconds(out: Path, budget: int, ray_address: str | None) -> tuple[float, float]:
    """(wall seconds of the suite, mean wall seconds of one run as its results.json says)."""
    given = {
        "agents": ["random", "random_b"],
        "levels": [LEVEL],
        "levels_spec": LEVEL,
        "seeds": 4,
        "budget": budget,
        "wallclock_s": 600.0,
        "runtime": "local",
        "agent_args": {},
        "record": False,
        "aliases": {"random_b": "random"},
        "images": {},
    }
    config = open_suite(out, given)
    runner: Any = (
        SuiteRunner(config, out, 2)
        if ray_address is None
        else RaySuiteRunner(config, out, RayOptions(address=ray_address))
    )
    t0 = time.perf_counter()
    outcome = runner.run(list(config.run_keys()))
    seconds = time.perf_counter() - t0
    statuses = {r.get("status") for _, r in outcome.done}
    if len(outcome.done) != 8 or statuses != {"budget"}:
        raise SystemExit(f"the suite did not finish cleanly: {len(outcome.done)} runs, {statuses}")
    return seconds, sum(float(r["wallclock_s"]) for _, r in outcome.done) / len(outcome.done)


def meta_seconds(out: Path, args: argparse.Namespace, ray_address: str | None) -> list[float]:
    from agent.config import load_config
    from meta_train.configs import CONFIG_DIR, DEFAULTS
    from meta_train.loop import train

    envs = 2 if ray_address is None else 1  # emulators per sampler: 2 in all either way
    cfg = load_config(
        CONFIG_DIR / "atari-train.yaml",
        [
            f"iterations={args.iterations}",
            "meta_batch=2",
            "trajectories=2",
            f"task.horizon={args.horizon}",
            f"workers={envs}",
            "tensorboard=false",
            "ppo.epochs=1",
        ],
        defaults=DEFAULTS,
    )
    if ray_address is not None:
        cfg = {**cfg, "backend": "ray", "ray_address": ray_address}
    train(cfg, out, progress=False)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [float(r["sampling_s"]) + float(r["learning_s"]) for r in rows[1:]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=1500, help="timesteps per suite run")
    ap.add_argument("--iterations", type=int, default=3, help="meta-iterations (≥ 2)")
    ap.add_argument("--horizon", type=int, default=128, help="steps per trajectory")
    args = ap.parse_args()
    subprocess.run(
        [sys.executable, "-m", "roms_setup", "import", "--bundled"], check=True, capture_output=True
    )
    tmp = Path(tempfile.mkdtemp(prefix="rayb", dir="/tmp"))
    cluster = None
    try:
        local_s, local_run = suite_seconds(tmp / "local", args.budget, None)
        t0 = time.perf_counter()
        cluster = start_cluster(tmp)
        print(f"2-node cluster up in {time.perf_counter() - t0:.1f} s", flush=True)
        ray_s, ray_run = suite_seconds(tmp / "ray", args.budget, cluster.address)
        print(
            f"suite of 8 runs × {args.budget} steps: local (2 workers) {local_s:.1f} s, "
            f"Ray (2 nodes) {ray_s:.1f} s; one run's own wall clock (mean): local "
            f"{local_run:.1f} s, Ray {ray_run:.1f} s",
            flush=True,
        )
        meta_local = meta_seconds(tmp / "meta-local", args, None)
        meta_ray = meta_seconds(tmp / "meta-ray", args, cluster.address)
        ml, mr = sum(meta_local) / len(meta_local), sum(meta_ray) / len(meta_ray)
        print(
            f"level meta-iteration (2 levels × 2 trajectories × {args.horizon} steps, 1 inner "
            f"step; iterations 2..{args.iterations}): local {ml:.2f} s, Ray {mr:.2f} s "
            f"(each: local {[round(x, 2) for x in meta_local]}, Ray "
            f"{[round(x, 2) for x in meta_ray]})",
            flush=True,
        )
        print(f"BENCH ray_overhead suite_ratio={local_s / ray_s:.3f} target=0.9")
        print(f"BENCH ray_overhead meta_ratio={ml / mr:.3f} target=0.8")
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
