"""`sonic-maml COMMAND ...`: every command of the project behind one console script.

    sonic-maml roms status                 # = python -m roms_setup status
    sonic-maml run --agent jerk ...        # = python -m evaluation run ...
    sonic-maml train --algo ppo ...        # = python -m agent.train ...
    sonic-maml meta-train --config halfcheetah-dir --out runs/dir
    sonic-maml agent jerk                  # = python -m agent.jerk (an agent, e.g. for --agent-cmd)

Each command is the `main(argv)` of the module `python -m` runs, so both spellings take the same
options; `sonic-maml COMMAND --help` shows them. This module sits at the top of the imports
(roms_setup ← evaluation ← agent ← meta_train) and imports a command's module only to run it.
"""

from __future__ import annotations

import argparse
import importlib
import runpy
import sys
from collections.abc import Callable

from evaluation.__main__ import COMMANDS as EVALUATION_COMMANDS
from roms_setup.errors import UserError, exit_on_user_error

# name → (module with main(argv), argv prefix, one-line description)
Command = tuple[str, tuple[str, ...], str]
COMMANDS: dict[str, Command] = {
    "roms": ("roms_setup.cli", (), "ROMs and level sets: import, status, levels"),
    **{name: (module, (), desc) for name, (module, desc) in EVALUATION_COMMANDS.items()},
    "train": ("agent.train", (), "train PPO or Rainbow offline on local contest environments"),
    "meta-train": ("meta_train.cli", (), "meta-train a policy initialization (MAML, Reptile)"),
    "evaluate": ("meta_train.cli", ("evaluate",),
                 "returns of a meta-trained checkpoint after 0..N adaptation steps"),
    "oracle": ("meta_train.cli", ("oracle",), "train and evaluate a task family's oracles"),
    "pipeline": ("meta_train.pipeline", (), "the whole job: meta-train, train, build, evaluate"),
    "reproduction": ("meta_train.reproduction", (),
                     "curves and tables of the MAML reproduction runs"),
    "study": ("meta_train.study", (), "the HalfCheetah meta-optimizer study"),
}
AGENT = "agent"  # `sonic-maml agent NAME ...` runs `python -m agent.NAME ...`


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sonic-maml", description="Few-shot RL on the Retro Contest levels: MAML "
        "meta-training, contest-style evaluation, baselines.",
        epilog="`sonic-maml COMMAND --help` for a command's options. Every command is also "
        "`python -m MODULE` (e.g. python -m evaluation run).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, _, desc) in COMMANDS.items():
        sp = sub.add_parser(name, help=desc, add_help=False)
        sp.add_argument("args", nargs=argparse.REMAINDER)
    sp = sub.add_parser(AGENT, help="run an agent: `sonic-maml agent jerk` = python -m agent.jerk",
                        add_help=False)
    sp.add_argument("args", nargs=argparse.REMAINDER)
    return p


def command_main(name: str) -> tuple[Callable[[list[str]], int], tuple[str, ...]]:
    module, prefix, _ = COMMANDS[name]
    return importlib.import_module(module).main, prefix


def run_agent(args: list[str]) -> int:
    if not args or args[0].startswith("-"):
        raise UserError("say which agent: sonic-maml agent NAME [options], e.g. "
                        "sonic-maml agent jerk")
    from evaluation.runner import agent_module_exists

    name, rest = args[0], args[1:]
    if not agent_module_exists(name):
        raise UserError(f"unknown agent {name!r}: there is no module agent.{name}")
    sys.argv = [f"agent.{name}", *rest]
    try:
        runpy.run_module(f"agent.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--` after the command name: everything after it is the command's, options included
    given = argv[:1] + ["--", *argv[1:]] if argv[:1] and not argv[0].startswith("-") else argv
    args = parser().parse_args(given)
    rest = _strip_separator(args.args)
    if args.command == AGENT:
        return run_agent(rest)
    main_of, prefix = command_main(args.command)
    return int(main_of([*prefix, *rest]) or 0)


def _strip_separator(args: list[str]) -> list[str]:
    """REMAINDER keeps the `--` put in front of the command's own arguments: drop that one."""
    return args[1:] if args[:1] == ["--"] else args


if __name__ == "__main__":
    raise SystemExit(main())
