"""Progress without a terminal (plain lines at an interval) and TensorBoard tags as CleanRL names
them."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.train_log import EpisodeTracker, TrainLogger
from sonic_common.progress import PlainProgress, progress

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^(?P<desc>.+): (?P<n>[\d.k]+)/(?P<total>[\d.k]+) steps \((?P<pct>\d+)%\), "
    r"\S+ elapsed(, ETA \S+)?"
)


def test_plain_progress_lines() -> None:
    out = io.StringIO()
    bar = progress(1000, 0, desc="job", file=out)  # a StringIO is no terminal
    assert isinstance(bar, PlainProgress)
    bar.every_s = 0.0
    bar.update(250)
    bar.set_postfix_str("runs 1/4")
    bar.n = 1000
    bar.close()
    bar.close()  # once only
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("job: 250/1000 steps (25%), ") and ", ETA " in lines[0]
    assert lines[-1].startswith("job: 1000/1000 steps (100%)") and "ETA" not in lines[-1]
    assert lines[-1].endswith("runs 1/4") and len(lines) == 3


def test_plain_progress_waits_its_interval() -> None:
    out = io.StringIO()
    bar = PlainProgress(100, desc="slow", file=out, every_s=3600)
    for _ in range(100):
        bar.update(1)
    assert out.getvalue() == ""  # nothing within the interval
    bar.close()
    assert out.getvalue().count("\n") == 1 and "100/100 steps (100%)" in out.getvalue()


def test_nothing_done_prints_nothing() -> None:
    out = io.StringIO()
    bar = PlainProgress(100, desc="never", file=out, every_s=3600)
    bar.close()
    assert out.getvalue() == ""


def test_evaluation_run_prints_progress_lines_in_a_log(tmp_path: Path) -> None:
    env = {**os.environ, "PROGRESS_INTERVAL_S": "0.5"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation",
            "run",
            "--agent",
            "random",
            "--level",
            "Airstriker-Genesis-v0:Level1",
            "--budget",
            "1000",
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [m for m in map(LINE.match, proc.stderr.splitlines()) if m]
    assert lines, proc.stderr
    assert all(m["desc"] == "random Airstriker-Genesis-v0:Level1" for m in lines)
    assert lines[-1]["n"] == "1000" and lines[-1]["pct"] == "100"
    assert "\r" not in proc.stderr  # no redrawn bar in a log


def test_tensorboard_tags_are_cleanrl_names(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TrainLogger(
        tmp_path, tensorboard=True, progress_bar=False, config={"lr": 2e-4, "nsteps": 128}
    )
    tracker = EpisodeTracker()
    for ret, length, step in ((1.0, 30, 130), (2.0, 50, 400)):
        tracker.add(ret, length, step)
    logger.log_episodes(tracker.take_unlogged())
    assert tracker.take_unlogged() == [] and tracker.mean_return == 1.5
    logger.log(
        {
            "timesteps": 512,
            "updates": 1,
            "episodes": 3,
            "mean_return": 1.5,
            "mean_length": 40.0,
            "fps": 300.0,
            "pg_loss": 0.1,
            "vf_loss": 0.2,
            "entropy": 1.7,
            "approx_kl": 0.01,
            "clipfrac": 0.1,
            "explained_var": 0.3,
            "lr": 2e-4,
            "td_loss": 0.5,
        }
    )
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/SPS",
        "charts/learning_rate",
        "losses/value_loss",
        "losses/policy_loss",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clipfrac",
        "losses/explained_variance",
        "losses/td_loss",
    } <= scalars
    # each episode at the step it ended, as CleanRL logs them; the row's means beside them
    episodes = events.Scalars("charts/episodic_return")
    assert [(e.step, e.value) for e in episodes] == [(130, 1.0), (400, 2.0)]
    assert [e.value for e in events.Scalars("charts/episodic_length")] == [30, 50]
    means = events.Scalars("charts/mean_episodic_return")
    assert [(e.step, e.value) for e in means] == [(512, 1.5)]
    assert "hyperparameters/text_summary" in events.Tags()["tensors"]


def test_meta_training_curves_by_iteration_and_env_steps_survive_a_resume(tmp_path: Path) -> None:
    """Both axes, and a resume after iteration 1 that purges the iterations it plays again on
    each axis, not the env-steps curve's whole past (its steps are far above the purge's
    iteration: TensorBoard drops every tag of a directory from the purge step on)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from meta_train.loop import MetricsLog

    cfg = {"adapt_steps": 1, "iterations": 3, "task": {"kind": "x"}}

    def write(its: range, start: int, start_env_steps: int, returns: float) -> None:
        log = MetricsLog(tmp_path, cfg, start, "meta", False, start_env_steps)
        for it in its:
            env_steps = 8192 * (it + 1)
            log.write({"iteration": it, "return_0": returns, "env_steps": env_steps})
        log.close()

    write(range(3), 0, 0, 1.0)  # iterations 0, 1, 2; the checkpoint after 0 is the last kept
    time.sleep(1.1)  # event files are read in name order, and their names count seconds
    write(range(1, 3), 1, 8192, 5.0)  # resumed: iterations 1 and 2 again

    def curve(path: Path, tag: str) -> list[tuple[int, float]]:
        events = EventAccumulator(str(path))
        events.Reload()
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert curve(tmp_path / "tb", "meta/return_0") == [(0, 1.0), (1, 5.0), (2, 5.0)]
    by_steps = curve(tmp_path / "tb" / "by_env_steps", "by_env_steps/return_0")
    assert by_steps == [(8192, 1.0), (16384, 5.0), (24576, 5.0)]
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "meta/env_steps" not in events.Tags()["scalars"]
    assert "hyperparameters/text_summary" in events.Tags()["tensors"]


