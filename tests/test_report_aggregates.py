"""Normalized scores and rliable aggregates on recorded suites with known answers; the compare
command; a recorded suite's report with its GIFs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report import recorded_run, write_run  # noqa: F401 (a fixture)

from evaluation.reports import stats as agg
from evaluation.reports.aggregates import compute
from evaluation.reports.normalize import atari_references, level_scales, published_scale
from evaluation.reports.report import Table, load_runs, write_report
from roms_setup.levels import Level

ROOT = Path(__file__).resolve().parents[1]
BREAKOUT, BOXING = "Breakout-Atari2600-v0:Start", "Boxing-Atari2600-v0:Start"
REF = {BREAKOUT: (1.7, 30.5), BOXING: (0.1, 12.1)}  # random, human (dqn_zoo's table)


def raw(level: str, normalized: float) -> float:
    lo, hi = REF[level]
    return lo + normalized * (hi - lo)


def atari_suite(out: Path, scores: dict[str, dict[str, list[float]]]) -> Path:
    """A suite whose runs score the given normalized scores: {agent: {level: [per seed]}}."""
    for agent, per_level in scores.items():
        for level, values in per_level.items():
            for seed, v in enumerate(values):
                write_run(out, agent, level, seed, [(raw(level, v), 100, 0)])
    return out


def test_references_are_the_published_table() -> None:
    refs = atari_references()
    assert len(refs) == 57
    assert refs["Breakout"] == REF[BREAKOUT] and refs["Seaquest"] == (68.4, 42054.7)
    scale = published_scale(BOXING)
    assert scale is not None and scale(12.1) == pytest.approx(1.0) and scale(0.1) == 0.0
    sonic = published_scale("SonicTheHedgehog-Genesis-v0:GreenHillZone.Act2")
    assert sonic is not None and sonic(7438.2) == pytest.approx(0.74382) and not sonic.flagged
    assert published_scale("Airstriker-Genesis-v0:Level1") is None
    custom = published_scale("SonicTheHedgehog2CustomKevin-Genesis:EmeraldHillZone.Custom")
    assert custom is not None and custom.source == sonic.source
    # other Sonic games have no contest scenario: their reward is the score, not on that scale
    assert published_scale("SonicTheHedgehog-Sms-v0:GreenHillZone.Act1") is None
    assert published_scale("SonicTheHedgehog3-Genesis-v0:AngelIslandZone.Act1") is None
    fallback = level_scales({"Airstriker-Genesis-v0:Level1": 250.0, "Other-v0:S": -3.0})
    assert fallback["Airstriker-Genesis-v0:Level1"](125.0) == 0.5
    assert fallback["Airstriker-Genesis-v0:Level1"].flagged
    assert fallback["Other-v0:S"](-3.0) == -3.0  # nobody above 0: raw scores, flagged
    assert fallback["Other-v0:S"].flagged


def test_iqm_and_mean_by_hand(tmp_path: Path) -> None:
    # 4 seeds × 2 levels = 8 normalized scores: 0.0 .. 0.7 with an outlier 5.0 (seed 3, Boxing).
    # IQM drops the 2 lowest and 2 highest of the 8: mean(0.2, 0.3, 0.4, 0.5) = 0.35.
    # Mean: (0 + .1 + .2 + .3 + .4 + .5 + .6 + 5.0) / 8 = 0.8875.
    out = atari_suite(
        tmp_path, {"A": {BREAKOUT: [0.0, 0.2, 0.4, 0.6], BOXING: [0.1, 0.3, 0.5, 5.0]}}
    )
    a = compute(Table(load_runs(out)), baseline=None)
    assert a.seeds["A"] == [0, 1, 2, 3]
    assert a.iqm["A"].point == pytest.approx(0.35)
    assert a.mean["A"].point == pytest.approx(0.8875)
    assert a.iqm["A"].low <= 0.35 <= a.iqm["A"].high
    # the outlier moves the mean's interval far more than the IQM's
    assert a.mean["A"].high - a.mean["A"].low > a.iqm["A"].high - a.iqm["A"].low
    text = write_report(out, baseline=None).read_text()
    assert "| A | 0.35 [" in text and "| 0.89 [" in text


def test_interval_narrows_with_more_seeds(tmp_path: Path) -> None:
    """The same spread of scores, seen over 3, 6 and 12 seeds: the interval narrows."""
    widths = []
    for copies in (1, 2, 4):
        per_seed = [0.0, 0.5, 1.0] * copies
        out = atari_suite(
            tmp_path / str(copies), {"A": {BREAKOUT: per_seed, BOXING: [v + 0.2 for v in per_seed]}}
        )
        e = compute(Table(load_runs(out)), baseline=None).iqm["A"]
        assert e.point == pytest.approx(0.6)  # IQM of 0, .2, .5, .7, 1, 1.2 (× copies)
        widths.append(e.high - e.low)
    assert widths[0] > widths[1] > widths[2] > 0, widths


def test_too_few_seeds_give_no_interval(tmp_path: Path) -> None:
    out = atari_suite(tmp_path, {"A": {BREAKOUT: [0.5, 0.7], BOXING: [0.1, 0.3]}})
    a = compute(Table(load_runs(out)), baseline=None)
    assert not a.iqm["A"].has_interval and a.iqm["A"].point == pytest.approx(0.4)
    text = write_report(out, baseline=None).read_text()
    assert "A: 2 seed(s) with a score on every level; an interval needs at least 3" in text
    assert "| A | 0.40 | 0.40 |" in text


@pytest.mark.filterwarnings("ignore:random_state is deprecated")
def test_intervals_match_rliable() -> None:
    """The vectorized stratified bootstrap against rliable's own (arch), on one matrix."""
    from rliable import library as rly
    from rliable import metrics

    m = np.array([[0.1, 0.9, 2.0], [0.4, 0.3, 1.1], [0.8, 0.2, 0.0], [0.5, 1.5, 0.7]])
    ours = agg.interval(m, "iqm", reps=4000)
    _, cis = rly.get_interval_estimates(
        {"x": m},
        lambda s: np.array([metrics.aggregate_iqm(s)]),
        reps=4000,
        random_state=np.random.RandomState(3),
    )
    assert ours.low == pytest.approx(cis["x"][0, 0], abs=0.05)
    assert ours.high == pytest.approx(cis["x"][1, 0], abs=0.05)


