"""`python -m evaluation suite`: agents × levels × seeds, W runs at a time, resumable, reported.

    python -m evaluation suite --agents random,jerk --levels smoke --seeds 3 --budget 100000 \\
        --workers 2 --out results/smoke
    python -m evaluation suite --out results/smoke --resume  # continue (or rerun the same command)
    python -m evaluation suite --report-only --out results/smoke

`--seeds K` runs seeds 0..K-1, `--seeds 3,4,5` those seeds. Giving more agents or seeds than
the suite in OUT has extends it: only the new runs are run. Runs land in
OUT/runs/<agent>/<level slug>/seed<k>/; a finished run is never
redone (an `interrupted` one is; failed ones only with --retry-failed). The report (report.md,
summary.csv, curves/) is written when the suite ends, also after Ctrl-C.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from evaluation.contest import records
from evaluation.contest.records import Reading
from evaluation.contest.rules import BUDGET_STEPS, WALLCLOCK_S
from evaluation.reports.aggregates import chosen_baseline
from evaluation.reports.report import write_report
from evaluation.suites.eta import SuiteEta
from evaluation.suites.ray_suite import (
    add_backend_arguments,
    check_agent_args_on_ray,
    check_backend,
    make_runner,
    ray_slots,
)
from evaluation.suites.seeds import parse_seeds
from evaluation.suites.suite import (
    REDO,
    SUITE_JSON,
    RunKey,
    SuiteConfig,
    SuiteRunner,
    kept_progress,
    open_suite,
    preflight,
    suite_lock,
    todo,
)
from roms_setup.levels import resolve_levels
from sonic_common.errors import UserError, exit_on_user_error
from sonic_common.progress import duration

T = TypeVar("T")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m evaluation suite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_suite_arguments(ap)
    _add_run_arguments(ap)
    return ap.parse_args(argv)


def _add_suite_arguments(ap: argparse.ArgumentParser) -> None:
    """What the suite is: agents, levels, seeds and each run's settings (kept in suite.json)."""
    ap.add_argument(
        "--agents",
        help="comma-separated agent names from evaluation/agents.py (their modules, e.g. "
        "agent.ppo2, agent.random_agent; or images with --runtime docker); "
        "NAME=ENTRY runs agent ENTRY under the name NAME",
    )
    ap.add_argument("--levels", help="a level set name, a CSV file, or Game:State[,Game:State]")
    ap.add_argument(
        "--seeds",
        help="a count K (seeds 0..K-1, default 1) or a list of seeds "
        "(3,4,5); more seeds or agents than a suite has extend it",
    )
    ap.add_argument("--budget", type=int, help=f"timesteps per run (default {BUDGET_STEPS})")
    ap.add_argument(
        "--wallclock", type=float, help=f"wall-clock seconds per run (default {WALLCLOCK_S})"
    )
    ap.add_argument("--runtime", choices=("local", "docker"), help="default local")
    ap.add_argument(
        "--agent-args",
        action="append",
        default=[],
        metavar='NAME="ARGS"',
        help="extra command-line arguments for one agent (repeatable)",
    )
    ap.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME=TAG",
        help="docker: the image NAME runs (default sonic-maml-agent-ENTRY:latest)",
    )
    ap.add_argument(
        "--record",
        action="store_true",
        default=None,
        help="record every episode as a .bk2 movie (see `evaluation video`)",
    )


def _add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """How this invocation runs it: where, how many at a time, resume, retry, report."""
    ap.add_argument("--workers", type=int, default=1, help="runs at a time (default 1)")
    add_backend_arguments(ap)
    ap.add_argument("--out", type=Path, help="the suite directory")
    ap.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="DIR",
        help="continue the suite in --out (it must exist); `--resume DIR`, the old "
        "spelling, still works",
    )
    ap.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the runs that failed (crashed, protocol error, ...)",
    )
    ap.add_argument("--report-only", action="store_true", help="only write the report")
    ap.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    ap.add_argument(
        "--baseline",
        help="the report's probability of improvement "
        "compares every agent with this one (default ppo2; `none`: no comparison)",
    )