def test_an_interrupted_run_counts_what_it_played() -> None:
    """After Ctrl-C the suite's bar shows the steps played, not every run's whole budget."""
    from evaluation.suites.suite import RunKey
    from evaluation.suites.suite_cli import SuiteProgress

    bar = SuiteProgress(total=3, done=1, budget=1000)
    bar.on_done(RunKey("random", "L", 1), {"status": "budget", "timesteps": 1000})
    bar.on_done(RunKey("random", "L", 2), {"status": "interrupted", "timesteps": 300})
    bar.close()
    assert bar.bar.n == 2300
    assert bar.counts == {"runs": 2, "failed": 0, "interrupted": 1}


LEVEL = "Boxing-Atari2600-v0:Start"


def _stopped_run(run_dir: Path, point: tuple[int, int] | None, **results: object) -> None:
    """A rainbow run of LEVEL (budget 100 000) stopped after 3 episodes (100, 200, 300 steps;
    the third cut off by the stop), with the agent's resume point `point` (steps, episodes) if
    any; `results`: other values in its results.json."""
    import json

    seed = int(run_dir.name.removeprefix("seed"))
    (run_dir / "agent").mkdir(parents=True)
    mine = {"level": LEVEL, "agent": "rainbow", "seed": seed, "budget": 100_000}
    (run_dir / "results.json").write_text(
        json.dumps({**mine, "status": "interrupted", "timesteps": 602, **results})
    )
    (run_dir / "monitor.csv").write_text(
        '# {"t_start": 0}\nr,l,t,cut\n1.0,100,10.0,0\n2.0,200,30.5,0\n0.5,300,60.0,1\n'
    )
    (run_dir / "progress.csv").write_text(
        "timesteps,episodes,elapsed_s,mean_return_last10\n250,1,25.0,1.0\n550,2,55.0,1.5\n"
    )
    if point is not None:
        steps, episodes = point
        (run_dir / "agent" / "resume.json").write_text(
            json.dumps({"steps": steps, "episodes": episodes})
        )


