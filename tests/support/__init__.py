"""Helpers shared by the tests, imported normally (`from tests.support import AIRSTRIKER`; the
repository root is on the path through pytest's `pythonpath`); fixtures stay in conftest.py."""

from __future__ import annotations

import os
from pathlib import Path
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


def lifelines(token: str) -> tuple[str, str]:
    """The pipe a run's agent watcher (the local guard's stdin, or the Docker reaper's last
    argument) and its server (`--lifeline-fd`) each watch, as /proc shows them ("pipe:[N]"),
    among the processes whose command line contains `token`."""
    watcher = server = ""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if not entry.name.isdigit() or token.encode() not in b" ".join(argv):
                continue
            if any(a.endswith(b"agent_guard.py") for a in argv):
                watcher = os.readlink(entry / "fd" / "0")
            elif b"evaluation.docker.reaper" in argv:
                watcher = os.readlink(entry / "fd" / argv[-2].decode())  # argv ends with b""
            elif b"--lifeline-fd" in argv:
                fd = argv[argv.index(b"--lifeline-fd") + 1].decode()
                server = os.readlink(entry / "fd" / fd)
        except OSError:
            continue
    assert watcher and server, (watcher, server)
    return watcher, server
