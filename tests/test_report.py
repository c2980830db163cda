"""The report's numbers against values computed by hand, on results directories written here."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.reports.report import Episode, Run, Table, load_runs, run_curve, write_report
from roms_setup.levels import Level, load_level_set

ROOT = Path(__file__).resolve().parents[1]
L1, L2 = "Game-v0:Stage1", "Game-v0:Stage2"


def write_run(
    out: Path,
    agent: str,
    level: str,
    seed: int,
    episodes: list[tuple[float, int, int]],
    status: str = "budget",
    error: str | None = None,
) -> Path:
    """A run directory as the runner leaves it; episodes are (return, length, cut)."""
    d = out / "runs" / agent / Level.parse(level).slug / f"seed{seed}"
    d.mkdir(parents=True)
    lines = ["# " + json.dumps({"level": level}), "r,l,t,cut"]
    lines += [f"{r},{n},{i * 1.5:.1f},{cut}" for i, (r, n, cut) in enumerate(episodes)]
    (d / "monitor.csv").write_text("\n".join(lines) + "\n")
    finished = [r for r, _, cut in episodes if not cut]
    results = {
        "level": level,
        "agent": agent,
        "seed": seed,
        "score": sum(finished) / len(finished) if finished else 12345.0,  # not read back
        "episodes": len(finished),
        "timesteps": sum(n for _, n, _ in episodes),
        "wallclock_s": 12.5,
        "status": status,
        "budget": 400,
        "runtime": "local",
        "error": error,
    }
    (d / "results.json").write_text(json.dumps(results))
    return d


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    out = tmp_path / "suite"
    # Agent A. The cut-off episodes (cut=1) have huge returns: counting them would show.
    write_run(out, "A", L1, 0, [(10, 100, 0), (20, 100, 0), (1000, 50, 1)])  # 15
    write_run(out, "A", L1, 1, [(30, 300, 0), (5000, 100, 1)])  # 30
    write_run(out, "A", L2, 0, [(100, 100, 0), (200, 100, 0), (300, 100, 0)])  # 200
    write_run(out, "A", L2, 1, [(11, 400, 0)])  # 11
    # Agent B: one run stopped by the wall clock, one without any finished episode.
    write_run(out, "B", L1, 0, [(5, 100, 0), (7, 50, 1)], status="wallclock")  # 5
    write_run(out, "B", L1, 1, [])  # not a step played: no score
    write_run(out, "B", L2, 0, [(50, 200, 0), (1, 200, 1)])  # 50
    write_run(out, "B", L2, 1, [(70, 390, 0)], status="agent_crashed", error="exit code 1")
    (out / "suite.json").write_text(
        json.dumps(
            {
                "agents": ["A", "B"],
                "levels": [L1, L2],
                "levels_spec": f"{L1},{L2}",
                "seeds": 2,
                "budget": 400,
                "wallclock_s": 60,
                "runtime": "local",
            }
        )
    )
    return out


def test_scores_exclude_cut_off_episodes(suite_dir: Path) -> None:
    runs = {(r.agent, r.level, r.seed): r for r in load_runs(suite_dir)}
    assert len(runs) == 8
    assert runs["A", L1, 0].score == 15.0
    assert runs["A", L1, 1].score == 30.0
    assert math.isnan(runs["B", L1, 1].score)


def test_a_run_without_finished_episode_scores_its_cut_off_return(tmp_path: Path) -> None:
    # the runner's rule (evaluation.contest.records.score), so that summary.csv agrees with
    # results.json
    write_run(tmp_path, "A", L1, 0, [(900, 400, 1)])
    (run,) = load_runs(tmp_path)
    assert run.score == 900 and not run.finished
    text = write_report(tmp_path).read_text()
    assert "seed 0: no finished episode (scored by the cut-off episode's return)" in text


def test_per_level_and_overall_against_hand_computed(suite_dir: Path) -> None:
    table = Table(load_runs(suite_dir), ["A", "B"], [L1, L2])
    a1 = table.cell("A", L1)
    assert a1.mean == pytest.approx(22.5)
    assert a1.std == pytest.approx(15 / math.sqrt(2))  # sample std of 15 and 30
    assert table.cell("A", L2).mean == pytest.approx(105.5)
    oa = table.overall("A")
    assert oa.score == pytest.approx((22.5 + 105.5) / 2)  # 64.0
    # per-seed means over levels: seed 0 (15+200)/2 = 107.5, seed 1 (30+11)/2 = 20.5
    assert oa.std == pytest.approx(87 / math.sqrt(2))
    assert oa.episodes == 7 and oa.timesteps == 1350 and oa.runs_not_by_budget == 0

    b1 = table.cell("B", L1)
    assert b1.mean == 5.0 and math.isnan(b1.std) and len(b1.scores) == 1
    assert {r.seed for r in b1.flagged} == {0, 1}
    ob = table.overall("B")
    assert ob.score == pytest.approx((5 + 60) / 2)
    assert ob.seeds_complete == 1 and math.isnan(ob.std)  # seed 1 lacks a score on L1
    assert ob.runs_not_by_budget == 2


def test_overall_is_undefined_when_a_level_has_no_score(tmp_path: Path) -> None:
    write_run(tmp_path, "A", L1, 0, [(10, 100, 0)])
    write_run(tmp_path, "A", L2, 0, [])
    overall = Table(load_runs(tmp_path)).overall("A")
    assert math.isnan(overall.score) and overall.levels_scored == 1


def test_report_files(suite_dir: Path) -> None:
    report = write_report(suite_dir)
    text = report.read_text()
    # normalized (no published reference: the best agent's mean per level is 1, so A's runs
    # are 15/22.5, 30/22.5, 200/105.5, 11/105.5): IQM 1.00, mean 1.00; raw 64.0 ± 61.5
    assert "| A | 1.00 | 1.00 | 64.0 ± 61.5 | 2 | 7 | 1350 | 4 | 0 |" in text
    assert "| B | 0.35 | 0.35 | 32.5 | 1 |" in text  # seed 0 only: 5/22.5 and 50/105.5
    assert f"| `{L1}` | 22.5 ± 10.6 (2) | 5.00 (1) †" in text
    assert "B · `Game-v0:Stage1` · seed 0: wallclock" in text
    assert "B · `Game-v0:Stage1` · seed 1: not a single step played (no score)" in text
    assert "B · `Game-v0:Stage2` · seed 1: agent_crashed: exit code 1" in text
    assert "Reference scores" not in text
    for name in ("overall", Level.parse(L1).slug, Level.parse(L2).slug):
        png = suite_dir / "curves" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](curves/{name}.png)" in text

    rows = list(csv.DictReader((suite_dir / "summary.csv").open()))
    assert len(rows) == 8
    row = next(r for r in rows if (r["agent"], r["level"], r["seed"]) == ("A", L1, "0"))
    assert float(row["score"]) == 15.0 and row["episodes"] == "2" and row["timesteps"] == "250"
    assert row["status"] == "budget"
    no_score = next(r for r in rows if (r["agent"], r["level"], r["seed"]) == ("B", L1, "1"))
    assert no_score["score"] == ""
    assert not list(suite_dir.glob("**/*.tmp"))


def test_missing_runs_are_listed(suite_dir: Path) -> None:
    suite = json.loads((suite_dir / "suite.json").read_text())
    (suite_dir / "suite.json").write_text(json.dumps({**suite, "seeds": 3}))
    text = write_report(suite_dir).read_text()
    assert "A · `Game-v0:Stage1` · seed 2: not run yet" in text


def test_validation_set_shows_reference_scores(tmp_path: Path) -> None:
    levels = [lv.id for lv in load_level_set("sonic-validation")]
    for lv in levels:
        write_run(tmp_path, "jerk", lv, 0, [(1000, 4500, 0), (3000, 4500, 0)])
    (tmp_path / "suite.json").write_text(
        json.dumps(
            {
                "agents": ["jerk"],
                "levels": levels,
                "levels_spec": "sonic-validation",
                "seeds": 1,
                "budget": 9000,
                "wallclock_s": 60,
                "runtime": "local",
            }
        )
    )
    text = write_report(tmp_path).read_text()
    assert "| jerk (ours) | 2000.0 |" in text
    assert "| JERK | 1904.0 ± 21.9 |" in text
    assert "| Joint PPO | 3127.9 (unverified) |" in text


def test_run_curve_interpolates_and_holds() -> None:
    episodes = [(10, 100, 0), (20, 100, 0), (30, 100, 0), (500, 50, 1)]
    rows = [Episode(r, n, 0.0, bool(c)) for r, n, c in episodes]
    run = Run("A", L1, 0, "budget", 400, 1.0, None, rows, None)
    grid = np.array([50.0, 100, 150, 300, 350, 400, 450])
    raw = run_curve(run, grid, smooth=1)
    assert math.isnan(raw[0]) and math.isnan(raw[-1])  # before the first episode, past the run
    assert raw[1:6].tolist() == [10, 15, 30, 30, 30]  # the cut episode (500) never shows
    smooth = run_curve(run, grid, smooth=2)
    assert smooth[1:4].tolist() == [10, 12.5, 25]


# ---------------------------------------------------------------- the video command

RECORD = """
import sys, numpy as np, stable_retro
env = stable_retro.make("Airstriker-Genesis-v0", "Level1", render_mode=None, record=sys.argv[1])
rng = np.random.default_rng(0)
for steps in (100, 200, 120):  # three episodes of known lengths (emulator frames)
    env.reset()
    for _ in range(steps):
        env.step(rng.integers(0, 2, env.action_space.shape))
