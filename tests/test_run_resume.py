"""A stopped run continues from its agent's resume point (evaluation/contest/resume.py).

The end-to-end tests stop a real suite (SIGINT, or SIGKILL to its whole process group as the
end of a session does) while Rainbow plays Airstriker, then resume it and check what the
records kept and what the agent restored. The others check the refusals on recorded files.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.checkpoint import load_checkpoint
from evaluation.contest.records import MONITOR, RESULTS, RunRecorder, read_monitor
from evaluation.contest.resume import ResumePoint, resume_point
from evaluation.contest.runner import RunSpec, run_one
from roms_setup.levels import Level
from tests.support import beside, processes_with, wait_until

ROOT = Path(__file__).resolve().parents[1]
LEVEL = "Airstriker-Genesis-v0:Level1"
SLUG = "Airstriker-Genesis-v0_Level1"
BUDGET = 1000
# a small, fast Rainbow: an update every 25 transitions from the 80th, a resume point at the
# first episode end after every 300 steps (Airstriker's episodes under random play: ~340)
RAINBOW_ARGS = (
    "--set learning_starts=80 --set train_interval=25 --set torch_threads=1 "
    "--set capacity=1000 --set target_interval=50 --set features=64 --set atoms=11 "
    "--set save_interval=300 --set tensorboard=false"
)


def suite_cmd(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "evaluation",
        "suite",
        "--agents",
        "rainbow",
        "--levels",
        LEVEL,
        "--seeds",
        "1",
        "--budget",
        str(BUDGET),
        "--workers",
        "1",
        "--agent-args",
        f"rainbow={RAINBOW_ARGS}",
        "--out",
        str(out),
    ]


def stop_after_a_point(out: Path, run: Path, how: str) -> dict[str, Any]:
    """Start the suite, stop it once the agent has a resume point and the server has played
    past it, and return the agent's point then (it may have written a newer one meanwhile)."""
    proc = subprocess.Popen(
        suite_cmd(out),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        point: dict[str, Any] | None = None
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            if point is None and (run / "agent" / "resume.json").is_file():
                point = json.loads((run / "agent" / "resume.json").read_text())
            # played on: one more episode ended after the point
            if point and len(read_monitor(run / MONITOR)[1]) > point["episodes"]:
                break
            time.sleep(0.05)
        if how == "sigkill":
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            # the agent (a process group of its own) lives until its guard sees the runner
            # gone, and may write one more point meanwhile: read the point once it has ended
            wait_until(lambda: not processes_with(str(run), environ=True), 60, "the agent's end")
        else:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
            assert proc.returncode == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return json.loads((run / "agent" / "resume.json").read_text())


def played(run: Path, stopped: dict[str, Any]) -> int:
    """The timesteps a stopped run's records say were played (its results, its episodes, its
    progress lines: whichever says most)."""
    _, rows = read_monitor(run / MONITOR)
    progress = (run / "progress.csv").read_text().splitlines()[1:]
    logged = [int(float(line.split(",")[0])) for line in progress if line]
    return max(int(stopped["timesteps"]), sum(r.l for r in rows) + len(rows), *logged)


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_a_stopped_rainbow_run_continues_from_its_resume_point(tmp_path: Path, how: str) -> None:
    out = tmp_path / "s"
    run = out / "runs" / "rainbow" / SLUG / "seed0"
    point = stop_after_a_point(out, run, how)
    stopped = json.loads((run / RESULTS).read_text())
    assert stopped["status"] == ("interrupted" if how == "sigint" else "running")
    _, rows_before = read_monitor(run / MONITOR)
    played_before = played(run, stopped)
    learner_at_point = load_checkpoint(run / "agent" / point["checkpoint"])
    # the named point's files (whole: resume.json is written after them), and at most one
    # other point's, when the kill came during a save: the next point's, being written, or the
    # previous point's, not yet removed (the agent removes it after writing resume.json)
    names = {p.name for p in (run / "agent").glob("resume-*")}
    assert {point["checkpoint"], point["replay"]} <= names
    assert len({int(n.split("-")[1].split(".")[0]) for n in names} - {point["steps"]}) <= 1
    assert (learner_at_point["timesteps"], learner_at_point["episodes"]) == (
        point["steps"],
        point["episodes"],
    )

    done = subprocess.run(
        [*suite_cmd(out), "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    res = json.loads((run / RESULTS).read_text())
    assert res["status"] == "budget" and res["timesteps"] == BUDGET, res
    assert res["steps"] + res["resets"] == BUDGET
    at = point["steps"] + point["episodes"]
    (resumed,) = res["resumed"]
    assert resumed["at_timesteps"] == at and resumed["episodes"] == point["episodes"]
    # what was played after the point, by the stopped run's records: at least the episode the
    # test waited for, unless the agent wrote a newer point at its end before the stop came
    assert resumed["discarded_timesteps"] == played_before - at >= 0
    if len(rows_before) > point["episodes"]:  # an episode ended after it: that was discarded
        assert resumed["discarded_timesteps"] >= rows_before[point["episodes"]].l
    # the server's own episodes up to the point are kept as they were; the later ones are new
    _, rows = read_monitor(run / MONITOR)
    assert rows[: point["episodes"]] == rows_before[: point["episodes"]]
    # (the budget's last timestep may be a reset, which has no row)
    assert sum(r.l for r in rows) == res["steps"] and res["resets"] - len(rows) in (0, 1)
    # the agent: restored learner and replay, updates going on at once (a fresh replay would
    # wait for 80 transitions), and its steps still the server's
    log = (run / "agent.log").read_text()
    assert f"resuming {run / 'agent' / point['checkpoint']}" in log, log
    restored = min(learner_at_point["transitions"], 1000)
    assert f"replay buffer restored: {restored} transitions" in log
    assert (run / "agent.log.1").is_file() and (run / "server.log.1").is_file()
    final = load_checkpoint(run / "agent" / "checkpoint.pt")
    new_transitions = final["transitions"] - learner_at_point["transitions"]
    assert final["updates"] == learner_at_point["updates"] + new_transitions // 25
    assert res["steps"] - 1 <= final["timesteps"] <= res["steps"]
    assert not list((run / "agent").glob("resume*"))  # the budget is spent: no point is kept
    report = (out / "report.md").read_text()
    assert "1 run(s) were stopped and continued" in report
    assert f"The {resumed['discarded_timesteps']:,} timesteps" in report
    assert f"(1×, {resumed['discarded_timesteps']:,} timesteps discarded)" in report


# ---------------------------------------------------------------- refusals, on recorded files


def stopped_run(tmp_path: Path, status: str = "interrupted") -> Path:
    """A run directory as a stopped run leaves it: 3 finished episodes of 100, 120, 90 steps
    and one cut off, 340 timesteps played before the stop."""
    run = tmp_path / "run"
    rec = RunRecorder(
        run, level=LEVEL, seed=5, agent="rainbow", runtime="local", budget=1000, wallclock_s=99
    )
    rec.start()
    for length in (100, 120, 90, 25):
        rec.reset()
        for i in range(length):
            rec.step(1.0, done=i == length - 1 and length != 25)
        rec.progress(rec.steps + rec.resets)
    rec.finish(status, None, 339)
    (run / "agent").mkdir()
    return run


def write_point(run: Path, data: object) -> None:
    (run / "agent" / "resume.json").write_text(json.dumps(data))


def previous(run: Path) -> dict:
    return json.loads((run / RESULTS).read_text())


def test_the_point_keeps_the_servers_rows_up_to_it(tmp_path: Path) -> None:
    run = stopped_run(tmp_path)
    write_point(run, {"steps": 220, "episodes": 2})
    point = resume_point(run, previous(run))
    assert isinstance(point, ResumePoint), point
    assert point.timesteps == 222 and [r.l for r in point.rows] == [100, 120]
    assert point.discarded_timesteps == 339 - 222
    assert point.elapsed_s == point.rows[-1].t
    assert [int(line.split(",")[0]) for line in point.progress] == [101, 222]
    # each resume plays on with sticky-action randomness of its own
    again_at_2 = ResumePoint(**{**point.__dict__, "history": [point.record(5)]})
    assert len({point.env_seed(5), again_at_2.env_seed(5), point.env_seed(6)}) == 3
    # a recorder started from it has the run as it was at the point
    again = RunRecorder(
        tmp_path / "again",
        level=LEVEL,
        seed=5,
        agent="rainbow",
        runtime="local",
        budget=1000,
        wallclock_s=99,
    )
    again.start(ResumePoint.from_file(_saved(tmp_path, point)))
    assert (again.steps, again.resets, again.episodes) == (220, 2, 2)
    assert again.elapsed() >= point.elapsed_s
    res = again.finish("budget", None, 1000)
    assert res["resumed"] == [point.record(5)] and res["score"] == 110.0  # (100 + 120) / 2


def _saved(tmp_path: Path, point: ResumePoint) -> Path:
    path = tmp_path / "point.json"
    path.write_text(point.to_json())
    return path


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"steps": 221, "episodes": 2}, "does not match"),  # one step off
        ({"steps": 335, "episodes": 4}, "past the server's finished episodes"),  # the cut one
        ({"steps": 220, "episodes": 2.0}, "positive integer"),
        ({"steps": True, "episodes": 2}, "positive integer"),
        ([220, 2], "not a JSON object"),
    ],
)
def test_a_point_that_does_not_match_the_records_is_refused(
    tmp_path: Path, data: object, why: str
) -> None:
    run = stopped_run(tmp_path)
    write_point(run, data)
    refused = resume_point(run, previous(run))
    assert isinstance(refused, str) and why in refused


