"""`python -m evaluation serve`: one contest environment, served to one agent over a Unix socket."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from evaluation.contest.rules import BUDGET_STEPS, WALLCLOCK_S
from evaluation.contest.server import DEFAULT_IDLE_TIMEOUT_S, ServeConfig, serve
from roms_setup.levels import Level
from sonic_common.errors import UserError, exit_on_user_error


def add_out_option(p: argparse.ArgumentParser) -> None:
    """`--out DIR`, a run's results directory, shared by `serve` and `run`."""
    p.add_argument(
        "--out",
        "--results-dir",
        dest="out",
        required=True,
        type=Path,
        metavar="DIR",
        help="the run's results directory (--results-dir: its old name)",
    )


def add_wallclock_option(p: argparse.ArgumentParser) -> None:
    """`--wallclock S`, the run's wall-clock limit, shared by `serve` and `run`."""
    p.add_argument(
        "--wallclock",
        type=float,
        default=WALLCLOCK_S,
        metavar="S",
        help=f"wall-clock limit in seconds (default {WALLCLOCK_S})",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation serve",
        description="Serve a level with the 2018 contest's rules over the gym-remote protocol: "
        "socket DIR/sock, observation DIR/ob. Results go to --out.",
    )
    p.add_argument("--level", required=True, help="Game:State, e.g. Airstriker-Genesis-v0:Level1")
    p.add_argument(
        "--socket",
        required=True,
        type=Path,
        metavar="DIR",
        help="directory for the socket `sock` and the observation file `ob`",
    )
    add_out_option(p)
    _add_limits(p)
    _add_record_options(p)
    # used by `evaluation run` only (see ServeConfig): not for users
    p.add_argument("--lifeline-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--publish-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--resume-from", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def _add_limits(p: argparse.ArgumentParser) -> None:
    """The run's budget, wall clock, frame-skip seed and idle timeout."""
    p.add_argument(
        "--budget",
        type=int,
        default=BUDGET_STEPS,
        help=f"timesteps, resets included (default {BUDGET_STEPS})",
    )
    add_wallclock_option(p)
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the stochastic frame skip (default: random, recorded)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT_S,
        metavar="S",
        help="end the run when the agent is silent this long, or has not connected "
        f"(default {DEFAULT_IDLE_TIMEOUT_S:g}; 0 disables)",
    )


def _add_record_options(p: argparse.ArgumentParser) -> None:
    """What the run records: movies, the names in results.json, the progress lines."""
    p.add_argument("--record", action="store_true", help="keep .bk2 movies in D/movies/")
    p.add_argument("--agent", default="external", help="agent name written to results.json")
    p.add_argument("--runtime", default="external", help="runtime written to results.json")
    p.add_argument(
        "--progress-every",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds between lines of D/progress.csv (also every 50,000 timesteps)",
    )


MAX_SEED = 2**31 - 1


def check_seconds(name: str, value: float | None, zero_ok: bool = False) -> None:
    """A time limit must be a finite number of seconds (NaN would silently disable it)."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = "0 or more" if zero_ok else "above 0"
        raise UserError(f"{name} must be a finite number of seconds, {bound}; got {value}")


def check_seed(value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_SEED:
        raise UserError(f"--seed must be between 0 and {MAX_SEED}, got {value}")


def summary(results: dict) -> str:
    """One line; any field may be missing or None (a run whose server died early)."""

    def num(key: str, unit: str = "") -> str:
        value = results.get(key)
        return "n/a" if not isinstance(value, int | float) else f"{value:.1f}{unit}"

    line = (
        f"{results.get('level')} agent={results.get('agent')} seed={results.get('seed')} "
        f"status={results.get('status')} score={num('score')} "
        f"episodes={results.get('episodes')} timesteps={results.get('timesteps')} "
        f"wallclock={num('wallclock_s', 's')}"
    )
    if results.get("error"):
        line += f" error={results['error']}"
    return line


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.budget <= 0:
        raise UserError(f"--budget must be positive, got {args.budget}")
    check_seconds("--wallclock", args.wallclock)
    check_seconds("--idle-timeout", args.idle_timeout, zero_ok=True)
    check_seconds("--progress-every", args.progress_every)
    check_seed(args.seed)
    level = Level.parse(args.level)
    from roms_setup.installed import require_playable  # imports stable-retro: after arg checks

    require_playable(level)
    config = ServeConfig(
        level=level,
        socket_dir=args.socket,
        results_dir=args.out,
        budget=args.budget,
        wallclock_s=args.wallclock,
        seed=args.seed,
        idle_timeout_s=args.idle_timeout if args.idle_timeout > 0 else None,
        record=args.record,
        agent=args.agent,
        runtime=args.runtime,
        progress_every_s=args.progress_every,
        lifeline_fd=args.lifeline_fd,
        result_fd=args.result_fd,
        publish_dir=args.publish_dir,
        resume_from=args.resume_from,
    )
    print(f"serving {config.level} on {config.socket_dir / 'sock'}", file=sys.stderr, flush=True)
    results = serve(config)
    print(summary(results), flush=True)
    return 0