def test_steps_kept_by_resume_points_count_as_done_from_the_start(tmp_path: Path) -> None:
    """A suite that continues runs from their resume points counts the steps kept there as done
    from the start, for the points the runner takes (`resume_point_for`) and no others; a
    resumed run's progress counts from there."""
    from evaluation.contest.records import Reading
    from evaluation.suites.suite import RunKey, SuiteConfig, SuiteRunner, kept_progress
    from evaluation.suites.suite_cli import SuiteProgress

    keys = [RunKey("rainbow", LEVEL, s) for s in range(5)]
    resumed, fresh, no_point, bad_point, other_budget = keys
    _stopped_run(resumed.dir(tmp_path), (300, 2))
    _stopped_run(no_point.dir(tmp_path), None)
    _stopped_run(bad_point.dir(tmp_path), (250, 2))  # not the records' 300 steps
    _stopped_run(other_budget.dir(tmp_path), (300, 2), budget=50_000)
    config = SuiteConfig(["rainbow"], [LEVEL], LEVEL, list(range(5)), 100_000, 3600.0)
    kept = kept_progress(keys, SuiteRunner(config, tmp_path, 1))
    assert kept == {resumed: Reading(302, 30.5)}  # one reset per episode; the clock there
    config.record = True  # the runner plays a recorded run again from its start
    assert kept_progress(keys, SuiteRunner(config, tmp_path, 1)) == {}

    bar = SuiteProgress(total=6, done=1, budget=100_000, kept=kept)
    assert bar.bar.n == bar.bar.initial == 100_302
    bar.on_tick({fresh: Reading(600, 6.0)})  # the resumed run is waiting for a worker
    assert bar.bar.n - bar.bar.initial == 600
    bar.on_tick({fresh: Reading(900, 9.0), resumed: Reading(702, 70.5)})
    assert bar.bar.n - bar.bar.initial == 900 + 400
    bar.on_done(resumed, {"status": "budget", "timesteps": 100_000})
    bar.on_tick({fresh: Reading(1_000, 10.0)})
    assert bar.bar.n == 200_000 + 1_000


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_suite_eta_times_each_agent_apart() -> None:
    """Each agent's runs are timed at that agent's speed (its finished runs' records, those
    ended by a limit), not at the rate of all steps together."""
    from evaluation.contest.records import Reading
    from evaluation.suites.eta import SuiteEta
    from evaluation.suites.suite import RunKey

    rainbow = [RunKey("rainbow", "L", s) for s in range(3)]
    rand = [RunKey("random", "L", s) for s in range(3)]
    finished = [
        ("rainbow", {"status": "wallclock", "timesteps": 50_000, "wallclock_s": 5_000.0}),
        ("random", {"status": "budget", "timesteps": 100_000, "wallclock_s": 200.0}),
        ("random", {"status": "agent_crashed", "timesteps": 10, "wallclock_s": 900.0}),
        ("random", {"status": "budget", "timesteps": "damaged", "wallclock_s": float("inf")}),
    ]
    kept = {rainbow[2]: Reading(60_000, 6_000.0)}
    eta = SuiteEta(100_000, 43_200.0, [*rainbow, *rand], kept, finished, 2, _Clock())
    assert eta.rate("rainbow") == 10.0 and eta.rate("random") == 500.0  # the crash: not timed
    # rainbow 10 000 + 10 000 + 4 000 s, random 3 × 200 s, on 2 slots
    assert eta.seconds_left() == (24_000 + 600) / 2
    eta.done(rand[0], {"status": "budget", "timesteps": 100_000, "wallclock_s": 600.0})
    assert eta.rate("random") == 200_000 / 800
    assert eta.seconds_left() == (24_000 + 2 * 400) / 2
    for key in rainbow[:2]:
        eta.done(key, {"status": "budget", "timesteps": 100_000, "wallclock_s": 10_000.0})
    assert eta.seconds_left() == 4_000  # the longest run left, not the work over 2 slots