def test_malformed_records_and_agent_files_are_refusals_not_errors(tmp_path: Path) -> None:
    run = stopped_run(tmp_path)
    write_point(run, {"steps": 220, "episodes": 2})
    monitor = (run / MONITOR).read_text()
    (run / MONITOR).write_text(monitor + "7.0\n")  # a row cut short by a kill
    assert "not readable" in str(resume_point(run, previous(run)))
    times = monitor.splitlines()
    times[3] = times[3].rsplit(",", 2)[0] + ",-5.0,0"  # a clock running backwards
    (run / MONITOR).write_text("\n".join(times) + "\n")
    assert "do not count up" in str(resume_point(run, previous(run)))
    (run / MONITOR).write_text(monitor)
    assert isinstance(resume_point(run, previous(run)), ResumePoint)
    assert "not readable" in str(resume_point(run, {**previous(run), "resumed": 3}))
    point = run / "agent" / "resume.json"
    point.write_text(json.dumps({"steps": 220, "episodes": 2, "pad": "x" * 10_000}))
    assert "larger than" in str(resume_point(run, previous(run)))
    point.unlink()
    os.mkfifo(point)  # would block a plain read
    assert "no resume.json" in str(resume_point(run, previous(run)))


def test_only_a_stopped_run_continues_and_a_linked_point_is_ignored(tmp_path: Path) -> None:
    run = stopped_run(tmp_path, status="budget")
    write_point(run, {"steps": 220, "episodes": 2})
    assert "only a stopped run" in str(resume_point(run, previous(run)))
    run2 = stopped_run(tmp_path / "b")
    (tmp_path / "elsewhere.json").write_text(json.dumps({"steps": 220, "episodes": 2}))
    (run2 / "agent" / "resume.json").symlink_to(tmp_path / "elsewhere.json")
    assert "no resume.json" in str(resume_point(run2, previous(run2)))


