"""One way to dispatch subcommands: `PROG COMMAND [options]`, an argparse subparser per command
whose options belong to the command's own `main(argv)` (imported only to run it).

Used by `python -m evaluation` and the `sonic-maml` console script.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping

# name → (module with main(argv), argv prefix given before the user's, one-line description)
Command = tuple[str, tuple[str, ...], str]


def command_parser(
    prog: str, description: str, commands: Mapping[str, Command], epilog: str | None = None
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog or f"`{prog} COMMAND --help` for a command's options.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, _, desc) in commands.items():
        sp = sub.add_parser(name, help=desc, add_help=False)  # --help is the command's
        sp.add_argument("args", nargs=argparse.REMAINDER)
    return p


def parse_command(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str, list[str]]:
    """(command name, its arguments): everything after the name is the command's, options
    and `--` included."""
    named = bool(argv) and not argv[0].startswith("-")
    args = parser.parse_args(argv[:1] + ["--", *argv[1:]] if named else argv)
    rest = list(args.args)
    return args.command, rest[1:] if rest[:1] == ["--"] else rest


def load_main(command: Command) -> Callable[[list[str]], int]:
    module, prefix, _ = command
    main = importlib.import_module(module).main
    return lambda argv: int(main([*prefix, *argv]) or 0)


def dispatch(prog: str, description: str, commands: Mapping[str, Command], argv: list[str]) -> int:
    name, rest = parse_command(command_parser(prog, description, commands), argv)
    return load_main(commands[name])(rest)
