"""The report's stratified bootstrap (evaluation.reports.stats, NumPy over all replications at once)
against rliable's own (`rliable.library.get_interval_estimates`, arch, one call per replication),
same score matrix, same number of replications: time and the interval each gives.

    python benchmarks/report_bootstrap.py [--reps N] [--seeds K] [--levels L]

The target: at least 10× faster, the intervals' ends within 0.02 of each other (normalized
score units; the bootstrap's own noise at 20,000 replications is about that).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--levels", type=int, default=4)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="random_state is deprecated")
    from rliable import library as rly
    from rliable import metrics

    from evaluation.reports import stats as agg

    m = np.random.default_rng(0).normal(0.5, 0.3, size=(args.seeds, args.levels))
    agg.interval(m, "iqm", reps=100)  # imports and first call outside the timing
    t0 = time.perf_counter()
    ours = agg.interval(m, "iqm", reps=args.reps)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, cis = rly.get_interval_estimates(
        {"x": m},
        lambda s: np.array([metrics.aggregate_iqm(s)]),
        reps=args.reps,
        random_state=np.random.RandomState(0),
    )
    t_rly = time.perf_counter() - t0
    low, high = float(cis["x"][0, 0]), float(cis["x"][1, 0])
    diff = max(abs(ours.low - low), abs(ours.high - high))
    print(
        f"IQM of a {args.seeds}×{args.levels} matrix, {args.reps} replications: ours "
        f"{t_ours:.2f} s [{ours.low:.4f}, {ours.high:.4f}], rliable {t_rly:.2f} s "
        f"[{low:.4f}, {high:.4f}]; largest difference of the ends {diff:.4f}"
    )
    print(
        f"intervals {'agree' if diff < 0.02 else 'DIFFER'} (ends within {diff:.3f}, target < 0.02)"
    )
    print(f"BENCH report_bootstrap speedup={t_rly / t_ours:.0f} target=>10")
    return 0 if diff < 0.02 else 1


if __name__ == "__main__":
    raise SystemExit(main())
