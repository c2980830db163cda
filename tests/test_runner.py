"""`evaluation run` end to end: server + local agent processes on Airstriker, supervised."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaluation.contest.agent_process import LocalAgent, parse_memory
from evaluation.contest.records import read_monitor
from evaluation.contest.runner import RunSpec, amend_status, run_one
from roms_setup.levels import Level
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[1]
LEVEL = Level.parse("Airstriker-Genesis-v0:Level1")

# An agent that plays `episodes` whole episodes, then ends the way the test asks.
AGENT = """
import os, signal, sys
from evaluation.contest.client import connect_from_env
env = connect_from_env()
env.action_space.seed(0)
for _ in range({episodes}):
    env.reset()
    while not env.step(env.action_space.sample())[2]:
        pass
env.reset()
for _ in range(5):
    env.step(env.action_space.sample())
{ending}
"""


def agent_cmd(episodes: int, ending: str) -> list[str]:
    return [sys.executable, "-c", AGENT.format(episodes=episodes, ending=ending)]


@pytest.fixture
def results_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="run-"))
    yield base / "results"
    shutil.rmtree(base, ignore_errors=True)


def test_run_random_agent_end_to_end(results_dir: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation",
            "run",
            "--agent",
            "random",
            "--level",
            LEVEL.id,
            "--budget",
            "600",
            "--results-dir",
            str(results_dir),
            "--seed",
            "5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert "status=budget" in last and "score=" in last
    results = json.loads((results_dir / "results.json").read_text())
    assert results["status"] == "budget" and results["timesteps"] == 600
    assert results["agent"] == "random" and results["runtime"] == "local" and results["seed"] == 5
    assert results["agent_exit_code"] == 0 and results["error"] is None
    assert f"score={results['score']:.1f}" in last
    _, rows = read_monitor(results_dir / "monitor.csv")
    assert rows and sum(row.l for row in rows) == results["steps"]
    assert "budget spent after" in (results_dir / "agent.log").read_text()
    assert (results_dir / "progress.csv").read_text().startswith("timesteps,episodes,")


def test_agent_killed_mid_run_keeps_its_episodes(results_dir: Path) -> None:
    spec = RunSpec(
        agent="killed",
        level=LEVEL,
        seed=0,
        budget=100_000,
        results_dir=results_dir,
        agent_cmd=agent_cmd(2, "os.kill(os.getpid(), signal.SIGKILL)"),
    )
    results = run_one(spec)
    assert results["status"] == "agent_crashed"
    assert results["agent_exit_code"] == -9 and "-9" in results["error"]
    _, rows = read_monitor(results_dir / "monitor.csv")
    assert [row.cut for row in rows] == [False, False, True]
    assert rows[2].l == 5 and results["episodes"] == 2
    assert results["score"] == pytest.approx((rows[0].r + rows[1].r) / 2)
    assert json.loads((results_dir / "results.json").read_text()) == results


def test_agent_that_exits_early_with_code_0(results_dir: Path) -> None:
    spec = RunSpec(
        agent="quitter",
        level=LEVEL,
        seed=0,
        budget=100_000,
        results_dir=results_dir,
        agent_cmd=agent_cmd(1, "env.close()"),
    )
    results = run_one(spec)
    assert results["status"] == "agent_exited" and results["agent_exit_code"] == 0
    assert results["episodes"] == 1


def test_agent_that_never_connects(results_dir: Path) -> None:
    spec = RunSpec(
        agent="broken",
        level=LEVEL,
        seed=0,
        budget=1000,
        results_dir=results_dir,
        agent_cmd=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
    )
    results = run_one(spec)
    assert results["status"] == "agent_crashed" and results["agent_exit_code"] == 3
    assert results["timesteps"] == 0 and results["score"] is None
    assert "boom" in (results_dir / "agent.log").read_text()


def test_agent_out_of_memory(results_dir: Path) -> None:
    spec = RunSpec(
        agent="hungry",
        level=LEVEL,
        seed=0,
        budget=1000,
        results_dir=results_dir,
        memory="400m",
        agent_cmd=[sys.executable, "-c", "x = bytearray(2 << 30)"],
    )
    results = run_one(spec)
    assert results["status"] == "oom" and results["agent_oom"] is True


@pytest.mark.parametrize("shared_lifeline", [False, True], ids=["own-pipe", "sigterm"])
def test_local_agent_kill_reaches_its_children(tmp_path: Path, shared_lifeline: bool) -> None:
    """kill() ends the agent's tree: by closing the guard's own pipe, or (a runner's agent,
    whose guard shares the server's lifeline, which stays open here) by SIGTERM."""
    lifeline_r, lifeline_w = os.pipe()
    pid_file = tmp_path / "child.pid"
    script = (
        "import os, subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r} + '.tmp', 'w').write(str(p.pid))\n"
        f"os.replace({str(pid_file)!r} + '.tmp', {str(pid_file)!r})\n"
        "time.sleep(60)\n"
    )
    lifeline = lifeline_r if shared_lifeline else None
    agent = LocalAgent.start(
        [sys.executable, "-c", script], {}, tmp_path / "a.log", lifeline=lifeline
    )
    os.close(lifeline_r)
    end = time.monotonic() + 30
    while not pid_file.exists():
        assert agent.wait(0.05) is None, (tmp_path / "a.log").read_text()
        assert time.monotonic() < end
    child = Path(f"/proc/{int(pid_file.read_text())}")
    assert child.exists()
    agent.kill()
    outcome = agent.finish()
    os.close(lifeline_w)
    assert outcome.exit_code == -9 and not outcome.oom_killed

    def gone() -> bool:
        try:
            return (child / "stat").read_text().split(") ")[1].startswith("Z")
        except (OSError, IndexError):
            return True

    end = time.monotonic() + 10
    while not gone():
        assert time.monotonic() < end, "the agent's child survived kill()"
        time.sleep(0.05)


def test_amend_status() -> None:
    assert amend_status("budget", 1, False, False) == "budget"
    assert amend_status("agent_exited", 0, False, False) == "agent_exited"
    assert amend_status("agent_exited", 1, False, False) == "agent_crashed"
    assert amend_status("agent_exited", -9, True, False) == "oom"
    assert amend_status("interrupted", 2, False, True) == "agent_crashed"
    assert amend_status("interrupted", 2, False, False) == "interrupted"
    assert amend_status("protocol_error", 1, False, False) == "protocol_error"
    assert parse_memory("4g") == 4 << 30 and parse_memory("512m") == 512 << 20
    with pytest.raises(ValueError, match="below the 64m"):  # `--memory 4` meant 4g
        parse_memory("4")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--agent", "nosuchagent"], "unknown agent 'nosuchagent'"),
        (["--level", "NoSuchGame-Genesis-v0:Level1"], "unknown game"),
        (["--level", "SonicTheHedgehog-Genesis-v0:GreenHillZone.Act1"], "is not imported"),
        (["--results-dir", "/dev/null/results"], "cannot create results dir"),
        (["--budget", "0"], "--budget must be positive"),
    ],
)
def test_run_cli_bad_input_is_one_line(results_dir: Path, args: list[str], message: str) -> None:
    base = {
        "--agent": "random",
        "--level": LEVEL.id,
        "--budget": "10",
        "--results-dir": str(results_dir),
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [x for kv in base.items() for x in kv]
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation", "run", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sigterm_to_run_cli_records_interrupted_and_leaves_nothing(results_dir: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evaluation",
            "run",
            "--agent",
            "random",
            "--level",
            LEVEL.id,
            "--budget",
            "1000000",
            "--results-dir",
            str(results_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = results_dir / "monitor.csv"
    wait_until(
        lambda: progress.is_file() and len(progress.read_text().splitlines()) > 2,
        120,
        "the first episode's record",
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    said = [ln for ln in err.strip().splitlines() if "elapsed" not in ln]  # not progress lines
    assert proc.returncode == 130 and said == ["interrupted"], err
    results = json.loads((results_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and results["error"] == "server stopped by SIGTERM"
    assert results["episodes"] >= 1
    leftovers = subprocess.run(["pgrep", "-f", str(results_dir)], capture_output=True, text=True)
    assert leftovers.stdout == ""
