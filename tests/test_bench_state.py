"""benchmarks/rainbow_learning.py keeps finished runs across machines: what is kept, what is
restored, and when the kept runs are not used (records written here as the suite writes them)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rainbow_learning", ROOT / "benchmarks" / "rainbow_learning.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def suite_json(bench: ModuleType, steps: int = 100_000) -> dict:
    args = bench.parse_args(["--steps", str(steps)])
    return {
        "agents": list(bench.AGENTS),
        "levels": list(bench.GAMES),
        "seeds": [0, 1, 2],
        "budget": steps,
        "agent_args": {
            "rainbow": args.rainbow_args.split(),
            "ppo2": args.ppo2_args.split(),
        },
    }


def make_run(
    out: Path, agent: str, seed: int, status: str, files: dict[str, str] | None = None
) -> Path:
    run = out / "runs" / agent / "Boxing-Atari2600-v0_Start" / f"seed{seed}"
    (run / "agent").mkdir(parents=True, exist_ok=True)
    (run / "results.json").write_text(json.dumps({"status": status, "score": 1.0}))
    (run / "monitor.csv").write_text(f"# {agent} {seed}\n")
    for name, text in (files or {}).items():
        (run / name).write_text(text)
    return run


def test_only_runs_that_ended_well_are_kept_with_their_small_records(
    bench: ModuleType, tmp_path: Path
) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    out.mkdir()
    (out / "suite.json").write_text(json.dumps(suite_json(bench)))
    make_run(out, "rainbow", 0, "budget", {"agent/learning.csv": "s\n", "agent/checkpoint.pt": "w"})
    make_run(out, "rainbow", 1, "interrupted", {"agent/resume.json": "{}"})
    make_run(out, "ppo2", 0, "oom")
    make_run(out, "random", 0, "wallclock")
    assert bench.copy_finished(out, state) == 2
    kept = {str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()}
    box = "Boxing-Atari2600-v0_Start"
    assert kept == {
        "suite.json",
        f"runs/rainbow/{box}/seed0/results.json",
        f"runs/rainbow/{box}/seed0/monitor.csv",
        f"runs/rainbow/{box}/seed0/agent/learning.csv",
        f"runs/random/{box}/seed0/results.json",
        f"runs/random/{box}/seed0/monitor.csv",
    }  # no checkpoint, no failed or stopped run
    assert bench.copy_finished(out, state) == 0  # already kept


def test_a_fresh_machine_starts_from_the_kept_runs_replacing_stopped_attempts(
    bench: ModuleType, tmp_path: Path
) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    state.mkdir()
    (state / "suite.json").write_text(json.dumps(suite_json(bench)))
    make_run(state, "rainbow", 0, "budget")
    # here the same run was stopped, its resume point left behind
    stale = make_run(out, "rainbow", 0, "interrupted", {"agent/resume-1.npz": "replay"})
    assert bench.copy_finished(state, out) == 1
    assert json.loads((stale / "results.json").read_text())["status"] == "budget"
    assert not (stale / "agent").exists()
    assert (out / "suite.json").read_text() == (state / "suite.json").read_text()


def test_kept_runs_are_used_only_with_their_settings(bench: ModuleType, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "suite.json").write_text(json.dumps(suite_json(bench)))
    full = bench.parse_args(["--out", str(tmp_path / "a"), "--state", str(state)])
    assert bench.kept_state(full) == state
    small = bench.parse_args(["--steps", "2000", "--out", str(tmp_path / "b")])
    assert bench.kept_state(small) is None  # not the default settings: no default state
    small_here = bench.parse_args(
        ["--steps", "2000", "--out", str(tmp_path / "c"), "--state", str(state)]
    )
    assert bench.kept_state(small_here) is None  # the kept runs are 100k-step runs
    other_out = tmp_path / "d"
    other_out.mkdir()
    (other_out / "suite.json").write_text(json.dumps(suite_json(bench, steps=5000)))
    into_other = bench.parse_args(["--out", str(other_out), "--state", str(state)])
    assert bench.kept_state(into_other) is None  # OUT is a suite of other settings
    (state / "suite.json").write_text("[1, 2]")
    assert bench.kept_state(full) is None  # not a suite.json at all


def test_the_end_of_learning_counts_the_episodes_ending_in_the_last_steps(
    bench: ModuleType,
) -> None:
    from evaluation.contest.records import EpisodeRow
    from evaluation.reports.report import Run

    # each episode costs its steps and its reset: they end at 40, 80, 100, 120 of 130 steps
    rows = [EpisodeRow(1.0, 39, 1.0), EpisodeRow(2.0, 39, 2.0), EpisodeRow(4.0, 19, 3.0)]
    rows += [EpisodeRow(8.0, 19, 4.0), EpisodeRow(16.0, 9, 5.0, cut=True)]
    run = Run("rainbow", "Boxing-Atari2600-v0:Start", 0, "budget", 130, 5.0, None, rows, None)
    assert bench.final_score(run, window=50) == 6.0  # ended after step 80: 4 and 8
    assert bench.final_score(run, window=51) == pytest.approx(14 / 3)  # 80 is in too
    assert run.score == 3.75  # the contest's: every finished episode
    assert np.isnan(bench.final_score(run, window=5))  # only the cut-off one ended there


def test_only_runs_that_ended_well_are_scored(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running or interrupted run's episodes so far are not its score: the matrix leaves it
    out (so the report waits for it), and the partial table lists only the ended runs."""
    from evaluation.contest.records import EpisodeRow
    from evaluation.reports.report import Run, Table

    level = bench.GAMES[0]
    rows = [EpisodeRow(-16.0, 99, 1.0)]
    runs = [
        Run("rainbow", level, seed, status, 100, 5.0, None, rows, None)
        for seed, status in ((0, "budget"), (1, "running"), (2, "interrupted"))
    ]
    table = Table(runs, agents=list(bench.AGENTS), levels=list(bench.GAMES))
    matrix = bench.score_matrix(table, "rainbow", 3)
    assert not np.isnan(matrix[0, 0]) and np.isnan(matrix[1:, 0]).all()
    bench.print_runs(table, bench.parse_args(["--seeds", "3"]), partial=True)
    printed = capsys.readouterr().out
    assert "partial: 1 of 27 runs" in printed and printed.count("| rainbow |") == 1


