"""The report of a suite: `report.md`, `summary.csv` and learning curves from the runs' records.

Reads `DIR/runs/<agent>/<level slug>/seed<k>/{results.json,monitor.csv}` (and `DIR/suite.json`
when there is one, for the order of agents and levels and the expected seeds) and writes, each
file atomically:

- `DIR/summary.csv`: one row per run;
- `DIR/curves/<level slug>.png`: episode return against cumulative timesteps, per agent the mean
  over seeds and the min-max spread; `DIR/curves/overall.png`: the IQM of the normalized curves
  with its bootstrap band (`evaluation.reports.aggregates`);
- `DIR/intervals.png`, `DIR/profile.png`: the normalized IQM and mean with their intervals, the
  performance profile;
- `DIR/videos/`: GIFs of each agent's best and median episode per level, for recorded runs
  (`evaluation.reports.episode_gifs`);
- `DIR/report.md`: the overall table (normalized IQM and mean with 95% intervals, raw scores),
  the probability of improvement over a baseline, the normalization used, the per-level tables
  (raw), the paper's reference scores when the suite ran the `sonic-validation` set, and per
  level each agent's row with its GIFs and the level's curves.

Scoring follows the contest: a run's score is the mean return of its finished episodes (the
final episode cut off by the budget, `cut=1` in monitor.csv, does not count; `records.score`,
the runner's own rule, falls back to the cut-off episode's return when none finished); an
agent's score is the mean over levels of the per-level mean over seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from evaluation.contest import records
from evaluation.contest.records import EpisodeRow as Episode
from evaluation.reports import stats as agg
from evaluation.reports.aggregates import (
    DEFAULT_BASELINE,
    Aggregates,
    compute,
    estimate_text,
    fixed,
    improvement_lines,
    scales_lines,
    seed_notes,
)
from evaluation.reports.episode_gifs import Pick
from evaluation.reports.reference_scores import REFERENCE_LEVEL_SET, SONIC_VALIDATION, SOURCE
from evaluation.suites.seeds import parse_seeds, seeds_text
from roms_setup.levels import Level, load_level_set
from sonic_common.errors import UserError
from sonic_common.files import write_atomic
from sonic_common.markdown import md_table

SUMMARY_FIELDS = (
    "agent",
    "level",
    "seed",
    "score",
    "episodes",
    "timesteps",
    "wallclock_s",
    "status",
    "error",
)
CURVE_POINTS = 200
SMOOTH_EPISODES = 10  # curves show the mean return of the last (up to) 10 finished episodes
FLAG = "†"
# runs whose score is not the agent's result: stopped to be played again, or the environment's end
NOT_COUNTED = records.STOPPED | {"env_error"}


# ---------------------------------------------------------------- reading runs


@dataclass
class Run:
    agent: str
    level: str
    seed: int
    status: str
    timesteps: int
    wallclock_s: float
    error: str | None
    episodes: list[Episode]  # monitor.csv's rows, the cut-off one included
    recorded_score: float | None  # the score results.json states
    path: Path | None = None
    resumed: list[dict] = field(default_factory=list)  # continued from resume points (results.json)

    @property
    def finished(self) -> list[Episode]:
        return [e for e in self.episodes if not e.cut]

    @property
    def score(self) -> float:
        """The runner's rule (`records.score`): the mean return of the finished episodes, else
        the cut-off episode's return; NaN when not a step was played."""
        value = records.score(self.episodes)
        return math.nan if value is None else float(value)

    @property
    def by_budget(self) -> bool:
        return self.status == "budget"

    @property
    def counted_score(self) -> float:
        """Its score where it counts in the report's scores: the run ended, by a limit or by
        the agent's own failure. NaN for a run stopped to be played again (interrupted,
        running: its episodes so far are not its result) or ended by the environment."""
        return math.nan if self.status in NOT_COUNTED else self.score