def parse_agent_args(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f'--agent-args {item!r}: write it as NAME="ARGS"')
        try:
            out[name.strip()] = absolute_paths(shlex.split(rest))
        except ValueError as e:
            raise UserError(f"--agent-args {item!r}: {e}") from None
    return out


def absolute_paths(args: list[str]) -> list[str]:
    """Agent arguments that name an existing file or directory here (`--checkpoint
    runs/joint/checkpoint.pt`, `--config=my.yaml`) made absolute: the suite keeps them, and
    resumes from any directory."""

    def fix(text: str) -> str:
        return str(Path(text).resolve()) if text and Path(text).exists() else text

    out = []
    for arg in args:
        option, sep, value = arg.partition("=")
        if arg.startswith("-") and sep:
            out.append(f"{option}={fix(value)}")
        else:
            out.append(arg if arg.startswith("-") else fix(arg))
    return out


def parse_images(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, tag = item.partition("=")
        if not sep or not name.strip() or not tag.strip():
            raise UserError(f"--image {item!r}: write it as NAME=TAG")
        out[name.strip()] = tag.strip()
    return out


def given_config(args: argparse.Namespace, new: bool) -> dict[str, Any]:
    """The SuiteConfig fields the user gave; for a new suite, the defaults fill the rest."""
    given: dict[str, Any] = {}
    if args.agents is not None:
        names = [a.strip() for a in args.agents.split(",") if a.strip()]
        given["agents"] = [n.partition("=")[0].strip() for n in names]
        given["aliases"] = {
            n.partition("=")[0].strip(): n.partition("=")[2].strip() for n in names if "=" in n
        }
    if args.levels is not None:
        given["levels"] = [lv.id for lv in resolve_levels(args.levels)]
        given["levels_spec"] = args.levels
    if args.seeds is not None:
        given["seeds"] = parse_seeds(args.seeds)
    for key, value in (
        ("budget", args.budget),
        ("wallclock_s", args.wallclock),
        ("runtime", args.runtime),
        ("record", args.record),
    ):
        if value is not None:
            given[key] = value
    if args.agent_args:
        given["agent_args"] = parse_agent_args(args.agent_args)
    if args.image:
        given["images"] = parse_images(args.image)
    if new:
        defaults = {
            "seeds": 1,
            "budget": BUDGET_STEPS,
            "wallclock_s": float(WALLCLOCK_S),
            "runtime": "local",
            "agent_args": {},
            "record": False,
            "aliases": {},
            "images": {},
        }
        given = {**defaults, **given}
    return given


def suite_dir(args: argparse.Namespace) -> Path:
    if isinstance(args.resume, str):  # the old `--resume DIR`
        resume = Path(args.resume)
        if args.out is not None and args.out.resolve() != resume.resolve():
            raise UserError(f"--resume {resume} and --out {args.out} differ: give one")
        args.out = resume
    if args.out is None:
        raise UserError("say where the suite lives: --out DIR")
    if args.resume and not (args.out / SUITE_JSON).is_file():
        raise UserError(
            f"--resume: {args.out} holds no {SUITE_JSON}: it is not a suite "
            "directory (leave out --resume to start one)"
        )
    return args.out


def progress_bar(total: int, initial: int) -> Any:
    """A bar on a terminal; plain progress lines in a log (sonic_common.progress). The ETA is
    the suite's own (SuiteEta), in the postfix."""
    from sonic_common.progress import progress

    return progress(
        total,
        initial,
        unit="step",
        desc="suite",
        eta=False,
        unit_scale=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}]{postfix}",
    )


