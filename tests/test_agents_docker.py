"""A baseline agent's real image, end to end: build the JERK image, run it to the budget.

Needs a Docker daemon (`python -m evaluation docker up`); skipped with the reason when none
answers. One build (the light image: numpy, gymnasium, pyyaml; about 20 s with overlay2). The
torch image (`ppo2`, `maml`) is not built here, it takes minutes: docs/baselines.md records the
ppo2 run made by hand.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

from evaluation.docker.images import build_agent_image, ensure_base_image, requirements_for  # noqa: E402
from tests.support import docker_client_or_skip  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TEST_IMAGE = "sonic-maml-test-jerk:latest"  # not the user's sonic-maml-agent-jerk:latest
BUDGET = 1500


@pytest.fixture(scope="module")
def jerk_image() -> str:
    client = docker_client_or_skip()
    try:
        base = ensure_base_image(client)
        t0 = time.monotonic()
        build_agent_image(
            client, "jerk", TEST_IMAGE, base, requirements=requirements_for("jerk"), quiet=True
        )
        size = client.images.get(TEST_IMAGE).attrs["Size"]
        print(f"\nbuilt {TEST_IMAGE}: {size / 1e6:.0f} MB in {time.monotonic() - t0:.0f} s")
    finally:
        client.close()
    return TEST_IMAGE


def test_jerk_image_runs_to_the_budget(jerk_image: str, tmp_path: Path) -> None:
    """The server on the host, `python -m agent.jerk` (the image's entry point, with its config
    read from the installed package data) in a locked-down container, Airstriker, to the end of
    the budget; the arguments after `--` reach the agent."""
    from evaluation.contest.runner import RunSpec, run_one
    from roms_setup.levels import Level

    spec = RunSpec(
        agent="jerk",
        level=Level("Airstriker-Genesis-v0", "Level1"),
        seed=0,
        budget=BUDGET,
        results_dir=tmp_path / "run",
        runtime="docker",
        image=jerk_image,
        memory="512m",
        agent_args=["--set", "right_steps=50"],
    )
    results = run_one(spec)
    log = (tmp_path / "run" / "agent.log").read_text()
    assert results["status"] == "budget", (results, log)
    assert results["agent_exit_code"] == 0, (results, log)
    assert results["timesteps"] == BUDGET
    assert results["runtime"] == "docker"
    assert results["score"] is not None
    assert "right_steps=50" in log, log  # the override reached the agent...
    assert "not found, using the built-in defaults" not in log, log  # jerk.yaml shipped
    assert "budget spent" in log, log
    assert results["agent_cmd"].endswith("--set right_steps=50")
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["status"] == "budget"
    rows = (tmp_path / "run" / "monitor.csv").read_text().splitlines()
    assert rows[1] == "r,l,t,cut" and len(rows) >= 3


RAINBOW_IMAGE = "sonic-maml-test-rainbow:latest"


@pytest.fixture(scope="module")
def rainbow_image() -> str:
    """The torch image of the Rainbow agent (minutes the first time: torch's wheels)."""
    client = docker_client_or_skip()
    try:
        base = ensure_base_image(client)
        build_agent_image(
            client,
            "rainbow",
            RAINBOW_IMAGE,
            base,
            requirements=requirements_for("rainbow"),
            quiet=True,
        )
    finally:
        client.close()
    return RAINBOW_IMAGE


def test_rainbow_image_runs_to_the_budget_with_its_memory_limit(
    rainbow_image: str, tmp_path: Path
) -> None:
    """`python -m agent.rainbow` in its container (no --memory: the image's 6g label applies),
    learning from step 40 of a 120-step budget, its checkpoint written through the mount."""
    from evaluation.contest.runner import RunSpec, run_one
    from evaluation.docker.daemon import docker_client
    from evaluation.docker.images import AGENT_MEMORY, image_memory
    from roms_setup.levels import Level

    assert image_memory(docker_client(), rainbow_image) == AGENT_MEMORY["rainbow"] == "6g"
    spec = RunSpec(
        agent="rainbow",
        level=Level("Airstriker-Genesis-v0", "Level1"),
        seed=0,
        budget=120,
        results_dir=tmp_path / "run",
        runtime="docker",
        image=rainbow_image,
        agent_args=["--set", "learning_starts=40", "--set", "capacity=1000"],
    )
    results = run_one(spec)
    log = (tmp_path / "run" / "agent.log").read_text()
    assert results["status"] == "budget" and results["agent_exit_code"] == 0, (results, log)
    assert "rainbow agent: learning from scratch" in log and "budget spent" in log, log
    from agent.checkpoint import load_checkpoint

    saved = load_checkpoint(tmp_path / "run" / "agent" / "checkpoint.pt")
    # one update per transition from the 40th: it learned in the container
    assert saved["updates"] == saved["transitions"] - 39 > 0, saved["updates"]
