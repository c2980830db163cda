"""Removes an agent's container if the runner dies: `python -m evaluation.docker.reaper ID LOG`.

Started by `DockerAgent.start` with its stdin a pipe from the runner. The runner writes `done`
when it has finished (and removed) the container itself; an end of file without `done` means
the runner died: the reaper then kills the container, appends its logs to LOG and removes it.
"""

from __future__ import annotations

import contextlib
import signal
import sys


def main(argv: list[str]) -> int:
    container_id, log_path = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the runner's to handle
    if sys.stdin.buffer.read().strip() == b"done":
        return 0
    from docker.errors import APIError, NotFound

    from evaluation.docker.daemon import docker_client

    with contextlib.suppress(NotFound, APIError):
        container = docker_client().containers.get(container_id)
        with contextlib.suppress(NotFound, APIError):
            container.kill()
        with contextlib.suppress(NotFound, APIError), open(log_path, "ab") as f:
            f.write(container.logs(stdout=True, stderr=True))
        container.remove(force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
