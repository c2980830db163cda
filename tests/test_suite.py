"""Suites with real runs: the random agent on Airstriker (a ROM shipped with stable-retro).

The same agent runs under a second name (`random_b=random`), so the report has two columns.
Each run is 200 timesteps and takes about a second.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.contest.records import last_reading
from evaluation.suites.suite import SuiteConfig, open_suite
from evaluation.suites.suite_cli import parse_agent_args
from sonic_common.errors import UserError
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[1]
LEVEL = "Airstriker-Genesis-v0:Level1"
SLUG = "Airstriker-Genesis-v0_Level1"
ARGS = [
    "--agents",
    "random,random_b=random",
    "--levels",
    LEVEL,
    "--seeds",
    "2",
    "--budget",
    "200",
    "--workers",
    "2",
]


def suite(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evaluation", "suite", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results(out: Path, agent: str, seed: int) -> Path:
    return out / "runs" / agent / SLUG / f"seed{seed}" / "results.json"


def set_status(path: Path, status: str) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "status": status}))


@pytest.fixture(scope="module")
def finished_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suite") / "s"
    proc = suite(*ARGS, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_suite_runs_every_combination_and_reports(finished_suite: Path) -> None:
    out = finished_suite
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted((r["agent"], r["seed"]) for r in rows) == [
        ("random", "0"),
        ("random", "1"),
        ("random_b", "0"),
        ("random_b", "1"),
    ]
    assert {r["status"] for r in rows} == {"budget"}
    assert {r["timesteps"] for r in rows} == {"200"}
    assert all(r["level"] == LEVEL and r["score"] != "" for r in rows)
    # same agent, same seed, same frame-skip seed: the alias scores exactly like the original
    by = {(r["agent"], r["seed"]): r["score"] for r in rows}
    assert by["random", "0"] == by["random_b", "0"]

    report = (out / "report.md").read_text()
    assert "| level | random | random_b |" in report
    assert f"| `{LEVEL}` |" in report
    assert "| random | " in report and "| random_b | " in report
    for png in (f"curves/{SLUG}.png", "curves/overall.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
        assert f"]({png})" in report
    saved = json.loads((out / "suite.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["aliases"] == {"random_b": "random"}
    res = json.loads(results(out, "random_b", 0).read_text())
    assert res["agent"] == "random_b" and "agent.random" in res["agent_cmd"]


def test_resume_skips_finished_runs_and_redoes_the_rest(
    finished_suite: Path, tmp_path: Path
) -> None:
    out = Path(shutil.copytree(finished_suite, tmp_path / "s", symlinks=True))  # the others' stays
    kept, interrupted = results(out, "random", 0), results(out, "random", 1)
    crashed, deleted = results(out, "random_b", 0), results(out, "random_b", 1)
    set_status(interrupted, "interrupted")
    set_status(crashed, "agent_crashed")
    shutil.rmtree(deleted.parent)
    before = {p: p.stat().st_mtime_ns for p in (kept, kept.with_name("monitor.csv"), crashed)}

    proc = suite("--out", out, "--resume")  # the old `--resume DIR` below
    assert proc.returncode == 0, proc.stderr
    assert "2 done, 2 to run" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before  # finished and failed: untouched
    assert json.loads(interrupted.read_text())["status"] == "budget"
    assert json.loads(deleted.read_text())["status"] == "budget"
    assert json.loads(crashed.read_text())["status"] == "agent_crashed"
    assert "agent_crashed" in (out / "summary.csv").read_text()

    # the same command again: nothing to do; with --retry-failed the failed run is redone
    proc = suite(*ARGS, "--out", out)
    assert proc.returncode == 0 and "4 done, 0 to run" in proc.stderr, proc.stderr
    proc = suite("--resume", out, "--retry-failed")
    assert proc.returncode == 0 and "3 done, 1 to run" in proc.stderr, proc.stderr
    assert json.loads(crashed.read_text())["status"] == "budget"
    assert kept.stat().st_mtime_ns == before[kept]


def test_conflicting_arguments_are_a_one_line_error(finished_suite: Path) -> None:
    proc = suite(*ARGS[:-4], "--budget", "300", "--out", finished_suite)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "budget 300" in lines[0]
    proc = suite("--resume", finished_suite, "--agents", "random_b=jerk")
    assert proc.returncode == 2 and "aliases" in proc.stderr


def test_more_seeds_and_agents_extend_a_suite(finished_suite: Path, tmp_path: Path) -> None:
    """More seeds (a list) and a new agent add their runs; the runs the suite has stay as they
    were (same files, same mtimes)."""
    finished_suite = Path(shutil.copytree(finished_suite, tmp_path / "s", symlinks=True))
    runs = sorted((finished_suite / "runs").glob("*/*/seed*/results.json"))
    before = {p: p.stat().st_mtime_ns for p in runs}
    proc = suite(
        "--resume", finished_suite, "--seeds", "0,1,3", "--agents", "random,random_b=random,jerk"
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 done, 5 to run" in proc.stderr, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in runs} == before
    saved = json.loads((finished_suite / "suite.json").read_text())
    assert saved["seeds"] == [0, 1, 3] and saved["agents"] == ["random", "random_b", "jerk"]
    assert (finished_suite / "runs" / "random" / SLUG / "seed3" / "results.json").is_file()
    assert (finished_suite / "runs" / "jerk" / SLUG / "seed1" / "results.json").is_file()


def test_report_only(finished_suite: Path) -> None:
    (finished_suite / "report.md").unlink()
    proc = suite("--report-only", "--out", finished_suite)
    assert proc.returncode == 0, proc.stderr
    assert "| random_b |" in (finished_suite / "report.md").read_text()
    # a mistyped --baseline is an error, not a report quietly without its comparison
    proc = suite("--report-only", "--out", finished_suite, "--baseline", "random_c")
    assert proc.returncode == 2 and "--baseline random_c" in proc.stderr
    assert "random_b" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = suite("--report-only", "--out", finished_suite, "--baseline", "random_b")
    assert proc.returncode == 0, proc.stderr
    assert "Probability of improvement" in (finished_suite / "report.md").read_text()


def test_agent_args_an_agent_refuses_stop_the_suite_before_any_run(tmp_path: Path) -> None:
    out = tmp_path / "s"
    args = ["--agents", "ppo2,random", "--levels", LEVEL, "--budget", "10", "--out", out]
    proc = suite(*args, "--agent-args", "ppo2=--set nsteps=abc")
    lines = proc.stderr.strip().splitlines()  # a line saying what is checked, then the error
    assert proc.returncode == 2 and lines[0] == "checking agent ppo2's --agent-args ...", lines
    assert lines[1:] == [
        "error: agent ppo2 refuses its --agent-args (--set nsteps=abc): nsteps='abc' in "
        "ppo2.yaml (--set): nsteps takes a whole number"
    ]
    assert not out.exists()
    proc = suite(*args, "--agent-args", "random=--seed 3")  # random takes no argument at all
    assert proc.returncode == 2 and "unrecognized arguments: --seed 3" in proc.stderr
    assert not out.exists()


def test_a_refused_suite_leaves_nothing_and_a_broken_suite_json_is_one_line(
    tmp_path: Path,
) -> None:
    new = tmp_path / "new"
    for bad in (["--budget", "-5"], ["--baseline", "nosuch"]):
        proc = suite("--agents", "random", "--levels", LEVEL, "--out", new, *bad)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not new.exists()
    assert (
        "--budget -5"
        in suite("--agents", "random", "--levels", LEVEL, "--budget", "-5", "--out", new).stderr
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "suite.json").write_text("[]")
    for args in (["--resume"], ["--report-only"]):
        proc = suite("--out", broken, *args)
        assert proc.returncode == 2 and "is not a suite file" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("how", ["terminal", "sigint", "sigterm"])
def test_ctrl_c_ends_running_runs_as_interrupted(tmp_path: Path, how: str) -> None:
    """SIGINT to the process group, as a terminal sends it, or SIGINT / SIGTERM only to the
    suite process (the suite then stops the running runs' servers itself). Meanwhile a second
    suite on the same directory is refused."""
    out = tmp_path / "s"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evaluation",
            "suite",
            "--agents",
            "random",
            "--levels",
            LEVEL,
            "--seeds",
            "2",
            "--budget",
            "1000000",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    first = out / "runs" / "random" / SLUG / "seed0"
    try:
        monitor = first / "monitor.csv"

        def stepped() -> bool:  # one episode is recorded
            assert proc.poll() is None, "the suite ended before its first episode"
            return monitor.is_file() and len(monitor.read_text().splitlines()) > 2

        wait_until(stepped, 120, "the first run's first episode")
        other = suite("--resume", out)
        assert other.returncode == 2 and "another suite" in other.stderr
        if how == "terminal":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    res = json.loads((first / "results.json").read_text())
    assert res["status"] == "interrupted", res
    assert 0 < res["timesteps"] < 1_000_000
    assert not (out / "runs" / "random" / SLUG / "seed1" / "results.json").exists()
    assert "--resume" in err
    assert "interrupted" in (out / "summary.csv").read_text()


def test_unknown_agent_fails_before_anything_is_written(tmp_path: Path) -> None:
    proc = suite("--agents", "nosuch", "--levels", LEVEL, "--budget", "10", "--out", tmp_path / "s")
    assert proc.returncode == 2 and "unknown agent 'nosuch'" in proc.stderr
    assert not (tmp_path / "s" / "suite.json").exists()


def test_a_docker_suite_without_a_daemon_fails_before_any_run(tmp_path: Path) -> None:
    """Every run would fail: one line naming the fix, and no suite (not a suite of failures)."""
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation", "suite", "--agents", "random", "--levels", LEVEL]
        + ["--budget", "10", "--runtime", "docker", "--out", str(tmp_path / "s")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-daemon.sock'}"},
    )
    assert proc.returncode == 2 and "no Docker daemon answers at DOCKER_HOST" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "suite.json").exists() and not (tmp_path / "s" / "runs").exists()


def test_open_suite_checks_arguments(tmp_path: Path) -> None:
    given = {
        "agents": ["a"],
        "levels": [LEVEL],
        "levels_spec": LEVEL,
        "seeds": 2,
        "budget": 100,
        "wallclock_s": 60.0,
    }
    config = open_suite(tmp_path, given)
    assert open_suite(tmp_path, {"seeds": 2}) == config  # same arguments: the saved suite
    with pytest.raises(UserError, match="agents"):
        open_suite(tmp_path, {"agents": ["b"]})  # not a superset: another suite
    grown = open_suite(tmp_path, {"agents": ["a", "b"], "seeds": [1, 5]})
    assert grown.agents == ["a", "b"] and grown.seeds == [0, 1, 5]
    assert open_suite(tmp_path, {}) == grown  # saved as grown
    with pytest.raises(UserError, match="needs --agents"):
        open_suite(tmp_path / "new", {"levels": [LEVEL]})
    with pytest.raises(UserError, match="twice"):
        SuiteConfig(["a", "a"], [LEVEL], LEVEL, 1, 1, 1.0).validate()
    with pytest.raises(UserError, match="not in --agents"):
        SuiteConfig(["a"], [LEVEL], LEVEL, 1, 1, 1.0, agent_args={"b": []}).validate()


def test_agent_args_and_progress_reading(tmp_path: Path) -> None:
    assert parse_agent_args(['ppo=--lr 3e-4 --name "a b"']) == {
        "ppo": ["--lr", "3e-4", "--name", "a b"]
    }
    with pytest.raises(UserError):
        parse_agent_args(["--lr 3"])
    (tmp_path / "progress.csv").write_text(
        "timesteps,episodes,elapsed_s,mean_return_last10\n50000,3,1.0,\n100000,7,2.0,5.5\n"
    )
    assert last_reading(tmp_path) == (100000, 2.0)
    with open(tmp_path / "progress.csv", "a") as f:
        f.write("150000,9,3")  # a line being written: not read until whole
    assert last_reading(tmp_path) == (100000, 2.0)
    for damaged in ("150000,9,nan,\n", "150000,9,inf,\n", "15²000,9,3.0,\n", "150000,9\n"):
        (tmp_path / "progress.csv").write_text(
            "timesteps,episodes,elapsed_s,mean_return_last10\n100000,7,2.0,5.5\n" + damaged
        )
        assert last_reading(tmp_path) == (100000, 2.0), damaged  # the last line that is one
    assert last_reading(tmp_path / "missing") == (0, 0.0)
    # read from the last 512 bytes: the cut first line of that tail is not read as a line
    (tmp_path / "progress.csv").write_text(
        "timesteps,episodes,elapsed_s,mean_return_last10\n"
        + "123456,7,2.0,5.5\n" * 40
        + "damaged\n" * 62  # 496 bytes: the tail begins with "23456,7,2.0,5.5"
    )
    assert last_reading(tmp_path) == (0, 0.0)  # not 23456


def test_image_per_agent_name_for_docker(tmp_path: Path) -> None:
    """--image NAME=TAG: NAME runs that image (e.g. ppo2 with a baked-in joint checkpoint)."""
    from evaluation.suites.suite import SuiteRunner
    from evaluation.suites.suite_cli import parse_images

    assert parse_images(["joint=sonic-maml-pipeline-joint:latest"]) == {
        "joint": "sonic-maml-pipeline-joint:latest"
    }
    with pytest.raises(UserError, match="NAME=TAG"):
        parse_images(["joint"])
    config = SuiteConfig(
        ["joint", "ppo2", "plain"],
        [LEVEL],
        LEVEL,
        1,
        10,
        60.0,
        runtime="docker",
        aliases={"joint": "ppo2", "plain": "ppo2"},
        images={"joint": "pipe-joint:1"},
    )
    config.validate()
    runner = SuiteRunner(config, tmp_path, 1)
    from evaluation.suites.suite import RunKey

    assert runner.spec(RunKey("joint", LEVEL, 0)).image == "pipe-joint:1"
    assert runner.spec(RunKey("plain", LEVEL, 0)).image == "sonic-maml-agent-ppo2:latest"
    assert runner.spec(RunKey("ppo2", LEVEL, 0)).image is None  # the runner's default
    with pytest.raises(UserError, match="not in --agents"):
        SuiteConfig(["a"], [LEVEL], LEVEL, 1, 1, 1.0, images={"b": "x"}).validate()


def one_run_suite(out: Path) -> SuiteConfig:
    """A suite of one short run: random on LEVEL, seed 0."""
    return open_suite(
        out,
        {
            "agents": ["random"],
            "levels": [LEVEL],
            "levels_spec": LEVEL,
            "seeds": 1,
            "budget": 100,
            "wallclock_s": 60.0,
        },
    )


def test_a_stopped_run_that_cannot_continue_now_stays_resumable(tmp_path: Path) -> None:
    """A run stopped at its agent's resume point, whose next attempt fails before it starts
    (here: its server does not start), is kept as it was, `interrupted` with the error, its
    point in place: the next resume continues it, rather than recording env_error over hours
    of play."""
    from evaluation.suites.suite import SuiteRunner, todo

    out = tmp_path / "s"
    config = one_run_suite(out)
    run = results(out, "random", 0).parent
    (run / "agent").mkdir(parents=True)
    (run / "agent" / "resume.json").write_text('{"steps": 50, "episodes": 1}')
    stopped = {"status": "running", "timesteps": 70, "score": 3.0, "episodes": 1}
    (run / "results.json").write_text(json.dumps(stopped))
    asked: list[bool] = []

    def server_does_not_start(spec: object) -> dict[str, object]:
        asked.append(bool(getattr(spec, "resume", False)))
        raise UserError("the environment server did not start: exit code 1")

    SuiteRunner(config, out, 1, run_one=server_does_not_start).run(list(config.run_keys()))
    saved = json.loads(results(out, "random", 0).read_text())
    assert asked == [True]
    assert saved["status"] == "interrupted" and "could not continue" in saved["error"]
    assert saved["timesteps"] == 70 and saved["score"] == 3.0
    assert (run / "agent" / "resume.json").is_file()
    assert len(todo(config, out, retry_failed=False)[0]) == 1  # resume tries it again


@pytest.mark.parametrize("stopped", [True, False])
def test_a_run_whose_server_dies_while_the_suite_stops_is_redone(
    tmp_path: Path, stopped: bool
) -> None:
    """Ctrl-C can reach a server before it listens: run_one then raises the server's start
    error. While the suite is stopping that run is `interrupted` (redone on resume), not
    the environment's failure; the same error in a suite that is not stopping stays one."""
    from evaluation.suites.suite import SuiteRunner, todo

    out = tmp_path / "s"
    config = one_run_suite(out)
    runner: SuiteRunner

    def server_stopped_before_it_listened(spec: object) -> dict[str, object]:
        if stopped:
            runner.stop.set()  # what Ctrl-C does, as the server gets SIGTERM
        raise UserError("the environment server did not start: stopped by SIGTERM")

    runner = SuiteRunner(config, out, 1, run_one=server_stopped_before_it_listened)
    outcome = runner.run(list(config.run_keys()))
    saved = json.loads(results(out, "random", 0).read_text())
    assert [r["status"] for _, r in outcome.done] == [saved["status"]]
    if stopped:
        assert saved["status"] == "interrupted" and saved["status_at_interrupt"] == "env_error"
        assert len(todo(config, out, retry_failed=False)[0]) == 1  # resume redoes it
    else:
        assert saved["status"] == "env_error" and "did not start" in saved["error"]
        assert todo(config, out, retry_failed=False)[0] == []


@pytest.mark.parametrize(
    "content", ["[1, 2]", "[" * 100_000 + "]" * 100_000, '"budget"'], ids=["list", "deep", "str"]
)
def test_a_results_json_that_is_no_object_is_a_run_to_redo(tmp_path: Path, content: str) -> None:
    """In the local runtime an agent can write its run's results.json: something that is not
    a JSON object (a list, a nesting past the parser's recursion limit) must not crash the
    suite's resume; the run is played again."""
    from evaluation.suites.suite import RunKey, todo

    config = SuiteConfig(["random"], [LEVEL], LEVEL, [0], 100, 60.0)
    out = tmp_path / "s"
    [key] = list(config.run_keys())
    key.dir(out).mkdir(parents=True)
    (key.dir(out) / "results.json").write_text(content)
    assert todo(config, out, retry_failed=False) == ([RunKey("random", LEVEL, 0)], [])


def test_the_agent_logs_tail_shows_no_terminal_escapes(tmp_path: Path) -> None:
    from evaluation.contest.run_cli import log_tail

    log = tmp_path / "agent.log"
    log.write_bytes(b"ok\r\n\x1b]0;pwned\x07title\n\x1b[2J\x1b[Hcleared\r\xc2\x9bfake\n\tindent\n")
    shown = ["ok", "?]0;pwned?title", "?[2J?[Hcleared", "?fake", "\tindent"]  # \r: a new line
    assert log_tail(log, 10) == shown