def test_probability_of_improvement_by_hand(tmp_path: Path) -> None:
    # Breakout: A's 3 seeds all beat B's 3 → 1.0. Boxing: A 0.1,0.2,0.3 vs B 0.2,0.2,0.2:
    # pairs greater 3 (0.3 > each), ties 3 (0.2 = each) → (3 + 3/2) / 9 = 0.5. Mean: 0.75.
    out = atari_suite(
        tmp_path,
        {
            "A": {BREAKOUT: [0.8, 0.9, 1.0], BOXING: [0.1, 0.2, 0.3]},
            "B": {BREAKOUT: [0.1, 0.2, 0.3], BOXING: [0.2, 0.2, 0.2]},
        },
    )
    a = compute(Table(load_runs(out)), baseline="B")
    p = a.improvement["A"]
    assert p.point == pytest.approx(0.75) and p.low <= 0.75 <= p.high
    assert "B" not in a.improvement
    text = write_report(out, baseline="B").read_text()
    assert "### Probability of improvement over B" in text and "| A | 0.75 [" in text
    for png in ("intervals.png", "profile.png", "curves/overall.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in text


# ---------------------------------------------------------------- compare


def compare(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evaluation", "compare", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_compare_merges_two_suites(tmp_path: Path) -> None:
    base = atari_suite(
        tmp_path / "base", {"ppo2": {BREAKOUT: [0.1, 0.2, 0.3], BOXING: [0.0, 0.1, 0.2]}}
    )
    new = atari_suite(
        tmp_path / "new", {"mine": {BREAKOUT: [0.5, 0.6, 0.7], BOXING: [0.4, 0.5, 0.6]}}
    )
    proc = compare(base, new, "--out", tmp_path / "both")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "both" / "report.md").read_text()
    assert "| ppo2 | 0.15 [" in text and "| mine | 0.55 [" in text
    assert "| mine | 1.00 [" in text  # P(mine > ppo2): every run of mine beats every ppo2 run
    assert str(base) in text and str(new) in text
    rows = (tmp_path / "both" / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 12

    proc = compare(base, base, "--out", tmp_path / "twice")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "in both" in proc.stderr and "rename the agent" in proc.stderr

    for d, budget in ((base, 100_000), (new, 1_000_000)):
        (d / "suite.json").write_text(json.dumps({"budget": budget, "wallclock_s": 43_200.0}))
    proc = compare(base, new, "--out", tmp_path / "budgets")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "different limits" in proc.stderr and "budget 100000" in proc.stderr
    assert not (tmp_path / "budgets").exists()
    # the same budget, other wall clocks: the same scores unless a run ended by its clock
    for d, clock in ((base, 3_600.0), (new, 43_200.0)):
        (d / "suite.json").write_text(json.dumps({"budget": 400, "wallclock_s": clock}))
    assert compare(base, new, "--out", tmp_path / "clocks").returncode == 0
    clocks = (tmp_path / "clocks" / "report.md").read_text()  # the scores as before
    assert "| ppo2 | 0.15 [" in clocks and "| mine | 0.55 [" in clocks
    write_run(new, "mine", BREAKOUT, 3, [(raw(BREAKOUT, 0.5), 100, 0)], status="wallclock")
    proc = compare(base, new, "--out", tmp_path / "clocks2")
    assert proc.returncode == 2 and "wall clock 3600.0 s" in proc.stderr


def test_stopped_runs_are_left_out_of_every_score(tmp_path: Path) -> None:
    """An interrupted run's episodes so far are not its result: left out of the per-level
    means, the IQM, the mean and P(improvement), and listed; a crash is the agent's result and
    counts. The seed it leaves without a score on every level is named."""
    out = atari_suite(
        tmp_path, {"A": {BREAKOUT: [0.5] * 3, BOXING: [0.5] * 3}, "B": {BOXING: [0.5, 0.1, 0.5]}}
    )
    write_run(out, "B", BREAKOUT, 0, [(raw(BREAKOUT, 0.0), 100, 0)], status="interrupted")
    for seed, status in ((3, "running"), (4, "env_error")):
        for level in (BREAKOUT, BOXING):
            write_run(out, "B", level, seed, [(raw(level, 0.0), 100, 0)], status=status)
    write_run(out, "B", BREAKOUT, 1, [(raw(BREAKOUT, 0.5), 100, 0)], status="agent_crashed")
    write_run(out, "B", BREAKOUT, 2, [(raw(BREAKOUT, 0.5), 100, 0)])
    table = Table(load_runs(out))
    assert table.cell("B", BREAKOUT).scores == [pytest.approx(raw(BREAKOUT, 0.5))] * 2
    assert [r.seed for r in table.cell("B", BOXING).counted] == [0, 1, 2]  # curves, GIFs
    a = compute(table, baseline="A")
    assert a.seeds["B"] == [1, 2]
    assert a.mean["B"].point == pytest.approx((0.5 + 0.1 + 0.5 + 0.5) / 4)  # not 0.35 with it
    text = write_report(out, baseline="A").read_text()
    assert "seed 0: interrupted, left out of the scores" in text
    assert "seed 1: agent_crashed" in text and "seed 1: agent_crashed, left out" not in text
    left_out = "B: the aggregates use 2 of 5 seeds; left out (no score on some level): seed(s)"
    assert f"{left_out} 0, 3, 4." in text
    assert "seed 3: running, left out" in text and "seed 4: env_error, left out" in text
    assert "A: intervals from 3 seeds per level; a bootstrap that resamples so few" in text
    assert "B: intervals from" not in text  # 2 seeds: no interval at all


# ---------------------------------------------------------------- GIFs of a recorded suite


def test_recorded_suite_report_shows_its_gifs(recorded_run: Path, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    from PIL import Image

    level = "Airstriker-Genesis-v0:Level1"
    run = tmp_path / "s" / "runs" / "A" / Level.parse(level).slug / "seed0"
    run.parent.mkdir(parents=True)
    shutil.copytree(recorded_run, run)
    # episodes (monitor.csv): 10, 50, and 900 cut off: best = episode 1, median = episode 0
    (run / "results.json").write_text(
        json.dumps(
            {
                "level": level,
                "agent": "A",
                "seed": 0,
                "score": 30.0,
                "episodes": 2,
                "timesteps": 105,
                "wallclock_s": 1.0,
                "status": "budget",
            }
        )
    )
    text = write_report(tmp_path / "s").read_text()
    for kind, ret in (("best", 50), ("median", 10)):
        gif = f"videos/A/{Level.parse(level).slug}/{kind}.gif"
        assert f"![{kind} A]({gif})<br>{ret} (seed 0)" in text
        with Image.open(tmp_path / "s" / gif) as im:
            assert im.format == "GIF" and im.size == (160, 112) and im.n_frames > 1
    index = json.loads((tmp_path / "s" / "videos" / "index.json").read_text())
    assert sorted(v.rsplit("/", 1)[1] for v in index.values()) == ["0", "1"]


def test_few_runs_are_said(tmp_path: Path) -> None:
    """An IQM of fewer than 4 runs trims nothing: the report says it is their mean."""
    out = atari_suite(tmp_path, {"A": {BREAKOUT: [0.5, 0.7, 0.9]}})
    write_run(out, "C", BREAKOUT, 0, [(raw(BREAKOUT, 0.5), 100, 0)], status="interrupted")
    text = write_report(out, baseline=None).read_text()
    assert "A: 3 run(s); an IQM of fewer than 4 trims nothing (it is their mean)." in text
    # an agent left without any seed scored on every level is named too
    dropped = "C: the aggregates use 0 of 1 seeds; left out (no score on some level): seed(s) 0."
    assert f"{dropped} No aggregates." in text


def test_permutation_test_is_exact_and_stratified(monkeypatch: pytest.MonkeyPatch) -> None:
    """One level: scipy's exact one-sided Mann-Whitney p. Two levels, every run of X above:
    (1/20)² (one relabelling in C(6, 3) = 20 per level). Past EXACT_MAX relabellings, random
    ones (fixed seed) agree with the exact value."""
    from scipy import stats

    x = np.array([[3.0, 0.4], [5.0, 0.9], [7.0, 0.2]])
    y = np.array([[1.0, 0.1], [4.0, 0.3], [6.0, 0.5]])
    exact = stats.mannwhitneyu(x[:, 0], y[:, 0], alternative="greater", method="exact")
    assert agg.permutation_p(x[:, :1], y[:, :1]) == pytest.approx(exact.pvalue)
    assert agg.permutation_p(y + 10, y) == pytest.approx((1 / 20) ** 2)
    both = agg.permutation_p(x, y)
    monkeypatch.setattr(agg, "EXACT_MAX", 0)
    assert agg.permutation_p(x, y, reps=20_000) == pytest.approx(both, abs=0.01)
