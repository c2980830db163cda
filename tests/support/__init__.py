"""Helpers shared by the tests, imported normally (`from tests.support import AIRSTRIKER`; the
repository root is on the path through pytest's `pythonpath`); fixtures stay in conftest.py."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

AIRSTRIKER = "Airstriker-Genesis-v0:Level1"  # ships with stable-retro
BREAKOUT = "Breakout-Atari2600-v0:Start"  # an Atari 2600 ROM bundled with ale-py


def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Polls `condition` until it holds; fails naming `what` after `timeout` s (generous: the
    suite shares 2 cores with whatever else runs)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def beside(fault: Callable[[], None], main: Callable[[], T]) -> T:
    """Runs `fault` (a thread that waits for a moment, then injects a fault) while `main` runs,
    and returns main's result; what `fault` raised (it timed out waiting) is raised here, not
    lost in its thread."""
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(fault)
        result = main()
        try:
            done.result()
        except AssertionError as e:  # the fault never came: say how the run ended instead
            raise AssertionError(f"{e}; meanwhile the run ended: {result!r}") from e
    return result


def processes_with(token: str, environ: bool = False) -> list[int]:
    """Live (non-zombie) processes whose command line (or, with `environ`, whose environment:
    a local agent learns its output directory there) contains `token`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes()
            if environ:
                text += (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if token.encode() in text.replace(b"\0", b" ") and state != "Z":
            found.append(int(entry.name))
    return found


def no_leftovers(token: str, timeout: float = 20.0) -> None:
    """Every process of the run has ended (the harness cleans up within a few seconds)."""
    end = time.monotonic() + timeout
    while processes_with(token):
        assert time.monotonic() < end, f"left running: {processes_with(token)}"
        time.sleep(0.1)


def docker_client_or_skip(timeout: float = 600) -> Any:
    """A client of the Docker daemon (waiting up to `timeout` s for it), or the test skipped
    with the fix; failed instead under REQUIRE_DOCKER=1 (CI), so that a daemon lost mid-run
    cannot turn the Docker tests into skips."""
    import pytest

    from evaluation.docker.daemon import find_daemon

    found = find_daemon(timeout=timeout)
    if found is None:
        why = (
            "no Docker daemon answers (run `python -m evaluation docker up` as root, "
            "or set DOCKER_HOST)"
        )
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"{why}; REQUIRE_DOCKER=1 makes that a failure")
        pytest.skip(why)
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