def read_run(run_dir: Path) -> Run | None:
    """The run recorded in `run_dir`, or None when it has no results.json yet."""
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        return None
    res = json.loads(results_path.read_text())
    monitor = run_dir / "monitor.csv"
    episodes = records.read_monitor(monitor)[1] if monitor.is_file() else []
    score = res.get("score")
    return Run(
        agent=str(res["agent"]),
        level=str(res["level"]),
        seed=int(res["seed"]),
        status=str(res.get("status", "unknown")),
        timesteps=int(res.get("timesteps") or 0),
        wallclock_s=float(res.get("wallclock_s") or 0.0),
        error=res.get("error") or None,
        episodes=episodes,
        recorded_score=None if score is None else float(score),
        path=run_dir,
        resumed=[r for r in res.get("resumed") or [] if isinstance(r, dict)],
    )


def load_runs(out_dir: Path) -> list[Run]:
    runs = []
    for results in sorted(out_dir.glob("runs/*/*/seed*/results.json")):
        run = read_run(results.parent)
        if run is not None:
            runs.append(run)
    return runs


def read_suite_json(out_dir: Path) -> dict:
    path = out_dir / "suite.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not a suite file ({e}): name a suite's directory") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a suite file (not a JSON object): name a suite's directory")
    return data


# ---------------------------------------------------------------- aggregates


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1); NaN for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


@dataclass
class Cell:
    """One agent on one level: its runs over seeds."""

    runs: list[Run] = field(default_factory=list)

    @property
    def counted(self) -> list[Run]:
        """The runs whose results count (`Run.counted_score`): scores, curves, GIFs."""
        return [r for r in self.runs if r.status not in NOT_COUNTED]

    @property
    def scores(self) -> list[float]:
        return [r.counted_score for r in self.runs if not math.isnan(r.counted_score)]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if self.scores else math.nan

    @property
    def std(self) -> float:
        return sample_std(self.scores)

    @property
    def flagged(self) -> list[Run]:
        return [r for r in self.runs if not r.by_budget or not r.finished]


@dataclass
class Overall:
    agent: str
    score: float  # mean over levels of the per-level mean; NaN unless every level has a score
    std: float  # sample std over seeds of the per-seed mean over levels
    levels_scored: int
    levels: int
    seeds_complete: int  # seeds with a score on every level
    episodes: int
    timesteps: int
    runs: int
    runs_not_by_budget: int


class Table:
    """Runs indexed by agent and level, in the suite's order."""

    def __init__(
        self,
        runs: Iterable[Run],
        agents: Sequence[str] | None = None,
        levels: Sequence[str] | None = None,
    ) -> None:
        self.runs = list(runs)
        self.agents = list(agents or dict.fromkeys(r.agent for r in self.runs))
        self.levels = list(levels or dict.fromkeys(r.level for r in self.runs))
        self.cells: dict[tuple[str, str], Cell] = {
            (a, lv): Cell() for a in self.agents for lv in self.levels
        }
        for run in sorted(self.runs, key=lambda r: r.seed):
            self.cells.setdefault((run.agent, run.level), Cell()).runs.append(run)

    def cell(self, agent: str, level: str) -> Cell:
        return self.cells[(agent, level)]

    def overall(self, agent: str) -> Overall:
        cells = [self.cell(agent, lv) for lv in self.levels]
        means = [c.mean for c in cells]
        scored = [m for m in means if not math.isnan(m)]
        score = float(np.mean(means)) if scored and len(scored) == len(means) else math.nan
        per_seed: dict[int, dict[str, float]] = {}
        for lv, c in zip(self.levels, cells, strict=True):
            for r in c.runs:
                if not math.isnan(r.counted_score):
                    per_seed.setdefault(r.seed, {})[lv] = r.counted_score
        seed_means = [
            float(np.mean(list(s.values())))
            for s in per_seed.values()
            if len(s) == len(self.levels)
        ]
        runs = [r for c in cells for r in c.runs]
        return Overall(
            agent=agent,
            score=score,
            std=sample_std(seed_means),
            levels_scored=len(scored),
            levels=len(self.levels),
            seeds_complete=len(seed_means),
            episodes=sum(len(r.finished) for r in runs),
            timesteps=sum(r.timesteps for r in runs),
            runs=len(runs),
            runs_not_by_budget=sum(not r.by_budget for r in runs),
        )


# ---------------------------------------------------------------- summary.csv


