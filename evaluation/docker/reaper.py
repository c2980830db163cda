"""Removes an agent's container if the runner dies: `python -m evaluation.docker.reaper ID LOG`.

Started by `DockerAgent.start` with its stdin a pipe from the runner. The runner writes `done`
when it has finished (and removed) the container itself; an end of file without `done` means
the runner died: the reaper then kills the container, appends its logs to LOG and removes it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    container_id, log_path = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the runner's to handle
    if sys.stdin.buffer.read().strip() == b"done":
        return 0
    from docker.errors import APIError, NotFound

    from evaluation.docker.daemon import docker_client
    from evaluation.docker.runtime import kill_and_remove

    with contextlib.suppress(NotFound, APIError):
        kill_and_remove(docker_client().containers.get(container_id), Path(log_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