env.unwrapped.stop_record()
env.close()
"""


def video(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evaluation", "video", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results dir with three .bk2 movies (one emulator, in its own process) and a monitor
    that makes episode 1 the best."""
    d = tmp_path_factory.mktemp("recorded")
    (d / "movies").mkdir()
    subprocess.run([sys.executable, "-c", RECORD, str(d / "movies")], check=True, timeout=120)
    (d / "monitor.csv").write_text("# {}\nr,l,t,cut\n10,25,1,0\n50,50,2,0\n900,30,3,1\n")
    return d


def test_video_of_the_best_episode(recorded_run: Path) -> None:
    import cv2

    out = recorded_run / "best.mp4"
    proc = video("--run", recorded_run, "--video", out)  # old spellings below
    assert proc.returncode == 0, proc.stderr
    assert "episode 1 " in proc.stdout  # the best finished one; the cut-off 900 is not
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 200 // 4 + 1  # every 4th frame + the first
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 224)
    ok, frame = cap.read()
    assert ok and frame.std() > 0  # a picture, not a blank frame


def test_video_gif_of_a_numbered_episode(recorded_run: Path) -> None:
    from PIL import Image

    out = recorded_run / "e2.gif"
    proc = video(
        "--results-dir",
        recorded_run,
        "--episode",
        "2",
        "--out",
        out,
        "--scale",
        "0.5",
        "--every",
        "8",
    )
    assert proc.returncode == 0, proc.stderr
    assert "episode 2 " in proc.stdout and "16 frames" in proc.stdout  # 120 // 8 + 1
    with Image.open(out) as im:
        assert im.format == "GIF" and im.size == (160, 112) and im.n_frames > 1


