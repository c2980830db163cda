"""Agent image builds: two at once do not break each other, and a source change reuses the
requirements layer (the Dockerfile's `requirements` and `venv` stages, kept as
`sonic-maml-requirements:<key>` and `<key>-venv`).

Needs a Docker daemon (`python -m evaluation docker up`). Light agents only (random, jerk): three
builds, two of them at the same time, from no downloaded wheels and whatever cache the daemon has
(none in CI).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

from evaluation.docker.images import (  # noqa: E402
    BUILD_ID_LABEL,
    LIGHT_REQUIREMENTS,
    VENV_SUFFIX,
    build_agent_image,
    build_messages,
    ensure_base_image,
    image_exists,
    prune_caches,
    requirements_tag,
    wheels_dir,
)
from tests.support import AIRSTRIKER, docker_client_or_skip  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TAGS = {
    "random": "sonic-maml-test-together-random:latest",
    "jerk": "sonic-maml-test-together-jerk:latest",
}
CHANGED = "sonic-maml-test-changed-random:latest"


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = docker_client_or_skip()
    yield client
    for tag in [*TAGS.values(), CHANGED]:
        with contextlib.suppress(Exception):
            client.images.remove(tag, force=True)
    client.close()


def _unnamed_deps(client: docker.DockerClient) -> set[str]:
    """`deps` stages built with no build id (the Dockerfile's default), which no clean-up finds."""
    return {
        i.id for i in client.images.list(all=True, filters={"label": f"{BUILD_ID_LABEL}=manual"})
    }


@pytest.fixture(scope="module")
def unnamed_before(client: docker.DockerClient) -> set[str]:
    return _unnamed_deps(client)


@pytest.fixture(scope="module")
def together(
    client: docker.DockerClient, unnamed_before: set[str]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """`python -m evaluation build` of random and of jerk, started at the same moment, from no
    downloaded wheels (both download them unless one waits for the other's download). Wheels
    already cached are moved aside and serve as pip's index, so no network is needed then."""
    ensure_base_image(client)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheels = wheels_dir(LIGHT_REQUIREMENTS)
    if (wheels / ".complete").exists():
        aside = wheels.with_name(f"{wheels.name}.test-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        wheels.rename(aside)
        env |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(aside)}
    procs = {
        agent: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evaluation",
                "build",
                "--agent",
                agent,
                "--tag",
                tag,
                "--force",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for agent, tag in TAGS.items()
    }
    done = {}
    for agent, proc in procs.items():
        out, _ = proc.communicate(timeout=1800)
        done[agent] = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    if "PIP_FIND_LINKS" in env:
        shutil.rmtree(env["PIP_FIND_LINKS"], ignore_errors=True)
    return done


def _venv_layer(client: docker.DockerClient, tag: str) -> str:
    """The image's first layer above the base: /opt/venv, copied from the requirements stage."""
    base = client.images.get(ensure_base_image(client))
    return client.images.get(tag).attrs["RootFS"]["Layers"][len(base.attrs["RootFS"]["Layers"])]


def test_two_builds_at_once_both_succeed_and_play(
    together: dict[str, subprocess.CompletedProcess[str]],
    client: docker.DockerClient,
    unnamed_before: set[str],
    tmp_path: Path,
) -> None:
    """The clean-up after one build leaves the other's stages alone (it deleted them, once:
    "invalid from flag value deps: No such image") and still deletes its own (a second
    `images.prune` at the same moment is refused by the daemon); both images play."""
    from evaluation.contest.runner import RunSpec, run_one
    from roms_setup.levels import Level

    downloads = [agent for agent, done in together.items() if "pip download" in done.stdout]
    assert len(downloads) == 1, downloads
    for agent, done in together.items():
        assert done.returncode == 0, (agent, done.stdout[-3000:])
        build_id = re.search(r"build id ([0-9a-f]+)", done.stdout)
        assert build_id, done.stdout[-3000:]
        left = client.images.list(all=True, filters={"label": f"{BUILD_ID_LABEL}={build_id[1]}"})
        assert left == [], (agent, "its deps stage was not deleted")
    # the cached stages are built without a build id: no `deps` stage may come with them
    assert _unnamed_deps(client) == unnamed_before, "a deps stage was built with the cached ones"
    for agent, tag in TAGS.items():
        spec = RunSpec(
            agent=agent,
            level=Level(*AIRSTRIKER.split(":")),
            seed=0,
            budget=100,
            results_dir=tmp_path / agent,
            runtime="docker",
            image=tag,
            memory="512m",
        )
        results = run_one(spec)
        assert results["status"] == "budget", (
            agent,
            results,
            (tmp_path / agent / "agent.log").read_text(),
        )
        assert results["timesteps"] == 100


def test_a_source_change_reuses_the_requirements_layer(
    together: dict[str, subprocess.CompletedProcess[str]], client: docker.DockerClient
) -> None:
    """Agents with the same requirements share the venv layer, even built at once in a fresh
    daemon (two copies made at once differed in /opt's time), and a changed source rebuilds
    only the layer above it: the kept requirements image is the same before and after."""
    assert all(done.returncode == 0 for done in together.values())
    base = ensure_base_image(client)
    cache = requirements_tag(base, LIGHT_REQUIREMENTS)
    kept = client.images.get(cache).id
    venv = _venv_layer(client, TAGS["random"])
    assert _venv_layer(client, TAGS["jerk"]) == venv
    assert client.images.get(cache + VENV_SUFFIX).attrs["RootFS"]["Layers"][-1] == venv
    build_agent_image(
        client,
        "random",
        CHANGED,
        base,
        requirements=LIGHT_REQUIREMENTS,
        extra_files={"agent/changed_probe.py": b"WHICH = 'changed'\n"},
        quiet=True,
    )
    assert client.images.get(cache).id == kept
    assert _venv_layer(client, CHANGED) == venv
    assert (
        client.images.get(CHANGED).attrs["RootFS"]["Layers"][-1]
        != client.images.get(TAGS["random"]).attrs["RootFS"]["Layers"][-1]
    )
    out = client.containers.run(
        CHANGED,
        ["-c", "import agent.changed_probe as p; print(p.WHICH)"],
        entrypoint="/opt/venv/bin/python",
        network_mode="none",
        remove=True,
    )
    assert out.decode().strip() == "changed"


def test_prune_drops_the_requirements_cache_not_the_images(
    together: dict[str, subprocess.CompletedProcess[str]], client: docker.DockerClient
) -> None:
    """`docker prune` (here only the light cache: the torch one costs minutes to remake) untags
    the kept requirements and venv stages; the images made from them keep their layers and run."""
    assert all(done.returncode == 0 for done in together.values())
    cache = requirements_tag(ensure_base_image(client), LIGHT_REQUIREMENTS)
    assert image_exists(client, cache)
    removed, _ = prune_caches(client, only=[cache])
    assert sorted(removed) == [cache, cache + VENV_SUFFIX]
    assert not image_exists(client, cache) and not image_exists(client, cache + VENV_SUFFIX)
    out = client.containers.run(
        TAGS["jerk"],
        ["-c", "import numpy, agent.jerk; print('runs')"],
        entrypoint="/opt/venv/bin/python",
        network_mode="none",
        remove=True,
    )
    assert out.decode().strip() == "runs"


def test_two_base_imports_at_once_make_one_image(client: docker.DockerClient) -> None:
    """Two processes that find no base image import it once between them (a lock): two imports
    at once left two images under one tag, and builds in between stood on different ones."""
    tag = "sonic-maml-test-base:twice"
    with contextlib.suppress(Exception):
        client.images.remove(tag, force=True)
    code = (
        "from evaluation.docker.daemon import docker_client\n"
        "from evaluation.docker.images import ensure_base_image\n"
        f"print(ensure_base_image(docker_client(), {tag!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        outs = [proc.communicate(timeout=600)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outs
        assert all(out.strip().endswith(tag) for out in outs), outs
        assert sum("docker import" in out for out in outs) == 1, outs
    finally:
        with contextlib.suppress(Exception):
            client.images.remove(tag, force=True)


def test_a_build_the_daemon_refuses_is_one_line(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    """A Dockerfile without the stage asked for (a context from another version) was a traceback
    of the daemon's 400 answer; it is one UserError line naming the image and the reason."""
    from sonic_common.errors import UserError

    (tmp_path / "Dockerfile").write_text(f"FROM {ensure_base_image(client)} AS requirements\n")
    with pytest.raises(UserError, match=r"^docker build of probe \(the venv\) failed: .*venv"):
        list(build_messages(client, "probe (the venv)", path=str(tmp_path), target="venv"))
