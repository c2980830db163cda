"""Aggregates over levels and seeds as `rliable` (Agarwal et al. 2021) defines them: the
interquartile mean (IQM) and the mean of normalized scores with 95% stratified-bootstrap
confidence intervals, the performance profile, the probability of improvement over a baseline,
and IQM learning curves.

A score matrix is one agent's normalized scores, shape (seeds, levels): a row per seed that has a
score on every level. The point estimates are rliable's own functions (`rliable.metrics`). The
intervals are rliable's procedure, a stratified bootstrap (seeds resampled with replacement within
each level) with percentile intervals, done here with NumPy on all replications at once: rliable
runs `func` once per replication through `arch`, hundreds of times slower, and a report needs
dozens of intervals (`benchmarks/report_bootstrap.py`, figures in docs/benchmarks.md).
`tests/test_report_aggregates.py` checks them against `rliable.library.get_interval_estimates`.

With fewer than `MIN_SEEDS` seeds no interval is computed: the point estimate stands alone and the
report says so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
MIN_SEEDS = 3  # fewer seeds per level give no interval (a bootstrap of 1-2 values says nothing)
FEW_SEEDS = 5  # below this the report says a percentile bootstrap's intervals are too narrow
IQM_TRIMS_FROM = 4  # an IQM of fewer runs trims nothing (scipy's int(0.25·n) is 0)
REPS = 20_000  # bootstrap replications of the aggregates (rliable's default is 50,000)
CURVE_REPS = 2_000  # per curve point
BOOTSTRAP_SEED = 0  # intervals are reproducible: the same runs give the same report


@dataclass(frozen=True)
class Estimate:
    point: float
    low: float = math.nan  # NaN: no interval (too few seeds)
    high: float = math.nan

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.low)


def iqm(scores: np.ndarray) -> float:
    """rliable's interquartile mean of all the scores: the mean of the middle 50% (scipy's
    trim_mean cutting 25% at each end)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def mean(scores: np.ndarray) -> float:
    from rliable import metrics

    return float(metrics.aggregate_mean(np.asarray(scores, dtype=float)))


def _iqm_rows(flat: np.ndarray) -> np.ndarray:
    """trim_mean(row, 0.25) of each row of (reps, n), as scipy computes it."""
    n = flat.shape[1]
    cut = int(0.25 * n)
    return np.sort(flat, axis=1)[:, cut : n - cut].mean(axis=1)


ROW_FUNCS = {"iqm": _iqm_rows, "mean": lambda flat: flat.mean(axis=1)}
POINT_FUNCS = {"iqm": iqm, "mean": mean}


def resample(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, seeds, levels): each level's seeds drawn with replacement, levels kept."""
    seeds, levels = scores.shape
    idx = rng.integers(0, seeds, size=(reps, seeds, levels))
    return scores[idx, np.arange(levels)[None, None, :]]


def percentile_band(values: np.ndarray) -> np.ndarray:
    """(2, ...): the 95% percentile interval over the replications (axis 0)."""
    tail = (1 - CONFIDENCE) / 2 * 100
    return np.percentile(values, [tail, 100 - tail], axis=0)


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    low, high = percentile_band(values)
    return float(low), float(high)