def test_video_errors_are_one_line(recorded_run: Path, tmp_path: Path) -> None:
    proc = video("--results-dir", tmp_path, "--out", tmp_path / "x.gif")
    assert proc.returncode == 2 and proc.stderr.startswith("error: no movie in")
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = video("--results-dir", recorded_run, "--episode", "3", "--out", tmp_path / "x.gif")
    assert proc.returncode == 2 and "holds episodes 0..2" in proc.stderr
    proc = video("--results-dir", recorded_run, "--out", tmp_path / "x.avi")
    assert proc.returncode == 2 and ".gif or .mp4" in proc.stderr
    (tmp_path / "dir.gif").mkdir()
    for bad, said in (
        (["--scale", "nan"], "--scale nan"),
        (["--scale", "inf"], "--scale inf"),
        (["--fps", "-5"], "--fps -5"),
        (["--fps", "0"], "--fps 0"),
        (["--max-frames", "0"], "--max-frames 0"),
        (["--out", str(tmp_path / "dir.gif")], "is a directory: name a file"),
        (["--results-dir", str(tmp_path / "nosuch")], "no such run directory"),
    ):
        args = ["--results-dir", str(recorded_run), "--out", str(tmp_path / "y.gif")]
        proc = video(*args, *bad)  # argparse: the last of a repeated option counts
        assert proc.returncode == 2 and said in proc.stderr, (bad, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "y.gif").exists()