def _num(x: float, digits: int = 3) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def summary_csv(runs: Sequence[Run]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_FIELDS)
    for r in sorted(runs, key=lambda r: (r.agent, r.level, r.seed)):
        w.writerow(
            [
                r.agent,
                r.level,
                r.seed,
                _num(r.score),
                len(r.finished),
                r.timesteps,
                _num(r.wallclock_s, 1),
                r.status,
                (r.error or "").replace("\n", " "),
            ]
        )
    return buf.getvalue()


# ---------------------------------------------------------------- learning curves


def run_curve(run: Run, grid: np.ndarray, smooth: int = SMOOTH_EPISODES) -> np.ndarray:
    """The run's smoothed episode return at each grid timestep; NaN where it has no data.

    x is the cumulative timestep count at the end of each finished episode; y the mean return
    of the last `smooth` finished episodes. Between episodes the curve is linear; after the
    last finished episode it holds its value up to the run's last timestep.
    """
    xs = np.cumsum([e.l for e in run.episodes])
    keep = [i for i, e in enumerate(run.episodes) if not e.cut]
    out = np.full(grid.shape, np.nan)
    if not keep:
        return out
    x = xs[keep].astype(float)
    r = np.array([run.episodes[i].r for i in keep], dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(r)])
    idx = np.arange(len(r))
    lo = np.maximum(0, idx + 1 - smooth)
    y = (csum[idx + 1] - csum[lo]) / (idx + 1 - lo)
    end = max(float(run.timesteps), float(x[-1]))
    inside = (grid >= x[0]) & (grid <= end)
    out[inside] = np.interp(grid[inside], x, y)
    return out


def _plot(
    curves: dict[str, np.ndarray], grid: np.ndarray, title: str, ylabel: str, path: Path
) -> None:
    """One line per agent (mean over seeds) with the min-max spread over seeds shaded."""
    from sonic_common import plots

    fig, ax = plots.figure()
    drawn, banded = 0, False
    for agent, seeds in curves.items():
        if seeds.size == 0 or np.all(np.isnan(seeds)):
            continue
        seeds = seeds[~np.all(np.isnan(seeds), axis=1)]  # seeds with a finished episode
        n = len(seeds)
        # where every seed has data: a seed's late first episode must not make the mean jump
        mean, lo, hi = seeds.mean(axis=0), seeds.min(axis=0), seeds.max(axis=0)
        (line,) = ax.plot(grid, mean, label=f"{agent} ({n} seed{'s' * (n != 1)})", lw=1.8)
        if n > 1:
            ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
            banded = True
        drawn += 1
    ax.set_title(title, fontsize=10)
    if not drawn:
        plots.no_data(ax, "no data yet: no finished episode")
    else:
        ax.set_xlabel(plots.STEPS_LABEL)
        ax.set_ylabel(ylabel)
        plots.count_axis(ax.xaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        plots.note(
            ax,
            "line: mean over seeds"
            + ("; band: min–max over seeds" if banded else "; one seed: no band"),
        )
    plots.save(fig, path)


def curve_grid(runs: Sequence[Run]) -> np.ndarray:
    top = max([r.timesteps for r in runs] + [int(sum(e.l for e in r.episodes)) for r in runs] + [1])
    return np.linspace(0, top, CURVE_POINTS)


def write_curves(table: Table, curves_dir: Path, aggregates: Aggregates) -> dict[str, Path]:
    """Per-level PNGs (raw returns) and overall.png (IQM of normalized returns over levels);
    returns {level id or 'overall': path}."""
    from evaluation.reports.aggregates import plot_iqm_curves

    grid = curve_grid(table.runs)
    ylabel = f"episode return (mean of last {SMOOTH_EPISODES} episodes)"
    written: dict[str, Path] = {}
    per_level: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    for lv in table.levels:
        curves: dict[str, np.ndarray] = {}
        for agent in table.agents:
            by_seed = {r.seed: run_curve(r, grid) for r in table.cell(agent, lv).counted}
            per_level.setdefault(agent, {})[lv] = by_seed
            curves[agent] = np.array(list(by_seed.values())).reshape(-1, grid.size)
        path = curves_dir / f"{Level.parse(lv).slug}.png"
        _plot(curves, grid, lv, ylabel, path)
        written[lv] = path
    normalized: dict[str, np.ndarray] = {}
    for agent in table.agents:
        seeds = aggregates.seeds.get(agent, [])
        normalized[agent] = np.array(
            [[aggregates.scales[lv](per_level[agent][lv][s]) for lv in table.levels] for s in seeds]
        ).reshape(len(seeds), len(table.levels), grid.size)
    path = curves_dir / "overall.png"
    plot_iqm_curves(normalized, grid, path)
    written["overall"] = path
    return written


# ---------------------------------------------------------------- report.md


def _pm(mean: float, std: float) -> str:
    """`mean ± std`: one decimal, two for small numbers (Atari returns); no ± for one seed."""
    if math.isnan(mean):
        return "—"
    d = 1 if abs(mean) >= 10 or (not math.isnan(std) and std >= 10) else 2
    return f"{mean:.{d}f}" + ("" if math.isnan(std) else f" ± {std:.{d}f}")


def _is_validation_set(levels: Sequence[str], suite: dict) -> bool:
    if suite.get("levels_spec") == REFERENCE_LEVEL_SET:
        return True
    try:
        return sorted(levels) == sorted(lv.id for lv in load_level_set(REFERENCE_LEVEL_SET))
    except Exception:
        return False


@dataclass
class Parts:
    """What a report shows besides the table: figures and GIFs (paths relative to its dir)."""

    curves: dict[str, Path]
    aggregates: Aggregates
    gifs: dict[tuple[str, str], list[tuple[Pick, Path]]] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)  # intervals, profile