def run(
    config: SuiteConfig,
    out: Path,
    workers: int,
    retry_failed: bool,
    backend: argparse.Namespace | None = None,
) -> bool:
    """Run what is left of the suite; True when it was interrupted."""
    run_keys, done = todo(config, out, retry_failed)
    total = len(done) + len(run_keys)
    print(
        f"suite {out}: {total} runs ({len(config.agents)} agents × {len(config.levels)} "
        f"levels × {len(config.seeds)} seeds), {len(done)} done, {len(run_keys)} to run, "
        f"{'on Ray' if getattr(backend, 'backend', '') == 'ray' else f'{workers} at a time'}",
        file=sys.stderr,
    )
    if not run_keys:
        return False
    runner = make_runner(config, out, workers, backend)
    kept: dict[RunKey, Reading] = {}
    slots: int | None
    if isinstance(runner, SuiteRunner):
        # known only here: Ray's nodes may not share the directory, and those that do not
        # play a stopped run again from its start
        kept, slots = kept_progress(run_keys, runner), workers
    else:
        slots = ray_slots(config, runner.opts)
    eta = suite_eta(config, out, (run_keys, done), kept, slots)
    progress = SuiteProgress(total, len(done), config.budget, kept, eta)
    t0 = time.monotonic()
    outcome = runner.run(run_keys, progress.on_done, progress.on_tick)
    progress.close()
    if outcome.interrupted:
        runs = progress.counts["runs"]
        print(
            f"interrupted after {time.monotonic() - t0:.0f} s: {runs}/{total} runs "
            f"done; `python -m evaluation suite --out {out} --resume` runs the other "
            f"{total - runs}",
            file=sys.stderr,
        )
    return outcome.interrupted


def suite_eta(
    config: SuiteConfig,
    out: Path,
    runs: tuple[list[RunKey], list[RunKey]],
    kept: dict[RunKey, Reading],
    slots: int | None,
) -> SuiteEta | None:
    """The ETA of the suite's `runs` (to do, done); None, said in a line, if it cannot be
    made: it is only shown."""
    to_do, done = runs
    try:
        finished = [(key.agent, records.read_results(key.dir(out)) or {}) for key in done]
        return SuiteEta(config.budget, config.wallclock_s, to_do, kept, finished, slots)
    except Exception as e:
        print(f"suite: no ETA ({e.__class__.__name__}: {e})", file=sys.stderr)
        return None