def test_a_refused_point_plays_the_run_again_and_says_why(tmp_path: Path) -> None:
    """A forged point (steps that no prefix of the episodes holds): the runner plays the whole
    run again, from an empty agent directory, and records why it did not continue."""
    run = stopped_run(tmp_path)
    write_results(run, {**previous(run), "agent": "random", "budget": 300})
    write_point(run, {"steps": 221, "episodes": 2})
    (run / "agent" / "planted").write_text("left by the stopped attempt")
    res = run_one(
        RunSpec(
            agent="random",
            level=Level.parse(LEVEL),
            seed=5,
            budget=300,
            results_dir=run,
            resume=True,
        )
    )
    assert res["status"] == "budget" and res["timesteps"] == 300
    assert "does not match" in res["resume_refused"] and "resumed" not in res
    assert json.loads((run / RESULTS).read_text())["resume_refused"] == res["resume_refused"]
    assert not (run / "agent" / "planted").exists()
    _, rows = read_monitor(run / MONITOR)
    assert sum(r.l for r in rows) + len(rows) == 300  # all played now, nothing kept
    shutil.rmtree(run)


def test_a_continued_run_keeps_the_clock_it_had_and_its_settings(tmp_path: Path) -> None:
    """The wall clock goes on from the point's episode end: a point 95 s into a 99 s limit
    leaves 4 s. A run whose settings differ from the stopped one's, or that records movies,
    is played again instead."""
    run = stopped_run(tmp_path)
    monitor = (run / MONITOR).read_text().splitlines()
    monitor[3] = monitor[3].rsplit(",", 2)[0] + ",95.0,0"  # the second episode ended at 95 s
    (run / MONITOR).write_text("\n".join(monitor) + "\n")
    write_point(run, {"steps": 220, "episodes": 2})
    # the random agent knows no --resume: a shell in front of it drops the argument
    spec = RunSpec(
        agent="random",
        level=Level.parse(LEVEL),
        seed=5,
        budget=10_000_000,
        results_dir=run,
        wallclock_s=99,
        resume=True,
        agent_cmd=["sh", "-c", f"exec {sys.executable} -m agent.random_agent", "sh"],
    )
    write_results(run, {**previous(run), "agent": "random", "budget": 10_000_000})
    res = run_one(spec)
    assert res["status"] == "wallclock", res
    # by the server's own record: 95 s + the 4 s left (+ its start); a clock started again
    # from 0 would end at 95 + 99 = 194 s
    assert res["resumed"][0]["at_timesteps"] == 222 and 95 <= res["wallclock_s"] < 150
    _, rows = read_monitor(run / MONITOR)
    assert [r.l for r in rows[:2]] == [100, 120] and rows[1].t == 95.0
    # the records' clock went on from 95 s too: a clock from 0 would log progress at 30, 60, 90
    with open(run / "progress.csv", newline="") as f:
        after = [float(r["elapsed_s"]) for r in csv.DictReader(f) if int(r["timesteps"]) > 222]
    assert after and min(after) >= 95.0, after

    for other, why in (
        (replace_spec(spec, seed=6), "another seed"),
        (replace_spec(spec, record=True), "movies are recorded"),
    ):
        again = stopped_run(tmp_path / why.replace(" ", "-"))
        write_point(again, {"steps": 220, "episodes": 2})
        write_results(again, {**previous(again), "agent": "random", "budget": 300})
        refused = run_one(replace_spec(other, results_dir=again, budget=300, wallclock_s=600))
        assert why in refused["resume_refused"] and "resumed" not in refused