def test_the_suite_eta_times_running_runs_by_their_own_clock() -> None:
    """Without records, the speed is what the running runs' progress lines say, from the first
    line seen of their current attempt: a resumed run's stale lines of the stopped attempt, then
    its restored ones up to its resume point, are not steps played now. Between lines a run's
    time left runs down; an agent not timed yet goes at all agents' speed; nothing timed: no
    ETA."""
    from evaluation.contest.records import Reading
    from evaluation.suites.eta import SuiteEta
    from evaluation.suites.suite import RunKey

    fresh, resumed, waiting = RunKey("ppo2", "L", 0), RunKey("ppo2", "L", 1), RunKey("jerk", "L", 0)
    clock = _Clock()
    kept = {resumed: Reading(50_000, 5_000.0)}
    eta = SuiteEta(100_000, 43_200.0, [fresh, resumed, waiting], kept, [], 2, clock)
    eta.tick({fresh: Reading(0, 0.0), resumed: Reading(90_000, 9_000.0)})  # the stale file
    assert eta.seconds_left() is None
    clock.now = 1.0
    eta.tick({fresh: Reading(0, 0.0), resumed: Reading(48_000, 4_800.0)})  # restored lines
    assert eta.rate("ppo2") is None and eta.seconds_left() is None  # the jump back: no speed
    clock.now = 100.0
    eta.tick({fresh: Reading(1_000, 100.0), resumed: Reading(51_000, 5_100.0)})
    assert eta.rate("ppo2") == (1_000 + 3_000) / (100 + 300) and eta.rate("jerk") is None
    # ppo2's runs: 99 000 and 49 000 steps left; jerk's run at ppo2's speed, 100 000 steps
    assert eta.seconds_left() == (99_000 + 49_000 + 100_000) / 10 / 2
    clock.now = 115.0  # no new line (runs write one every 30 s): each played 15 s more
    eta.tick({fresh: Reading(1_000, 100.0), resumed: Reading(51_000, 5_100.0)})
    assert eta.seconds_left() == (99_000 + 49_000 + 100_000) / 10 / 2 - 15


def test_the_suite_eta_stops_each_run_at_its_wall_clock_limit() -> None:
    """A run too slow for its budget ends at its wall-clock limit, on its own clock: a resumed
    run's counts its earlier sessions, waiting or running."""
    from evaluation.contest.records import Reading
    from evaluation.suites.eta import SuiteEta
    from evaluation.suites.suite import RunKey

    running, waiting, fresh = (RunKey("rainbow", "L", s) for s in range(3))
    finished = [("rainbow", {"status": "budget", "timesteps": 100_000, "wallclock_s": 10_000.0})]
    kept = {running: Reading(390_000, 39_000.0), waiting: Reading(300_000, 30_000.0)}
    clock = _Clock()
    eta = SuiteEta(1_000_000, 43_200.0, [running, waiting, fresh], kept, finished, 1, clock)
    # not 61 000 + 70 000 + 100 000 s: each to its limit
    assert eta.seconds_left() == (43_200 - 39_000) + (43_200 - 30_000) + 43_200
    eta.tick({running: Reading(400_000, 40_000.0)})
    clock.now = 50.0
    eta.tick({running: Reading(400_500, 40_050.0)})
    clock.now = 60.0
    assert eta.seconds_left() == (43_200 - 40_050 - 10) + (43_200 - 30_000) + 43_200


