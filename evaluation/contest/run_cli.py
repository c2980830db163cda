"""`python -m evaluation run`: evaluate one agent on one level, as a local process or in Docker."""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from evaluation.contest.records import ENDED_BY_LIMIT, capped_reading, lock_dir
from evaluation.contest.runner import (
    RunSpec,
    check_not_someone_elses,
    check_results_dir,
    check_spec,
    run_one,
)
from evaluation.contest.serve_cli import add_out_option, add_wallclock_option, summary
from roms_setup.levels import Level
from sonic_common.errors import UserError, exit_on_user_error


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation run",
        description="Serve a level with the contest's rules and run one agent against it; "
        "results (monitor.csv, progress.csv, results.json, agent.log) go to --out. Exit code "
        "0 when the run ended by its budget or wall clock, 1 otherwise (agent crashed, "
        "protocol or environment error, out of memory), 2 for bad input.",
    )
    p.add_argument(
        "--agent",
        required=True,
        help="agent name from evaluation/agents.py: its module locally (python -m "
        "agent.ppo2, agent.random_agent, ...), image sonic-maml-agent-NAME:latest in docker",
    )
    p.add_argument("--level", required=True, help="Game:State, e.g. Airstriker-Genesis-v0:Level1")
    p.add_argument("--budget", required=True, type=int, help="timesteps (resets count)")
    add_out_option(p)
    p.add_argument("--runtime", choices=("local", "docker"), default="local")
    p.add_argument("--seed", type=int, default=0)
    add_wallclock_option(p)
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="S",
        help="end the run when the agent is silent this long (server default: 3600)",
    )
    p.add_argument("--gpus", action="store_true", help="docker: give the container the GPUs")
    p.add_argument("--record", action="store_true", help="keep .bk2 movies in D/movies/")
    p.add_argument(
        "--agent-cmd",
        default=None,
        metavar="CMD",
        help="local: run this command instead of python -m agent.NAME",
    )
    p.add_argument("--image", default=None, metavar="TAG", help="docker: the image to run")
    p.add_argument(
        "--memory",
        default=None,
        metavar="SIZE",
        help="agent memory limit, e.g. 4g (local: address-space limit)",
    )
    p.add_argument("--cpus", type=float, default=None, help="docker: CPU limit")
    return p


def split_command(text: str | None) -> list[str] | None:
    if not text:
        return None
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UserError(f"--agent-cmd {text!r}: {e} (quote it as a shell would)") from None


@contextmanager
def watch_progress(out: Path, budget: int, desc: str, tick_s: float = 1.0) -> Iterator[None]:
    """A progress bar with ETA (plain lines without a terminal) that follows the run's
    progress.csv in `out` while the body runs."""
    from sonic_common.progress import progress

    bar = progress(budget, 0, unit="step", desc=desc, unit_scale=True)
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(tick_s):
            bar.n = capped_reading(out, budget).timesteps
            bar.refresh()

    thread = threading.Thread(target=follow, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.n = capped_reading(out, budget).timesteps
        bar.close()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args, agent_args = parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    if agent_args and agent_args[0] == "--":
        agent_args = agent_args[1:]
    elif agent_args:
        raise UserError(f"unknown options {' '.join(agent_args)}: agent arguments go after --")
    if args.budget <= 0:
        raise UserError(f"--budget must be positive, got {args.budget}")
    if args.wallclock <= 0:
        raise UserError(f"--wallclock must be positive, got {args.wallclock}")
    spec = RunSpec(
        agent=args.agent,
        level=Level.parse(args.level),
        seed=args.seed,
        budget=args.budget,
        results_dir=args.out,
        runtime=args.runtime,
        wallclock_s=args.wallclock,
        agent_cmd=split_command(args.agent_cmd),
        image=args.image,
        gpus=args.gpus,
        record=args.record,
        agent_args=agent_args,
        memory=args.memory,
        cpus=args.cpus,
        idle_timeout_s=args.idle_timeout,
    )
    preflight(spec)
    signal.signal(signal.SIGTERM, _terminate)  # clean up the server and agent, like Ctrl-C
    with watch_progress(args.out, args.budget, f"{args.agent} {args.level}"):
        results = run_one(spec)
    print(summary(results) + f" results={args.out}", flush=True)
    return exit_code(results, args.out)


def preflight(spec: RunSpec) -> None:
    """What run_one would refuse (one line), refused before the progress bar's first line."""
    from roms_setup.installed import require_playable  # stable-retro: after the cheap checks

    check_spec(spec)
    check_docker_paths(spec)
    require_playable(spec.level)
    check_results_dir(spec.results_dir)
    check_not_someone_elses(spec.results_dir)
    lock_dir(spec.results_dir).close()  # another run writing there: say so now


def check_docker_paths(spec: RunSpec) -> None:
    """A container sees no host file: an agent argument naming one is a mistake to say."""
    if spec.runtime != "docker":
        return
    for arg in spec.agent_args:
        value = arg.partition("=")[2] if arg.startswith("-") else arg
        if value and ("/" in value or "." in value) and Path(value).exists():
            raise UserError(
                f"agent argument {arg!r} names a file on this machine, which the container "
                f"cannot see: bake a checkpoint into an image (`evaluation build --agent "
                f"{spec.agent} --checkpoint FILE --tag TAG`, then `run --image TAG`), or use "
                "--runtime local"
            )


LOG_TAIL_LINES = 15
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 but newline


def exit_code(results: dict, out: Path) -> int:
    """0 when the run ended by its budget or wall clock; otherwise say why, show the end of the
    agent's log, and return 1."""
    status = results.get("status")
    if status in ENDED_BY_LIMIT:
        return 0
    print(
        f"the run did not end by its budget or wall clock: status={status}"
        + (f" ({results['error']})" if results.get("error") else ""),
        file=sys.stderr,
    )
    log = Path(results.get("agent_log") or out / "agent.log")
    tail = log_tail(log, LOG_TAIL_LINES)
    if tail:
        print(f"last lines of {log}:", file=sys.stderr)
        print("\n".join("  " + line for line in tail), file=sys.stderr)
    return 1


def log_tail(path: Path, lines: int) -> list[str]:
    """The last non-empty lines of the agent's log, its control characters (terminal escapes
    an agent could print to rewrite the screen) shown as `?`."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    shown = CONTROL.sub("?", re.sub(r"\r\n?", "\n", text))  # a progress bar's \r: new line
    return [ln for ln in shown.splitlines() if ln.strip()][-lines:]