def test_learning_is_tested_on_the_games_where_ppo2_beats_random(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """The BENCH line is a permutation test's p-value on the games where ppo2's mean beats
    random's, not an IQM difference: one lucky seed, or a game ppo2 does not win, does not make
    it pass, and neither does a bootstrap interval that 3 seeds make too narrow."""
    args = bench.parse_args(["--seeds", "3"])
    args.reps = 2_000
    random = np.zeros((3, 3))
    ppo2 = np.array([[0.0, 0.3, 0.2]] * 3)  # ppo2 beats random on games 2 and 3
    rainbow = np.array([[5.0, 0.4, 0.5]] * 3)  # game 1 (not tested) would lift any IQM
    result = bench.print_learns({"rainbow": rainbow, "ppo2": ppo2, "random": random}, args, "x")
    assert result is not None
    e, p = result
    assert e.point == 1.0 and e.low == 1.0
    assert p == pytest.approx((1 / 20) ** 2)  # every run above: 1 relabelling in 20 per game
    names = ", ".join(bench.game_name(g) for g in bench.GAMES[1:])
    assert f"games where ppo2 beats random ({names})" in capsys.readouterr().out

    rainbow = np.array([[5.0, 0.9, 0.0], [5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])  # one lucky run
    result = bench.print_learns({"rainbow": rainbow, "ppo2": ppo2, "random": random}, args, "x")
    assert result is not None and result[0].point == pytest.approx(0.5 + 1 / 3 / 2 / 2)
    assert result[1] > 0.05

    # one game, Rainbow ahead in 8 of 9 pairs: the interval's lower end is above 0.5, yet 3
    # seeds cannot show it beyond chance (the exact one-sided Mann-Whitney p is 0.10)
    one = np.array([[1.0, 0.0, 0.0]] * 3)
    rainbow = np.array([[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]])
    random = np.array([[0.0, 0, 0], [0.0, 0, 0], [1.5, 0, 0]])
    result = bench.print_learns({"rainbow": rainbow, "ppo2": one, "random": random}, args, "x")
    assert result is not None and result[0].low > 0.5 and result[1] == pytest.approx(0.1)

    same = {"rainbow": rainbow, "ppo2": random, "random": random}
    assert bench.print_learns(same, args, "x") is None  # ppo2 beats random nowhere


def test_a_finished_suite_reports_both_scores_and_the_bench_line(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every run done: both scores' tables and IQMs, the learning test, and the BENCH line of
    the permutation test's p on the contest scores."""
    from evaluation.contest.records import EpisodeRow
    from evaluation.reports.report import Run, Table

    level_score = {"rainbow": 30.0, "ppo2": 20.0, "random": 0.0}
    runs = [
        Run(a, lv, seed, "budget", 1_000, 5.0, None, [EpisodeRow(v + seed, 99, 1.0)] * 10, None)
        for a, v in level_score.items()
        for lv in bench.GAMES
        for seed in range(3)
    ]
    table = Table(runs, agents=list(bench.AGENTS), levels=list(bench.GAMES))
    args = bench.parse_args(["--seeds", "3"])
    args.reps = 2_000
    assert bench.report(table, args) == 0
    out = capsys.readouterr().out
    assert out.count("normalized IQM") == 2 * len(bench.AGENTS)  # end of learning and contest
    assert out.count("P(rainbow > random)") == 2
    # all 3 games: Rainbow above every random run, 1 relabelling in 20 per game
    assert out.splitlines()[-1] == "BENCH rainbow_learning p_value=0.000125 target=<=0.05"
