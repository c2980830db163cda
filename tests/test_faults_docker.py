"""Attacks from inside a locked-down agent container, and a runner killed under a container.

Needs a daemon (`python -m evaluation docker up`); skipped with the reason when none answers.
One light image: the real `agent.random_agent` plus `agent.attack`, which plays an episode, then
does what ATTACK (an environment variable) names: truncate the shared `ob` file before every step,
or try to write outside its output directory, or print 40 MB, or play on forever.
"""

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

docker = pytest.importorskip("docker")

from evaluation.contest.records import read_monitor, score  # noqa: E402
from evaluation.contest.runner import RunSpec, run_one  # noqa: E402
from evaluation.docker.daemon import find_daemon  # noqa: E402
from evaluation.docker.images import LIGHT_REQUIREMENTS, build_agent_image, ensure_base_image  # noqa: E402
from roms_setup.levels import Level  # noqa: E402
from tests.support import docker_client_or_skip, lifelines, no_leftovers  # noqa: E402

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
LEVEL = Level.parse("Airstriker-Genesis-v0:Level1")
IMAGE = "sonic-maml-test-attack:latest"
ATTACK = b'''"""A hostile agent for the fault tests (see tests/test_faults_docker.py)."""
import json, os, sys
from evaluation.contest.client import RemoteEnvClosed, connect_from_env
out = os.environ["AGENT_OUTPUT_DIR"]
sock = os.environ["CONTEST_SOCKET_DIR"]
attack = sys.argv[1]
print("ATTACK", attack, flush=True)
env = connect_from_env()
env.action_space.seed(0)
env.reset()
while not env.step(env.action_space.sample())[2]:
    pass
open(os.path.join(out, "played"), "w").write("yes")
tried = {}
if attack == "escape":
    fake = json.dumps({"status": "budget", "score": 99999.0})
    for path in ("/contest/results.json", os.path.join(out, "..", "results.json"),
                 os.path.join(sock, "results.json"), "/results.json"):
        try:
            with open(path, "w") as f:
                f.write(fake)
            tried[path] = "written"
        except OSError as e:
            tried[path] = e.__class__.__name__
    try:
        os.symlink("/etc/passwd", os.path.join(out, "link"))
        tried["symlink"] = "made"
    except OSError as e:
        tried["symlink"] = e.__class__.__name__
    print("TRIED", json.dumps(tried), flush=True)
if attack == "flood":
    line = "x" * 1000 + "\\n"
    for _ in range(40_000):  # 40 MB: more than the daemon keeps and the log takes
        sys.stdout.write(line)
    print("FLOOD ENDED", flush=True)
try:
    while True:
        env.reset()
        done = False
        while not done:
            if attack == "truncate":
                os.truncate(os.path.join(sock, "ob"), 0)
            done = env.step(env.action_space.sample())[2]
except RemoteEnvClosed:
    pass
'''


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    client = docker_client_or_skip()
    build_agent_image(
        client,
        "attack",
        IMAGE,
        ensure_base_image(client),
        requirements=LIGHT_REQUIREMENTS,
        extra_files={"agent/attack.py": ATTACK},
        module="agent.attack",
        quiet=True,
    )
    yield IMAGE
    client.close()


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dfaults-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def containers_of(image: str) -> list[object]:
    found = find_daemon(timeout=30)
    assert found is not None
    # sparse: ids only, no lookup that a container the reaper removes meanwhile would fail
    return found[1].containers.list(all=True, sparse=True, filters={"ancestor": image})


def spec(base: Path, attack: str, budget: int) -> RunSpec:
    return RunSpec(
        agent="attack",
        level=LEVEL,
        seed=0,
        budget=budget,
        results_dir=base / "r",
        runtime="docker",
        image=IMAGE,
        memory="512m",
        agent_args=[attack],
    )


def test_1_container_truncating_ob_does_not_kill_the_server(image: str, base: Path) -> None:
    res = run_one(spec(base, "truncate", 1500))
    assert res["status"] == "budget" and res["timesteps"] == 1500, res
    _, rows = read_monitor(base / "r" / "monitor.csv")
    assert res["episodes"] == len([r for r in rows if not r.cut]) >= 1
    assert res["score"] == pytest.approx(score(rows))
    assert containers_of(image) == []


def test_5_container_cannot_write_outside_its_output_directory(image: str, base: Path) -> None:
    res = run_one(spec(base, "escape", 1500))
    log = (base / "r" / "agent.log").read_text()
    tried = json.loads(log.split("TRIED ", 1)[1].splitlines()[0])
    assert "written" not in tried.values(), tried
    assert res["status"] == "budget" and res["score"] != 99999.0, res
    assert json.loads((base / "r" / "results.json").read_text()) == res
    assert not (base / "results.json").exists() and not (ROOT / "results.json").exists()
    out = (base / "r" / "agent").stat()
    if os.geteuid() == 0:  # given to the container's user, closed to every other one
        assert (out.st_uid, out.st_mode & 0o777) == (1000, 0o700), oct(out.st_mode)
    assert containers_of(image) == []


@pytest.mark.parametrize("cap", [None, 2**20], ids=["daemon's bound", "log's cap"])
def test_5_container_printing_without_end_leaves_a_bounded_log(
    image: str, base: Path, cap: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon keeps the last 2 × 8 MB of the output; the run's agent.log takes the last
    LOG_MAX_BYTES of that (here also lowered, to see the cut)."""
    from evaluation.docker import runtime

    if cap is not None:
        monkeypatch.setattr(runtime, "LOG_MAX_BYTES", cap)
    res = run_one(spec(base, "flood", 1500))
    assert res["status"] == "budget" and res["timesteps"] == 1500, res
    _, rows = read_monitor(base / "r" / "monitor.csv")
    assert res["score"] == pytest.approx(score(rows))
    log = (base / "r" / "agent.log").read_bytes()
    assert len(log) <= runtime.LOG_MAX_BYTES + 100, len(log)
    assert b"FLOOD ENDED" in log[-4096:]  # the end is kept, the start dropped
    if cap is not None:
        assert log.startswith(b"(the agent's first "), log[:200]
        assert b"bytes of output cut)\n" in log[:200]
    assert containers_of(image) == []


def test_2_sigkilled_runner_leaves_no_container(image: str, base: Path) -> None:
    d = base / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evaluation",
            "run",
            "--agent",
            "attack",
            "--level",
            LEVEL.id,
            "--budget",
            "1000000",
            "--results-dir",
            str(d),
            "--runtime",
            "docker",
            "--image",
            IMAGE,
            "--memory",
            "512m",
            "--",
            "play",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 180
        while not (d / "agent" / "played").exists():
            assert proc.poll() is None and time.monotonic() < end
            time.sleep(0.1)
        assert len(containers_of(image)) == 1
        # the reaper acts once the server's lifeline has closed too: it watches the same pipe
        reaper_lifeline, server_lifeline = lifelines(str(base))
        assert reaper_lifeline == server_lifeline and reaper_lifeline.startswith("pipe:")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        end = time.monotonic() + 60
        while containers_of(image):
            assert time.monotonic() < end, "the agent's container outlived its runner"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    no_leftovers(str(base), timeout=30)  # the server has published its records and exited
    res = json.loads((d / "results.json").read_text())
    assert res["status"] == "interrupted" and res["episodes"] >= 1, res
    assert "ATTACK play" in (d / "agent.log").read_text()  # the container's logs were saved