def write_results(run: Path, data: dict) -> None:
    (run / RESULTS).write_text(json.dumps(data))


def replace_spec(spec: RunSpec, **changes: object) -> RunSpec:
    from dataclasses import replace

    return replace(spec, **changes)  # type: ignore[arg-type]


def _server_of(run: Path) -> tuple[int, Path] | None:
    """The pid and private records of the server continuing `run` (its command line names the
    published directory)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--resume-from" in argv and str(run.resolve()).encode() in argv:
            return int(pid), Path(argv[argv.index(b"--out") + 1].decode())
    return None


def test_a_continued_run_whose_server_dies_keeps_its_resumes(tmp_path: Path) -> None:
    """The server of a continued run is SIGKILLed after one more episode: the results recovered
    from its records are env_error and still name the resume and the first attempt's start."""
    run = stopped_run(tmp_path)
    first = previous(run)
    write_results(run, {**first, "agent": "random", "budget": 10_000_000})
    write_point(run, {"steps": 220, "episodes": 2})
    spec = RunSpec(
        agent="random",
        level=Level.parse(LEVEL),
        seed=5,
        budget=10_000_000,
        results_dir=run,
        wallclock_s=300,  # ends the run should the fault never come
        resume=True,
        agent_cmd=["sh", "-c", f"exec {sys.executable} -m agent.random_agent", "sh"],
    )
    killed: list[int] = []

    def kill_after_one_more_episode() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            server = _server_of(run)
            with contextlib.suppress(OSError, ValueError):
                if server and len(read_monitor(server[1] / MONITOR)[1]) > 2:
                    os.kill(server[0], signal.SIGKILL)
                    killed.append(server[0])
                    return
            time.sleep(0.05)
        raise AssertionError("the continued run played no episode in 120 s")

    point = resume_point(run, previous(run))
    assert isinstance(point, ResumePoint), point
    res = beside(kill_after_one_more_episode, lambda: run_one(spec))
    assert killed and res["status"] == "env_error" and "SIGKILL" in res["error"], res
    assert res["resumed"] == [point.record(5)] and point.timesteps == 222
    assert res["started_at"] == first["started_at"] and res["episodes"] >= 3
    assert json.loads((run / RESULTS).read_text()) == res


@pytest.mark.parametrize("what", ["missing", "mistyped"])
def test_serve_with_a_malformed_resume_point_is_a_one_line_error(tmp_path: Path, what: str) -> None:
    bad = tmp_path / "point.json"
    if what == "missing":
        bad.write_text('{"episodes": 2}')
    else:  # every field there, one of the wrong type
        run = stopped_run(tmp_path)
        write_point(run, {"steps": 220, "episodes": 2})
        point = resume_point(run, previous(run))
        assert isinstance(point, ResumePoint)
        bad.write_text(point.to_json().replace('"steps": 220', '"steps": "220"'))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation",
            "serve",
            "--level",
            LEVEL,
            "--socket",
            str(tmp_path / "sock"),
            "--out",
            str(tmp_path / "out"),
            "--resume-from",
            str(bad),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --resume-from") and "Traceback" not in proc.stderr
    assert "suite --out OUT --resume" in lines[-1]
    assert not (tmp_path / "sock" / "sock").exists()
