"""The report's normalized part: per-level scales, each agent's score matrix, the rliable
aggregates (IQM and mean with intervals, probability of improvement, performance profile), the
IQM learning curves, their figures and their markdown.

Normalized scores are `evaluation.reports.normalize`'s; aggregates and intervals
`evaluation.reports.stats`'s.
An agent's matrix holds the seeds that have a score on every level, so that each row is one seed
across all levels, as the stratified bootstrap needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evaluation.reports import stats as agg
from evaluation.reports.normalize import Scale, level_scales
from sonic_common.errors import UserError
from sonic_common.markdown import md_table

if TYPE_CHECKING:
    from evaluation.reports.report import Table

DEFAULT_BASELINE = "ppo2"


def chosen_baseline(given: str | None, agents: Sequence[str]) -> str | None:
    """The agent the report compares the others with: `given` (--baseline; `none`: no
    comparison), which must be one of `agents`; by default ppo2, left out when absent."""
    if given is None:
        return DEFAULT_BASELINE
    if given == "none":
        return None
    if given not in agents:
        raise UserError(
            f"--baseline {given}: no agent of that name here ({', '.join(agents) or 'none'}): "
            "name one of them, or `none`"
        )
    return given


PROFILE_POINTS = 101


def profile_taus(matrices: dict[str, np.ndarray]) -> np.ndarray:
    """Thresholds of the performance profile: from min(0, lowest score) to max(1, highest)."""
    values = np.concatenate([m.ravel() for m in matrices.values()] + [np.array([0.0, 1.0])])
    return np.linspace(min(0.0, values.min()), max(1.0, values.max()), PROFILE_POINTS)


@dataclass
class Aggregates:
    scales: dict[str, Scale]
    matrices: dict[str, np.ndarray]  # agent -> (seeds, levels) normalized
    seeds: dict[str, list[int]]  # agent -> the seeds of the matrix rows
    iqm: dict[str, agg.Estimate] = field(default_factory=dict)
    mean: dict[str, agg.Estimate] = field(default_factory=dict)
    baseline: str | None = None
    improvement: dict[str, agg.Estimate] = field(default_factory=dict)  # P(agent > baseline)


def agent_matrix(
    table: Table, agent: str, scales: dict[str, Scale]
) -> tuple[np.ndarray, list[int]]:
    """(seeds, levels) normalized scores of the seeds scored on every level, and those seeds."""
    per_seed: dict[int, dict[str, float]] = {}
    for lv in table.levels:
        for r in table.cell(agent, lv).runs:
            if not math.isnan(r.counted_score):
                per_seed.setdefault(r.seed, {})[lv] = scales[lv](r.counted_score)
    seeds = sorted(s for s, row in per_seed.items() if len(row) == len(table.levels))
    rows = [[per_seed[s][lv] for lv in table.levels] for s in seeds]
    return np.array(rows, dtype=float).reshape(len(seeds), len(table.levels)), seeds


def compute(table: Table, baseline: str | None = DEFAULT_BASELINE) -> Aggregates:
    best = {}
    for lv in table.levels:
        means = [table.cell(a, lv).mean for a in table.agents]
        means = [m for m in means if not math.isnan(m)]
        best[lv] = max(means) if means else math.nan
    scales = level_scales(best)
    out = Aggregates(scales, {}, {})
    for agent in table.agents:
        m, seeds = agent_matrix(table, agent, scales)
        out.matrices[agent], out.seeds[agent] = m, seeds
        if len(seeds) and table.levels:
            out.iqm[agent] = agg.interval(m, "iqm")
            out.mean[agent] = agg.interval(m, "mean")
    if baseline in out.iqm:
        out.baseline = baseline
        for agent in table.agents:
            if agent != baseline and agent in out.iqm:
                out.improvement[agent] = agg.probability_of_improvement(
                    out.matrices[agent], out.matrices[baseline]
                )
    return out


# ---------------------------------------------------------------- text


def fixed(x: float, digits: int) -> str:
    """`x` with `digits` decimals, never "-0.00"."""
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def estimate_text(e: agg.Estimate | None, digits: int = 2) -> str:
    if e is None or math.isnan(e.point):
        return "—"
    text = fixed(e.point, digits)
    return text + (f" [{fixed(e.low, digits)}, {fixed(e.high, digits)}]" if e.has_interval else "")


def seed_notes(a: Aggregates, table: Table) -> list[str]:
    """A sentence per agent whose aggregates leave seeds out (a seed lacking a score on some
    level) or are missing (no seed has a score on every level), rest on fewer than
    IQM_TRIMS_FROM runs (the IQM is their mean), have intervals from few seeds (too narrow), or
    no interval (too few seeds)."""
    notes = []
    for agent in table.agents:
        used = a.seeds.get(agent, [])
        seeds = sorted({r.seed for lv in table.levels for r in table.cell(agent, lv).runs})
        dropped = [s for s in seeds if s not in used]
        if dropped:
            notes.append(
                f"{agent}: the aggregates use {len(used)} of {len(seeds)} seeds; left out "
                f"(no score on some level): seed(s) {', '.join(map(str, dropped))}."
                + ("" if used else " No aggregates.")
            )
        if agent in a.iqm:
            notes += _interval_notes(a, agent)
    return notes


def _interval_notes(a: Aggregates, agent: str) -> list[str]:
    n, seeds = a.matrices[agent].size, len(a.seeds[agent])
    notes = []
    if n < agg.IQM_TRIMS_FROM:
        notes.append(
            f"{agent}: {n} run(s); an IQM of fewer than {agg.IQM_TRIMS_FROM} trims nothing (it "
            "is their mean)."
        )
    if a.iqm[agent].has_interval and seeds < agg.FEW_SEEDS:
        notes.append(
            f"{agent}: intervals from {seeds} seeds per level; a bootstrap that resamples so few "
            "values gives intervals narrower than they should be (read them as a description of "
            "these runs, not as a test)."
        )
    if not a.iqm[agent].has_interval:
        notes.append(
            f"{agent}: {seeds} seed(s) with a score on every level; an interval needs at least "
            f"{agg.MIN_SEEDS}, so none is given (point estimate only)."
        )
    return notes


def scales_lines(a: Aggregates, levels: Sequence[str]) -> list[str]:
    from evaluation.reports.report import FLAG

    rows = [
        [
            f"`{lv}`",
            f"{a.scales[lv].random:g}",
            f"{a.scales[lv].reference:g}",
            a.scales[lv].source + (f" {FLAG}" if a.scales[lv].flagged else ""),
        ]
        for lv in levels
    ]
    lines = [
        "## Normalization",
        "",
        "Each run's score is normalized per level as (score − random) / (reference − "
        "random), with the two columns below: 0 is the `random` column's score (random play "
        "on Atari; a score of 0 for Sonic and for levels without a published reference), 1 "
        "the reference.",
        "",
    ]
    lines += md_table(["level", "random", "reference", "source"], rows)
    if any(a.scales[lv].flagged for lv in levels):
        lines += [
            "",
            f"{FLAG} No published reference for this level: its scale comes from "
            "this report's agents (the best agent's mean score is 1), so its normalized "
            "scores change with the agents compared.",
        ]
    return lines + [""]


def improvement_lines(a: Aggregates) -> list[str]:

    if a.baseline is None:
        return []
    lines = [
        f"### Probability of improvement over {a.baseline}",
        "",
        f"P(X > {a.baseline}): the probability that a run of X on a level drawn at random "
        f"scores higher than a run of {a.baseline} there (ties count half), from the "
        "normalized scores; 0.5 is no difference. [95% stratified-bootstrap CI]",
        "",
    ]
    lines += md_table(
        ["agent", f"P(agent > {a.baseline})"],
        [[agent, estimate_text(e)] for agent, e in a.improvement.items()],
    )
    return lines + [""]


# ---------------------------------------------------------------- figures


def plot_intervals(a: Aggregates, path: Path) -> None:
    """IQM and mean per agent: the point and its 95% interval as a bar."""
    from sonic_common import plots

    agents = list(a.iqm)
    fig, axes = plots.figure(8, 1.2 + 0.45 * max(1, len(agents)), ncols=2, sharey=True)
    for ax, (name, est) in zip(axes, (("IQM", a.iqm), ("mean", a.mean)), strict=True):
        if not agents:
            plots.no_data(ax)
            continue
        for i, agent in enumerate(agents):
            e = est[agent]
            if e.has_interval:
                ax.plot([e.low, e.high], [i, i], lw=6, alpha=0.35, color=f"C{i}")
            ax.plot([e.point], [i], "|", ms=14, mew=2, color=f"C{i}")
        ax.set_yticks(range(len(agents)), agents)
        ax.set_xlabel(f"{name} of normalized scores")
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    fig.suptitle(
        "tick: point estimate; bar: 95% stratified-bootstrap CI over seeds "
        "(none: fewer than 3 seeds)",
        fontsize=8,
        color="dimgray",
    )
    plots.save(fig, path)


def plot_profile(a: Aggregates, path: Path) -> None:
    """Fraction of runs (seed × level) above each normalized score, with its interval."""
    from sonic_common import plots

    fig, ax = plots.figure(6, 4)
    matrices = {k: a.matrices[k] for k in a.iqm}
    taus = profile_taus(matrices)
    profiles = agg.performance_profile(matrices, taus)
    if not profiles:
        plots.no_data(ax)
    for i, (agent, (frac, band)) in enumerate(profiles.items()):
        ax.plot(taus, frac, color=f"C{i}", lw=1.8, label=f"{agent} ({len(a.seeds[agent])} seed(s))")
        if band is not None:
            ax.fill_between(taus, band[0], band[1], color=f"C{i}", alpha=0.2, lw=0)
    if profiles:
        ax.set_xlabel("normalized score τ")
        ax.set_ylabel("fraction of runs with score > τ")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        plots.note(ax, "runs: seed × level; band: 95% stratified-bootstrap CI (none: < 3 seeds)")
    ax.set_title("performance profile", fontsize=10)
    plots.save(fig, path)


def plot_iqm_curves(curves: dict[str, np.ndarray], grid: np.ndarray, path: Path) -> None:
    """IQM of the normalized learning curves over seed × level runs, per agent, with the 95%
    interval band; `curves[agent]` is (seeds, levels, points)."""
    from sonic_common import plots

    fig, ax = plots.figure()
    drawn, missing = 0, []
    for i, (agent, c) in enumerate(curves.items()):
        mid, band = agg.iqm_curve(c) if c.size else (np.full(grid.size, np.nan), None)
        if np.all(np.isnan(mid)):
            missing.append(agent)
            continue
        ax.plot(grid, mid, color=f"C{i}", lw=1.8, label=f"{agent} ({c.shape[0]} seed(s))")
        if band is not None:
            ax.fill_between(grid, band[0], band[1], color=f"C{i}", alpha=0.2, lw=0)
        drawn += 1
    ax.set_title("IQM of normalized episode return over all levels", fontsize=10)
    if not drawn:
        plots.no_data(ax, "no data yet: no finished episode on every level")
    else:
        ax.set_xlabel(plots.STEPS_LABEL)
        ax.set_ylabel("normalized return (IQM over seed × level)")
        plots.count_axis(ax.xaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        plots.note(
            ax,
            "line: IQM over runs (from where every run has finished an episode); "
            "band: 95% stratified-bootstrap CI (none: < 3 seeds)"
            + (
                f"; not drawn (a run without a finished episode): {', '.join(missing)}"
                if missing
                else ""
            ),
        )
    plots.save(fig, path)
