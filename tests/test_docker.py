"""The Docker side with a real daemon: one light agent image, containers locked down, OOM seen.

Needs a daemon (`python -m evaluation docker up`); skipped with the reason when none answers.
One image build for the whole session (builds are slow with the vfs storage driver).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

docker = pytest.importorskip("docker")

from evaluation.docker.images import (  # noqa: E402
    LIGHT_REQUIREMENTS,
    build_agent_image,
    ensure_base_image,
    image_exists,
)
from evaluation.docker.runtime import (  # noqa: E402
    OUTPUT_LABEL,
    DockerAgent,
    container_options,
    remove_earlier_containers,
)
from tests.support import docker_client_or_skip  # noqa: E402

pytestmark = pytest.mark.docker

TEST_IMAGE = "sonic-maml-test-random:latest"
# A throwaway agent module baked into the test image next to the real `agent.random_agent`.
PROBE = b'''"""Report what the container looks like from inside, then exit with $PROBE_EXIT."""
import json, os, socket, sys
facts = {"uid": os.getuid(), "gid": os.getgid(), "argv": sys.argv[1:]}
try:
    open("/probe-root", "w").close()
    facts["root_writable"] = True
except OSError:
    facts["root_writable"] = False
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    facts["network"] = True
except OSError:
    facts["network"] = False
facts["tmp_writable"] = os.access("/tmp", os.W_OK)
out = os.environ["AGENT_OUTPUT_DIR"]
with open(os.path.join(out, "probe.json"), "w") as f:
    json.dump(facts, f)
facts["socket_dir"] = sorted(os.listdir(os.environ["CONTEST_SOCKET_DIR"]))
print("PROBE", json.dumps(facts))
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
'''


@pytest.fixture(scope="session")
def client() -> Iterator[object]:
    client = docker_client_or_skip()
    yield client
    client.close()


@pytest.fixture(scope="session")
def image(client: docker.DockerClient) -> str:
    """The test image: the real `random` agent plus `agent.docker_probe`, built once."""
    base = ensure_base_image(client)
    t0 = time.monotonic()
    build_agent_image(
        client,
        "random",
        TEST_IMAGE,
        base,
        requirements=LIGHT_REQUIREMENTS,
        extra_files={"agent/docker_probe.py": PROBE},
        quiet=True,
    )
    size = client.images.get(TEST_IMAGE).attrs["Size"]
    print(f"\nbuilt {TEST_IMAGE}: {size / 1e6:.0f} MB in {time.monotonic() - t0:.0f} s")
    return TEST_IMAGE


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    sock, out = tmp_path / "sock", tmp_path / "out"
    sock.mkdir()
    (sock / "marker").write_text("")
    sock.chmod(0o755)
    return sock, out


def _env(**extra: str) -> dict[str, str]:
    return {"CONTEST_SOCKET_DIR": "/contest/sock", "AGENT_OUTPUT_DIR": "/contest/output", **extra}


def test_options_lock_the_container_down(tmp_path: Path) -> None:
    opts = container_options(
        "img", tmp_path, tmp_path, {}, memory="1g", cpus=0.5, pids=64, gpus=True, name=None
    )
    assert opts["network_mode"] == "none" and opts["read_only"] is True
    assert opts["user"] == "1000:1000" and opts["cap_drop"] == ["ALL"]
    assert opts["mem_limit"] == opts["memswap_limit"] == 1 << 30
    assert opts["nano_cpus"] == 500_000_000 and opts["pids_limit"] == 64
    assert "no-new-privileges" in opts["security_opt"]
    assert [m["Target"] for m in opts["mounts"]] == ["/contest/sock", "/contest/output"]
    assert opts["device_requests"]
    assert opts["labels"] == {OUTPUT_LABEL: str(tmp_path.resolve())}  # which run it writes


def test_container_runs_locked_down_and_is_removed(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    sock, out = _dirs(tmp_path)
    log = tmp_path / "logs" / "agent.log"
    t0 = time.monotonic()
    agent = DockerAgent.start(
        image,
        sock,
        out,
        _env(PROBE_EXIT="3"),
        log_path=log,
        memory="256m",
        entrypoint=["python", "-m", "agent.docker_probe"],
        command=["a", "b"],
    )
    started = time.monotonic() - t0
    container_id = agent.id
    assert agent.wait(60) == 3
    outcome = agent.finish()
    print(f"\ncontainer create+start: {started:.2f} s")
    assert outcome.exit_code == 3 and not outcome.oom_killed
    text = log.read_text()
    assert "PROBE" in text, text
    assert '"uid": 1000' in text and '"gid": 1000' in text
    assert '"root_writable": false' in text
    assert '"network": false' in text
    assert '"tmp_writable": true' in text
    assert '"socket_dir": ["marker"]' in text
    assert '"argv": ["a", "b"]' in text
    assert (out / "probe.json").exists()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(container_id)
    assert agent.finish() == outcome  # idempotent


def test_random_agent_image_through_the_runner(image: str, tmp_path: Path) -> None:
    """End to end: the server on the host, the image's own entry point
    (`python -m agent.random_agent`) in the container, talking over the bind-mounted Unix socket
    until the budget is spent."""
    from evaluation.contest.runner import RunSpec, run_one
    from roms_setup.levels import Level

    spec = RunSpec(
        agent="random",
        level=Level("Airstriker-Genesis-v0", "Level1"),
        seed=0,
        budget=300,
        results_dir=tmp_path / "run",
        runtime="docker",
        image=image,
        memory="512m",
    )
    results = run_one(spec)
    log = (tmp_path / "run" / "agent.log").read_text()
    assert results["timesteps"] == 300, (results, log)
    assert "budget spent" in log, log
    assert results["status"] not in ("oom", "agent_crashed"), results


def test_out_of_memory_is_detected(client: docker.DockerClient, image: str, tmp_path: Path) -> None:
    sock, out = _dirs(tmp_path)
    hog = "b = []\nwhile True: b.append(bytearray(16 << 20))"
    agent = DockerAgent.start(
        image,
        sock,
        out,
        _env(),
        log_path=tmp_path / "oom.log",
        memory="64m",
        entrypoint=["python", "-c", hog],
    )
    assert agent.wait(120) is not None
    outcome = agent.finish()
    assert outcome.oom_killed, outcome
    assert outcome.exit_code == 137


def test_wait_times_out_then_kill_and_finish(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    sock, out = _dirs(tmp_path)
    agent = DockerAgent.start(
        image,
        sock,
        out,
        _env(),
        log_path=tmp_path / "sleep.log",
        memory="64m",
        entrypoint=["sleep", "300"],
    )
    assert agent.wait(0.5) is None
    agent.kill()
    agent.kill()  # twice is fine
    outcome = agent.finish()
    assert outcome.exit_code == 137 and not outcome.oom_killed
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(agent.id)


def test_image_exists(client: docker.DockerClient, image: str) -> None:
    assert image_exists(client, image)
    assert not image_exists(client, "sonic-maml-no-such-image:latest")


def _start_writer(client: docker.DockerClient, image: str, sock: Path, out: Path) -> Any:
    """A container as a killed runner leaves it (no reaper): it keeps writing `out`/tick."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o777)
    writer = "import time\nprint('orphan alive', flush=True)\nwhile True:\n"
    writer += "    open('/contest/output/tick', 'a').write('x')\n    time.sleep(0.05)\n"
    options = container_options(
        image,
        sock,
        out,
        _env(),
        memory="64m",
        cpus=None,
        pids=None,
        gpus=False,
        name=None,
        entrypoint=["python", "-c", writer],
    )
    container = client.containers.create(**options)
    container.start()
    deadline = time.monotonic() + 60
    while not (out / "tick").exists():
        assert time.monotonic() < deadline, container.logs()
        time.sleep(0.1)
    return container


