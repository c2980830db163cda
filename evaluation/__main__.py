"""`python -m evaluation COMMAND ...`: each command lives in its own module with a `main(argv)`."""

from __future__ import annotations

import sys

from roms_setup.commands import dispatch
from sonic_common.errors import exit_on_user_error

COMMANDS = {
    "serve": ("evaluation.contest.serve_cli", "serve one contest environment over a Unix socket"),
    "run": (
        "evaluation.contest.run_cli",
        "evaluate one agent on one level (local process or Docker)",
    ),
    "suite": ("evaluation.suites.suite_cli", "agents x levels x seeds, resumable, with a report"),
    "build": ("evaluation.docker.build_cli", "build an agent image"),
    "docker": (
        "evaluation.docker.daemon_cli",
        "docker up|status|prune|down: a private daemon, base image, build caches",
    ),
    "video": ("evaluation.reports.video_cli", "turn a recorded episode (.bk2) into a video or GIF"),
    "compare": (
        "evaluation.reports.compare_cli",
        "one report (IQM, intervals, profile) of several suites",
    ),
}


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {name: (module, (), desc) for name, (module, desc) in COMMANDS.items()}
    return dispatch("python -m evaluation", "The contest on one's own machine.", commands, argv)


if __name__ == "__main__":
    raise SystemExit(main())