def interval(scores: np.ndarray, metric: str = "iqm", reps: int = REPS) -> Estimate:
    """IQM or mean (`metric`) of a (seeds, levels) matrix with its 95% interval."""
    scores = np.asarray(scores, dtype=float)
    point = POINT_FUNCS[metric](scores)
    if scores.shape[0] < MIN_SEEDS:
        return Estimate(point)
    boot = resample(scores, reps, np.random.default_rng(BOOTSTRAP_SEED))
    return Estimate(point, *_percentiles(ROW_FUNCS[metric](boot.reshape(reps, -1))))


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y)/2 per replication, averaged over levels: (..., nx, L), (..., ny, L)."""
    gt = (x[..., :, None, :] > y[..., None, :, :]).mean(axis=(-3, -2))
    eq = (x[..., :, None, :] == y[..., None, :, :]).mean(axis=(-3, -2))
    return (gt + eq / 2).mean(axis=-1)


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = REPS) -> Estimate:
    """P(X > Y): the chance that a run of X on a random level beats a run of Y there (ties count
    half), averaged over levels (rliable's Mann-Whitney form); with its interval when both have
    enough seeds."""
    from rliable import metrics

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    point = float(metrics.probability_of_improvement(x, y))
    if min(x.shape[0], y.shape[0]) < MIN_SEEDS:
        return Estimate(point)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = np.concatenate([_poi(resample(x, n, rng), resample(y, n, rng)) for n in _chunks(reps)])
    return Estimate(point, *_percentiles(values))


EXACT_MAX = 200_000  # relabellings of one level enumerated by the exact permutation test


def permutation_p(x: np.ndarray, y: np.ndarray, reps: int = REPS) -> float:
    """One-sided p-value of "X's runs score higher than Y's": a permutation test stratified by
    level (runs relabelled between X and Y within each level), on the sum over levels of the
    Mann-Whitney count (pairs where X beats Y, ties half), so it agrees with the probability of
    improvement. Exact (every relabelling) when a level has at most EXACT_MAX of them, else
    `reps` random relabellings (fixed seed). With 3 seeds a bootstrap interval is too narrow;
    this says how often relabelled runs would do as well. Ours: scipy's permutation_test
    relabels across all levels (it has no strata)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = x.shape[0]
    pooled = np.concatenate([x, y])  # (n + m, levels)
    observed = sum(_twice_u(x[:, g], y[:, g]) for g in range(x.shape[1]))
    if math.comb(pooled.shape[0], n) <= EXACT_MAX:
        null = np.ones(1)  # the distribution of twice the summed count, level by level
        for g in range(x.shape[1]):
            counts = np.bincount([_twice_u(*_split(pooled[:, g], c)) for c in _labels(n, pooled)])
            null = np.convolve(null, counts / counts.sum())
        return float(null[observed:].sum())
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    hits = 0
    for _ in range(reps):
        perm = rng.permuted(np.broadcast_to(np.arange(pooled.shape[0]), pooled.T.shape), axis=1)
        t = sum(_twice_u(pooled[p[:n], g], pooled[p[n:], g]) for g, p in enumerate(perm))
        hits += t >= observed
    return (1 + hits) / (1 + reps)


def _twice_u(x: np.ndarray, y: np.ndarray) -> int:
    return int(2 * (x[:, None] > y[None, :]).sum() + (x[:, None] == y[None, :]).sum())


def _labels(n: int, pooled: np.ndarray) -> list[tuple[int, ...]]:
    return list(itertools.combinations(range(pooled.shape[0]), n))


def _split(values: np.ndarray, chosen: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(values.shape[0], dtype=bool)
    mask[list(chosen)] = True
    return values[mask], values[~mask]


def _chunks(reps: int, size: int = 2_000) -> list[int]:
    return [min(size, reps - i) for i in range(0, reps, size)]


def performance_profile(
    matrices: Mapping[str, np.ndarray], taus: np.ndarray, reps: int = 2_000
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Per agent: the fraction of runs (seed × level) with a normalized score above each tau
    (rliable's `run_score_deviation`), and its (2, len(taus)) interval, None with too few seeds."""
    from rliable.library import run_score_deviation

    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for agent, m in matrices.items():
        m = np.asarray(m, dtype=float)
        point = np.array([run_score_deviation(m, t) for t in taus])
        if m.shape[0] < MIN_SEEDS:
            out[agent] = (point, None)
            continue
        boot = resample(m, reps, np.random.default_rng(BOOTSTRAP_SEED)).reshape(reps, -1)
        fractions = (boot[:, :, None] > np.asarray(taus)[None, None, :]).mean(axis=1)
        out[agent] = (point, percentile_band(fractions))
    return out


def iqm_curve(curves: np.ndarray, reps: int = CURVE_REPS) -> tuple[np.ndarray, np.ndarray | None]:
    """IQM over (seeds × levels) at each point of `curves` (seeds, levels, points), NaN where a
    run has no data yet; and the (2, points) interval, None with too few seeds."""
    curves = np.asarray(curves, dtype=float)
    seeds, levels, points = curves.shape
    mid = np.full(points, np.nan)
    complete = np.flatnonzero(~np.isnan(curves).any(axis=(0, 1)))
    for t in complete:
        mid[t] = iqm(curves[:, :, t])
    if seeds < MIN_SEEDS:
        return mid, None
    band = np.full((2, points), np.nan)
    if complete.size:
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        idx = rng.integers(0, seeds, size=(reps, seeds, levels))
        boot = curves[idx, np.arange(levels)[None, None, :], :][..., complete]
        values = np.stack(
            [_iqm_rows(boot[..., k].reshape(reps, -1)) for k in range(complete.size)], axis=1
        )
        band[:, complete] = percentile_band(values)
    return mid, band