def _header(table: Table, suite: dict, out_dir: Path) -> list[str]:
    seeds = parse_seeds(suite["seeds"]) if suite.get("seeds") else None
    lines = ["# Evaluation report", ""]
    lines.append(
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from "
        f"{len(table.runs)} run(s) in `{out_dir}`."
    )
    if suite.get("sources"):
        lines.append("Compared suites: " + ", ".join(f"`{s}`" for s in suite["sources"]) + ".")
    elif suite:
        lines.append(
            f"Suite: agents {', '.join(table.agents)}; levels `{suite.get('levels_spec')}` "
            f"({len(table.levels)}); seeds {seeds_text(seeds) if seeds else '?'}; budget "
            f"{suite.get('budget')} timesteps; wall clock {suite.get('wallclock_s')} s; "
            f"runtime {suite.get('runtime')}."
        )
    lines += [
        "",
        "A run's score is the mean return of its finished episodes: the episode cut off "
        "by the budget does not count (a run without any finished episode is scored by "
        "its cut-off episode's return, and flagged). Agents are compared on normalized "
        "scores (see Normalization): the interquartile mean (IQM, the mean of the middle "
        "50% of all seed × level scores) and the mean, each with a 95% stratified-bootstrap "
        f"confidence interval over seeds (rliable, Agarwal et al. 2021; {agg.REPS:,} "
        "replications).",
        "",
    ]
    return lines + _resumed_note(table)


def _resumed_note(table: Table) -> list[str]:
    """Which runs were continued from a resume point after a stop, and what each discarded
    (the point is the agent's choice: an earlier one discards more)."""
    runs = [r for r in table.runs if r.resumed]
    if not runs:
        return []

    def discarded(run: Run) -> int:
        return sum(int(x.get("discarded_timesteps") or 0) for x in run.resumed)

    names = ", ".join(
        f"{r.agent} on {r.level} seed {r.seed} ({len(r.resumed)}×, {discarded(r):,} "
        "timesteps discarded)"
        for r in runs
    )
    return [
        f"{len(runs)} run(s) were stopped and continued from their agent's resume point: "
        f"{names}. The {sum(map(discarded, runs)):,} timesteps played after those points were "
        "discarded (not counted against the budget); the agents may have learned from them.",
        "",
    ]


