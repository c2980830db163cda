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
import runpy
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from evaluation.__main__ import COMMANDS as EVALUATION_COMMANDS
from roms_setup.commands import Command, command_parser, load_main, parse_command
from sonic_common.errors import UserError, exit_on_user_error

COMMANDS: dict[str, Command] = {
    "roms": ("roms_setup.cli", (), "ROMs and level sets: import, status, levels"),
    **{name: (module, (), desc) for name, (module, desc) in EVALUATION_COMMANDS.items()},
    "train": ("agent.train", (), "train PPO or Rainbow offline on local contest environments"),
    "meta-train": ("meta_train.cli", (), "meta-train a policy initialization (MAML, Reptile)"),
    "evaluate": (
        "meta_train.cli",
        ("evaluate",),
        "returns of a meta-trained checkpoint after 0..N adaptation steps",
    ),
    "oracle": ("meta_train.cli", ("oracle",), "train and evaluate a task family's oracles"),
    "pipeline": ("meta_train.pipeline", (), "the whole job: meta-train, train, build, evaluate"),
    "reproduction": (
        "meta_train.reproduction",
        (),
        "curves and tables of the MAML reproduction runs",
    ),
    "study": ("meta_train.study", (), "the HalfCheetah meta-optimizer study"),
    # `sonic-maml agent NAME ...` runs `python -m agent.NAME ...`
    "agent": (
        "meta_train.console",
        (),
        "run an agent: `sonic-maml agent jerk` = python -m agent.jerk",
    ),
}


def parser() -> argparse.ArgumentParser:
    return command_parser(
        "sonic-maml",
        "Few-shot RL on the Retro Contest levels: MAML meta-training, "
        "contest-style evaluation, baselines.",
        COMMANDS,
        epilog="`sonic-maml COMMAND --help` for a command's options. Every command is also "
        "`python -m MODULE` (e.g. python -m evaluation run).",
    )


def run_agent(args: list[str]) -> int:
    if not args or args[0].startswith("-"):
        raise UserError(
            "say which agent: sonic-maml agent NAME [options], e.g. sonic-maml agent jerk"
        )
    from evaluation.agents import agent_entry

    name, rest = args[0], args[1:]
    module = agent_entry(name).module
    sys.argv = [module, *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def console_prog(prog: str, name: str, prefix: tuple[str, ...]) -> str:
    """A command's `python -m MODULE [PREFIX] [NAME] REST` usage name as `sonic-maml NAME REST`."""
    words = prog.split(" ")
    if words[:2] != ["python", "-m"]:
        return prog
    rest = words[3:]
    for word in (*prefix, name):
        if rest[:1] == [word]:
            rest = rest[1:]
    return " ".join(["sonic-maml", name, *rest])


@contextmanager
def usage_as(name: str, prefix: tuple[str, ...]) -> Iterator[None]:
    """While a command runs under `sonic-maml`, its parsers (written with `prog="python -m
    ..."`) show `usage: sonic-maml NAME ...` in --help and errors."""
    original = argparse.ArgumentParser.__init__

    def init(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self.prog = console_prog(self.prog, name, prefix)

    argparse.ArgumentParser.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.__init__ = original  # type: ignore[method-assign]


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    name, rest = parse_command(parser(), list(sys.argv[1:] if argv is None else argv))
    if name == "agent":
        return run_agent(rest)
    with usage_as(name, COMMANDS[name][1]):
        return load_main(COMMANDS[name])(rest)


if __name__ == "__main__":
    raise SystemExit(main())