def test_only_the_runs_own_earlier_containers_are_removed(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    """The containers labelled with the run's output directory are killed (their logs kept)
    and removed; another run's container, writing elsewhere, goes on."""
    sock, _ = _dirs(tmp_path)
    mine = _start_writer(client, image, sock, tmp_path / "a=b c" / "agent")
    other = _start_writer(client, image, sock, tmp_path / "other" / "agent")
    try:
        log = tmp_path / "agent.log"
        assert remove_earlier_containers(tmp_path / "a=b c" / "agent", log) == 1
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(mine.id)
        size = (tmp_path / "a=b c" / "agent" / "tick").stat().st_size
        time.sleep(0.5)
        assert (tmp_path / "a=b c" / "agent" / "tick").stat().st_size == size
        assert "orphan alive" in log.read_text()
        other.reload()
        assert other.status == "running"
        assert remove_earlier_containers(tmp_path / "a=b c" / "agent", log) == 0
    finally:
        for c in (mine, other):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


def test_an_orphaned_container_of_an_earlier_attempt_is_removed_before_the_next(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    """The next attempt at a run (here through the runner, asked to resume) removes a
    container its killed predecessor left writing the run's directory."""
    from evaluation.contest.runner import RunSpec, run_one
    from roms_setup.levels import Level

    sock, _ = _dirs(tmp_path)
    orphan = _start_writer(client, image, sock, tmp_path / "run" / "agent")
    try:
        spec = RunSpec(
            agent="random",
            level=Level("Airstriker-Genesis-v0", "Level1"),
            seed=0,
            budget=300,
            results_dir=tmp_path / "run",
            runtime="docker",
            image=image,
            memory="512m",
            resume=True,
        )
        results = run_one(spec)
        assert results["timesteps"] == 300 and "no results.json" in results["resume_refused"]
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(orphan.id)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            orphan.remove(force=True)


def test_a_docker_suite_missing_an_image_fails_before_any_run(tmp_path: Path) -> None:
    """An image not built (or a local-only agent) would fail every run: one line, no suite."""
    import subprocess
    import sys

    docker_client_or_skip()
    root = Path(__file__).resolve().parents[1]
    level = ["--levels", "Airstriker-Genesis-v0:Level1", "--budget", "10", "--runtime", "docker"]
    cases = {
        "random --image random=sonic-maml-test-no-such:latest": "sonic-maml-test-no-such:latest",
        "sb3_ppo": "runs only locally",
    }
    for i, (agents, said) in enumerate(cases.items()):
        out = tmp_path / f"s{i}"
        proc = subprocess.run(
            [sys.executable, "-m", "evaluation", "suite", "--agents", *agents.split()]
            + [*level, "--out", str(out)],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (out / "suite.json").exists()