class SuiteProgress:
    """The suite's progress bar in timesteps (finished runs count their whole budget, interrupted
    ones what they played), a line per finished run, and the counts of runs done, not ended by
    budget, and interrupted.

    `kept`: where runs that continue from a resume point continue; their steps count as done
    from the start. `eta`: the time left, shown after the counts (a fault in it drops it: it
    must not stop the suite).
    """

    def __init__(
        self,
        total: int,
        done: int,
        budget: int,
        kept: dict[RunKey, Reading] | None = None,
        eta: SuiteEta | None = None,
    ) -> None:
        self.total, self.budget, self.eta = total, budget, eta
        self.kept_steps = {key: point.timesteps for key, point in (kept or {}).items()}
        self.bar = progress_bar(total * budget, done * budget + sum(self.kept_steps.values()))
        self.finished_steps = done * budget
        self.counts = {"runs": done, "failed": 0, "interrupted": 0}
        self.show()

    def _with_eta(self, use: Callable[[SuiteEta], T]) -> T | None:
        if self.eta is None:
            return None
        try:
            return use(self.eta)
        except Exception as e:  # only shown: the runs go on without it
            self.eta = None
            self.bar.write(f"suite: no ETA any more ({e.__class__.__name__}: {e})", sys.stderr)
            return None

    def show(self) -> None:
        left = self._with_eta(lambda eta: eta.seconds_left())
        eta = f"ETA {duration(left)}, " if left else ""
        failed = f", {self.counts['failed']} not by budget" if self.counts["failed"] else ""
        self.bar.set_postfix_str(
            f"{eta}runs {self.counts['runs']}/{self.total}{failed}", refresh=False
        )

    def on_done(self, run_key: RunKey, res: dict[str, Any]) -> None:
        self.kept_steps.pop(run_key, None)
        self._with_eta(lambda eta: eta.done(run_key, res))
        status = res.get("status")
        if status in REDO:  # what it played before it was stopped; it is redone on resume
            self.finished_steps += min(int(res.get("timesteps") or 0), self.budget)
            self.counts["interrupted"] += 1
        else:
            self.finished_steps += self.budget
            self.counts["runs"] += 1
            self.counts["failed"] += status != "budget"
        score = res.get("score")
        score_text = "-" if score is None else f"{score:.1f}"
        err = f" ({res.get('error')})" if res.get("error") else ""
        self.bar.write(
            f"{run_key}: {status}, score {score_text}, {res.get('episodes')} episodes, "
            f"{res.get('wallclock_s') or 0:.0f} s{err}",
            file=sys.stderr,
        )
        self.show()

    def on_tick(self, running: dict[RunKey, Reading]) -> None:
        """`running`: the last progress line of each running run."""
        self._with_eta(lambda eta: eta.tick(running))
        waiting = sum(steps for key, steps in self.kept_steps.items() if key not in running)
        played = self.finished_steps + waiting + sum(r.timesteps for r in running.values())
        self.bar.n = min(self.bar.total, played)
        self.show()
        self.bar.refresh()

    def close(self) -> None:
        self.eta = None  # what is left of a stopped suite is not being played
        self.on_tick({})
        self.bar.close()


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop the suite cleanly (KeyboardInterrupt in the main thread),
    also when started in the background by a shell that made it ignore SIGINT."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv if argv is not None else sys.argv[1:]))
    out = suite_dir(args)
    if args.report_only:
        if not (out / "runs").is_dir() and not (out / SUITE_JSON).is_file():
            raise UserError(f"{out} holds no suite (no runs/ nor {SUITE_JSON})")
        print(write_report(out, chosen_baseline(args.baseline, suite_agents(out))))
        return 0
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    check_backend(args)
    _stop_on_signals()
    new = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return run_in(out, args)
    except (UserError, KeyboardInterrupt):
        if new and [p.name for p in out.iterdir()] == [".suite.lock"]:  # refused: leave nothing
            (out / ".suite.lock").unlink()
            out.rmdir()
        raise


def run_in(out: Path, args: argparse.Namespace) -> int:
    """The suite in `out` (made, locked): open it, run what is left, write the report."""
    here = args.backend == "local"  # Ray's runs start on its nodes, with their images

    def check(config: SuiteConfig) -> None:
        left = {key.agent for key in todo(config, out, args.retry_failed)[0]}
        on_ray = None if here else partial(check_agent_args_on_ray, address=args.address)
        preflight(config, here=here, left=left, check_args=on_ray)
        chosen_baseline(args.baseline, config.agents)

    with suite_lock(out):
        config = open_suite(
            out, given_config(args, new=not (out / SUITE_JSON).is_file()), check=check
        )
        baseline = chosen_baseline(args.baseline, config.agents)
        interrupted = run(config, out, args.workers, args.retry_failed, args)
        if not args.no_report:
            report = write_report(out, baseline)
            print(overall_table(report))
            print(f"report: {report}")
    return 130 if interrupted else 0


def suite_agents(out: Path) -> list[str]:
    """The agents of the suite in `out`: its suite.json's, else those with runs."""
    from evaluation.reports.report import read_suite_json

    agents = read_suite_json(out).get("agents")
    if agents:
        return list(agents)
    return sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())


def overall_table(report: Path) -> str:
    """The report's overall table, to show in the terminal at the end of a suite."""
    lines = Path(report).read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Overall"), None)
    if start is None:
        return ""
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return "\n".join(table)