def test_the_suite_eta_on_ray_learns_how_many_runs_play_at_once() -> None:
    """With no slot count (Ray): the most runs seen running together, or, where runs do not
    show their progress, the runs finished so far: their wall clock in this suite over its
    time (a resumed run's earlier sessions left out)."""
    from evaluation.contest.records import Reading
    from evaluation.suites.eta import SuiteEta
    from evaluation.suites.suite import RunKey

    keys = [RunKey("random", "L", s) for s in range(6)]
    done = {"status": "budget", "timesteps": 1_000, "wallclock_s": 100.0}
    clock = _Clock()
    eta = SuiteEta(1_000, 43_200.0, keys, {}, [("random", done)], clock=clock)
    assert eta.seconds_left() is None  # timed, but how many at once is not known yet
    clock.now = 50.0  # each run's 100 s: 50 of them before this suite (resumed)
    for key in keys[:3]:
        eta.done(key, done)
    assert eta.seconds_left() == 3 * 100.0 / 3  # 150 busy seconds in 50: 3 at once
    eta.tick(dict.fromkeys(keys[3:], Reading(0, 0.0)))
    clock.now = 60.0  # 150 busy seconds in 60: 2 at once, but 3 were seen running together
    assert eta.seconds_left() == 3 * (100.0 - 10.0) / 3


def test_a_ray_run_shows_running_only_for_this_suite(tmp_path: Path) -> None:
    """The Ray driver reads the progress of a run whose directory was made, or whose results
    (published by its server at its start) were written, since the suite began and say
    running; a queued run's directory may hold an earlier suite's attempt."""
    import json

    from evaluation.suites.ray_suite import shows_running

    since = 1_000_000.0
    run = tmp_path / "run"
    run.mkdir()
    os.utime(run, (since + 1, since + 1))
    assert shows_running(run, since)  # made, its server not started yet
    os.utime(run, (since - 1, since - 1))
    assert not shows_running(run, since)  # an earlier suite's, without results
    for status, mtime, shows in [
        ("running", since + 5, True),
        ("running", since - 5, False),  # an earlier suite's attempt, killed
        ("interrupted", since + 5, False),
        ("budget", since + 5, False),
    ]:
        (run / "results.json").write_text(json.dumps({"status": status}))
        os.utime(run / "results.json", (mtime, mtime))
        assert shows_running(run, since) is shows, status
    assert not shows_running(tmp_path / "missing", since)


def test_the_suite_bar_shows_the_suite_eta() -> None:
    """The suite's progress line gives the per-agent ETA, not the bar's own from all steps,
    and none once the suite stops."""
    from evaluation.suites.eta import SuiteEta
    from evaluation.suites.suite import RunKey
    from evaluation.suites.suite_cli import SuiteProgress

    slow, fast = RunKey("rainbow", "L", 0), RunKey("random", "L", 0)
    finished = [("rainbow", {"status": "budget", "timesteps": 1_000, "wallclock_s": 3_600.0})]
    eta = SuiteEta(1_000, 43_200.0, [slow, fast], {}, finished, slots=1, clock=_Clock())
    bar = SuiteProgress(total=3, done=1, budget=1_000, eta=eta)
    bar.on_done(fast, {"status": "budget", "timesteps": 1_000, "wallclock_s": 2.0})
    line = bar.bar.line()
    assert "ETA 1h00m, runs 2/3" in line and line.count("ETA") == 1
    bar.close()
    assert "ETA" not in bar.bar.line()


def test_a_fault_in_the_eta_does_not_stop_the_suite(capsys: pytest.CaptureFixture[str]) -> None:
    """The ETA is only shown: if it raised, the bar goes on without it and says so."""
    from evaluation.contest.records import Reading
    from evaluation.suites.eta import SuiteEta
    from evaluation.suites.suite import RunKey
    from evaluation.suites.suite_cli import SuiteProgress

    key = RunKey("random", "L", 0)
    eta = SuiteEta(1_000, 43_200.0, [key], {}, [], 1, _Clock())
    eta.watches = None  # type: ignore[assignment]  # a fault: its methods raise
    bar = SuiteProgress(total=1, done=0, budget=1_000, eta=eta)
    bar.on_tick({key: Reading(500, 5.0)})
    assert bar.eta is None and bar.bar.n == 500
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and said[0].startswith("suite: no ETA any more (AttributeError")
