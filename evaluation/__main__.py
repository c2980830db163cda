"""`python -m evaluation COMMAND ...`: each command lives in its own module with a `main(argv)`."""

from __future__ import annotations

import importlib
import sys

from roms_setup.errors import exit_on_user_error

COMMANDS = {
    "serve": ("evaluation.serve_cli", "serve one contest environment over a Unix socket"),
    "run": ("evaluation.run_cli", "evaluate one agent on one level (local process or Docker)"),
    "suite": ("evaluation.suite_cli", "agents x levels x seeds, resumable, with a report"),
    "build": ("evaluation.build_cli", "build an agent image"),
    "docker": ("evaluation.docker_cli", "docker up|status|down: a private daemon and base image"),
    "video": ("evaluation.video_cli", "turn a recorded episode (.bk2) into a video or GIF"),
    "compare": ("evaluation.compare_cli", "one report (IQM, intervals, profile) of several suites"),
}


def usage() -> str:
    lines = ["usage: python -m evaluation COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<8} {desc}" for name, (_, desc) in COMMANDS.items()]
    lines.append("\n`python -m evaluation COMMAND --help` for a command's options.")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}: choose one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
