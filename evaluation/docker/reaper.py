"""Removes an agent's container if the runner dies:
`python -m evaluation.docker.reaper ID LOG [LIFELINE_FD]`.

Started by `DockerAgent.start` with its stdin a pipe from the runner. The runner writes `done`
when it has finished (and removed) the container itself; an end of file without `done` means
the runner died: the reaper then kills the container, appends its logs to LOG and removes it.
With LIFELINE_FD (the read end of the environment server's lifeline), it first waits for that
pipe to close too (at most RUNNER_WAIT_S): the dying runner closes its descriptors one after
another, and the server, seeing its agent gone, must already see the runner gone, or it would
record the agent as having hung up.
"""

from __future__ import annotations

import contextlib
import select
import signal
import sys
from pathlib import Path

RUNNER_WAIT_S = 5.0


def main(argv: list[str]) -> int:
    container_id, log_path, *lifeline = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the runner's to handle
    if sys.stdin.buffer.read().strip() == b"done":
        return 0
    if lifeline:  # readable: closed (the runner never writes to it)
        select.select([int(lifeline[0])], [], [], RUNNER_WAIT_S)
    from docker.errors import APIError, NotFound

    from evaluation.docker.daemon import docker_client
    from evaluation.docker.runtime import kill_and_remove

    with contextlib.suppress(NotFound, APIError):
        kill_and_remove(docker_client().containers.get(container_id), Path(log_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
