"""`python -m evaluation compare DIR... --out DIR`: one report from several suites.

    python -m evaluation compare results/baselines results/my-agent --out results/compared

Reads the runs of every suite directory given (their `runs/` and `suite.json`), in order, and
writes one report of them all into OUT (report.md, summary.csv, curves/, the aggregate figures,
and GIFs of recorded runs; `compare.json` lists the suites). Agents and levels keep the order of
first appearance. The same agent may come from several suites with different seeds; the same
(agent, level, seed) in two suites is an error (rename the agent in one of them: `--agents
NAME=ENTRY`), and so are suites with different budgets, or wall clocks where a run ended by its
wall clock (a contest score is the mean return over the whole run). Nothing is run: a suite is
extended by running it again with more agents or seeds (`evaluation suite --resume DIR --seeds
...`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evaluation.reports.aggregates import DEFAULT_BASELINE, chosen_baseline
from evaluation.reports.report import Run, Table, load_runs, read_suite_json
from sonic_common.errors import UserError, exit_on_user_error
from sonic_common.files import write_atomic


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m evaluation compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("suites", nargs="+", type=Path, metavar="DIR", help="suite directories")
    ap.add_argument("--out", type=Path, required=True, help="where to write the report")
    ap.add_argument(
        "--baseline",
        help=f"agent the others are compared with (default {DEFAULT_BASELINE}; "
        "`none` for no probability of improvement)",
    )
    return ap.parse_args(argv)


def merge(dirs: list[Path]) -> tuple[Table, dict[str, Any]]:
    """The runs of all suites in one table, and a suite.json-like description of the sources."""
    runs: list[Run] = []
    agents: list[str] = []
    levels: list[str] = []
    where: dict[tuple[str, str, int], Path] = {}
    sources = []
    for d in dirs:
        if not (d / "runs").is_dir():
            raise UserError(f"{d} holds no runs/: give suite directories (evaluation suite --out)")
        suite = read_suite_json(d)
        mine = load_runs(d)
        for r in mine:
            key = (r.agent, r.level, r.seed)
            if key in where:
                raise UserError(
                    f"{r.agent} · {r.level} · seed {r.seed} is in both {where[key]} "
                    f"and {d}: rename the agent in one suite (--agents NAME=ENTRY)"
                )
            where[key] = d
        runs += mine
        agents += [
            a
            for a in suite.get("agents") or dict.fromkeys(r.agent for r in mine)
            if a not in agents
        ]
        levels += [
            lv
            for lv in suite.get("levels") or dict.fromkeys(r.level for r in mine)
            if lv not in levels
        ]
        sources.append(
            f"{d}"
            + (
                f" (budget {suite['budget']}, seeds {suite.get('seeds')})"
                if "budget" in suite
                else ""
            )
        )
    clock_ended = any(r.status == "wallclock" for r in runs)
    same_limits([(d, read_suite_json(d)) for d in dirs], clock_ended)
    return Table(runs, agents, levels), {"sources": sources}


def same_limits(suites: list[tuple[Path, dict[str, Any]]], clock_ended: bool) -> None:
    """Refuse suites run with different budgets, or different wall clocks when a run ended by
    its wall clock: a contest score is the mean return over the whole run, so it depends on
    them (a learner's 100k-step score is far below its 1M one)."""
    limits = {
        d: (suite.get("budget"), suite.get("wallclock_s") if clock_ended else None)
        for d, suite in suites
        if "budget" in suite
    }
    if len(set(limits.values())) > 1:
        said = "; ".join(
            f"{d}: budget {b}" + (f", wall clock {w} s" if clock_ended else "")
            for d, (b, w) in limits.items()
        )
        raise UserError(
            f"the suites have different limits ({said}): their scores are not comparable; "
            "compare suites run with the same --budget"
            + (" and --wallclock (a run ended by its wall clock)" if clock_ended else "")
        )


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    from evaluation.reports.report import write_table_report

    args = parse_args(list(argv if argv is not None else sys.argv[1:]))
    table, suite = merge(args.suites)
    if not table.runs:
        raise UserError("the suites given hold no finished run yet: nothing to compare")
    baseline = chosen_baseline(args.baseline, table.agents)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(
        args.out / "compare.json",
        json.dumps(
            {
                "suites": [str(d.resolve()) for d in args.suites],
                "baseline": args.baseline or DEFAULT_BASELINE,
            },
            indent=2,
        )
        + "\n",
    )
    report = write_table_report(table, suite, args.out, baseline)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