def _overall(table: Table, suite: dict, parts: Parts, out_dir: Path) -> list[str]:
    a = parts.aggregates
    lines = ["## Overall", ""]
    ov = [table.overall(x) for x in table.agents]
    lines += md_table(
        [
            "agent",
            "IQM [95% CI]",
            "mean [95% CI]",
            "raw mean over levels ± std",
            "seeds on all levels",
            "episodes",
            "timesteps",
            "runs",
            "not ended by budget",
        ],
        [
            [
                o.agent,
                estimate_text(a.iqm.get(o.agent)),
                estimate_text(a.mean.get(o.agent)),
                _pm(o.score, o.std),
                o.seeds_complete,
                o.episodes,
                o.timesteps,
                o.runs,
                o.runs_not_by_budget,
            ]
            for o in ov
        ],
    )
    lines += [
        "",
        "IQM and mean: of the normalized scores. Raw: the mean over levels of the "
        "per-level mean over seeds, in game units; ± is the sample standard deviation over "
        "seeds of the per-seed mean over levels (none for one seed).",
    ]
    lines += [f"- {t}" for t in seed_notes(a, table)]
    for key, alt in (
        ("intervals", "IQM and mean with intervals"),
        ("profile", "performance profile"),
    ):
        if key in parts.figures:
            lines += ["", f"![{alt}]({parts.figures[key].as_posix()})"]
    lines.append("")
    lines += improvement_lines(a)
    if _is_validation_set(table.levels, suite):
        lines += _reference_scores(ov)
    if "overall" in parts.curves:
        lines += _overall_curves(parts.curves["overall"].relative_to(out_dir).as_posix())
    return lines


def _reference_scores(ov: list[Overall]) -> list[str]:
    """Our raw scores next to the published ones on the contest's validation levels."""
    lines = [f"### Reference scores ({SOURCE})", ""]
    rows = [[o.agent + " (ours)", _pm(o.score, o.std)] for o in ov]
    rows += [[ref.agent, ref.text()] for ref in SONIC_VALIDATION]
    lines += md_table(["agent", "score"], rows)
    lines += ["", "Ours use this suite's budget; the paper's use 1M timesteps per level.", ""]
    return lines


def _overall_curves(rel: str) -> list[str]:
    """The IQM learning-curve figure (`rel`: its path relative to the report)."""
    return [
        "### Learning curves",
        "",
        "IQM over seed × level runs of the normalized "
        f"episode return (mean of the last {SMOOTH_EPISODES} finished episodes) against "
        "cumulative timesteps; band: 95% stratified-bootstrap CI.",
        "",
        f"![IQM learning curves]({rel})",
        "",
    ]


def _per_level_matrix(table: Table, seeds: list[int] | None) -> list[str]:
    lines = [
        "## Per level (raw scores)",
        "",
        f"Cells: mean ± sample standard deviation of the score over seeds, in game units "
        f"(number of seeds with a score). {FLAG}: a run that did not end by using its "
        "budget, or has no finished episode (listed below). A run stopped to be played again "
        "(interrupted, running) or ended by the environment (env_error) is left out of every "
        "score; one the agent ended (a crash, out of memory, ...) counts. —: no score.",
        "",
    ]
    rows = []
    for lv in table.levels:
        row = [f"`{lv}`"]
        for x in table.agents:
            c = table.cell(x, lv)
            row.append(
                f"{_pm(c.mean, c.std)} ({len(c.scores)})" + (f" {FLAG}" if c.flagged else "")
            )
        rows.append(row)
    lines += md_table(["level", *table.agents], rows)
    flagged = [r for c in table.cells.values() for r in c.flagged]
    missing = _missing_runs(table, seeds)
    if flagged or missing:
        lines += ["", "### Runs to look at", ""]
        for r in sorted(flagged, key=lambda r: (r.agent, r.level, r.seed)):
            left_out = ["left out of the scores"] if r.status in NOT_COUNTED else []
            why = ", ".join(([] if r.by_budget else [r.status]) + left_out + _no_episode_note(r))
            err = f": {r.error}" if r.error else ""
            lines.append(f"- {r.agent} · `{r.level}` · seed {r.seed}: {why}{err}")
        for agent, lv, seed in missing:
            lines.append(f"- {agent} · `{lv}` · seed {seed}: not run yet")
    return lines + [""]


