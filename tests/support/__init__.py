"""Helpers shared by the tests, imported normally (`from tests.support import AIRSTRIKER`; the
repository root is on the path through pytest's `pythonpath`); fixtures stay in conftest.py."""

from __future__ import annotations

from typing import Any

AIRSTRIKER = "Airstriker-Genesis-v0:Level1"  # ships with stable-retro
BREAKOUT = "Breakout-Atari2600-v0:Start"  # an Atari 2600 ROM bundled with ale-py


def docker_client_or_skip(timeout: float = 600) -> Any:
    """A client of the Docker daemon (waiting up to `timeout` s for it), or the test skipped
    with the fix (CI makes no daemon a failure: REQUIRE_DOCKER=1 in the Makefile)."""
    import pytest

    from evaluation.docker.daemon import find_daemon

    found = find_daemon(timeout=timeout)
    if found is None:
        pytest.skip(
            "no Docker daemon answers (run `python -m evaluation docker up` as root, "
            "or set DOCKER_HOST)"
        )
    return found[1]