def _level_sections(table: Table, parts: Parts, out_dir: Path) -> list[str]:
    """Per level: each agent's row (raw, normalized, its best and median episodes as GIFs)
    and the level's learning curves."""
    lines = [
        "## Levels",
        "",
        "Per level and agent: the raw score (mean ± sample std over seeds, number of seeds), "
        "the normalized mean, and, for recorded suites, the best and the median finished "
        "episode over all seeds (GIF of its start, downscaled, 2× speed; caption: return and "
        "seed). Curves: line the mean over seeds, band the min–max over seeds.",
        "",
    ]
    for lv in table.levels:
        lines += [f"### `{lv}`", ""]
        scale = parts.aggregates.scales.get(lv)
        has_gifs = any((x, lv) in parts.gifs for x in table.agents)
        header = ["agent", "raw score", "normalized"] + (
            ["best episode", "median episode"] if has_gifs else []
        )
        rows = []
        for x in table.agents:
            c = table.cell(x, lv)
            norm = "—" if scale is None or math.isnan(c.mean) else fixed(scale(c.mean), 3)
            row = [x, f"{_pm(c.mean, c.std)} ({len(c.scores)})", norm]
            if has_gifs:
                picks = {p.kind: (p, rel) for p, rel in parts.gifs.get((x, lv), [])}
                row += [
                    f"![{k} {x}]({picks[k][1].as_posix()})<br>{picks[k][0].ret:g} "
                    f"(seed {picks[k][0].seed})"
                    if k in picks
                    else "—"
                    for k in ("best", "median")
                ]
            rows.append(row)
        lines += md_table(header, rows)
        if lv in parts.curves:
            rel = parts.curves[lv].relative_to(out_dir).as_posix()
            lines += ["", f"![{lv}]({rel})"]
        lines.append("")
    return lines


def render_markdown(table: Table, suite: dict, parts: Parts, out_dir: Path) -> str:
    seeds = parse_seeds(suite["seeds"]) if suite.get("seeds") else None
    lines = _header(table, suite, out_dir)
    lines += _overall(table, suite, parts, out_dir)
    lines += scales_lines(parts.aggregates, table.levels)
    lines += _per_level_matrix(table, seeds)
    lines += _level_sections(table, parts, out_dir)
    return "\n".join(lines).rstrip() + "\n"


def _no_episode_note(run: Run) -> list[str]:
    if run.finished:
        return []
    if run.episodes:
        return ["no finished episode (scored by the cut-off episode's return)"]
    return ["not a single step played (no score)"]


def _missing_runs(table: Table, seeds: list[int] | None) -> list[tuple[str, str, int]]:
    if not seeds:
        return []
    have = {(r.agent, r.level, r.seed) for r in table.runs}
    return [
        (a, lv, s)
        for a in table.agents
        for lv in table.levels
        for s in seeds
        if (a, lv, s) not in have
    ]


# ---------------------------------------------------------------- entry point


def gif_cells(table: Table) -> dict[tuple[str, str, str], list[tuple[Path, int, list[Episode]]]]:
    return {
        (a, lv, Level.parse(lv).slug): [
            (r.path, r.seed, r.episodes) for r in table.cell(a, lv).counted if r.path
        ]
        for a in table.agents
        for lv in table.levels
    }


def write_table_report(
    table: Table, suite: dict, out_dir: Path, baseline: str | None = DEFAULT_BASELINE
) -> Path:
    """summary.csv, the figures, the GIFs of recorded runs and report.md for `table`'s runs."""
    from evaluation.reports.aggregates import plot_intervals, plot_profile
    from evaluation.reports.episode_gifs import episode_gifs

    write_atomic(out_dir / "summary.csv", summary_csv(table.runs))
    aggregates = compute(table, baseline)
    parts = Parts(
        write_curves(table, out_dir / "curves", aggregates),
        aggregates,
        episode_gifs(out_dir, gif_cells(table)),
    )
    for key, plot in (("intervals", plot_intervals), ("profile", plot_profile)):
        rel = Path(f"{key}.png")
        plot(aggregates, out_dir / rel)
        parts.figures[key] = rel
    report = out_dir / "report.md"
    write_atomic(report, render_markdown(table, suite, parts, out_dir))
    return report


def write_report(out_dir: Path, baseline: str | None = DEFAULT_BASELINE) -> Path:
    """Write summary.csv, curves/*.png, the aggregate figures and report.md for the suite in
    `out_dir` (and the episodes' GIFs when its runs were recorded)."""
    out_dir = Path(out_dir)
    suite = read_suite_json(out_dir)
    table = Table(load_runs(out_dir), suite.get("agents"), suite.get("levels"))
    return write_table_report(table, suite, out_dir, baseline)
