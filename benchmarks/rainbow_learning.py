"""Does Rainbow learn inside the contest? Rainbow, ppo2 and random on 3 Atari games at 100k steps.

    .venv/bin/python benchmarks/rainbow_learning.py                 # the full run (hours on CPU)
    .venv/bin/python benchmarks/rainbow_learning.py --steps 2000 --seeds 1 --out /tmp/rl
    .venv/bin/python benchmarks/rainbow_learning.py --report-only   # figures from OUT again
                                        # (unfinished: each finished run's scores, no IQM)

Runs the real evaluation (`python -m evaluation suite`: one environment server per run, agents
as `python -m agent.NAME` processes over the contest connection, the budget enforced by the
server) for rainbow, ppo2 and random on Boxing, Freeway and Seaquest (Atari 2600 ROMs shipped
with ale-py), `--seeds` seeds each, then scores every run the contest's way (mean return of the
episodes finished in the budget), normalizes it by the published random and human scores,
(score − random) / (human − random), and reports the interquartile mean over runs × games with
95% stratified-bootstrap confidence intervals (rliable, Agarwal et al. 2021). A second score, of
the end of learning, is the mean return of the episodes that end in a run's last 20 000 steps:
the contest score averages the whole run, Rainbow's 20 000 steps before its first update
included, while the published figures evaluate the agent after its 100k steps. The BENCH line
stays on the contest score.

Settings: rainbow with the contest baseline's (agent.configs.RAINBOW; no update before
20 000 transitions, 3-step, target every 8192); ppo2 with the Atari settings of
benchmarks/ppo_learning.py (nsteps 256, 4 × 64 minibatches, 4 epochs, lr 2.5e-4); both with
torch_threads 1 (`--workers` runs share the cores); both learn from the game's score as it is
(the wrappers' `backtracking: auto` is off for Atari 2600 games: Boxing's score drops when the
opponent lands a punch, and the Sonic-made wrapper would hide every drop; the score itself is
not clipped, as the contest's Rainbow never clipped it). Stopped, it resumes: rerun the same
command; finished runs are kept and each stopped Rainbow run continues from its last resume
point (every 10 000 steps; docs/evaluation.md, "Resume points"), the others are played again.

Published references at 100k agent steps (400k frames), as tabulated in CURL's Table 2 (Laskin
et al. 2020, arXiv 2004.04136; A-LIX's Table 5, Cetin et al. 2022, gives the same DER values;
DER's own paper, van Hasselt et al. 2019, not read here; the number of runs each averages is not
stated there): data-efficient Rainbow (DER) Boxing 0.2, Freeway 27.9, Seaquest 354.1, and
Rainbow with its standard settings (Hessel et al. 2018) −24.8, 0.0, 131.69. Neither is
comparable setting for setting. DER retunes Rainbow for 100k (20-step returns, updates from
1600 steps, target every 2000 updates, a wider network); the standard Rainbow row is the closer
one to the contest's (which learns from 20 000 transitions and updates every step, where the
standard one updates every 4). And ALE's standard protocol differs from the contest environment
(sticky actions with 0.25 only on a step's first frame, 4500-step episodes, no frame
max-pooling, no reward clipping, no end of episode on a life lost); the contest's Rainbow spends
a fifth of this budget filling its replay before learning.

Across machines: every finished run's small records (results.json, monitor.csv, progress.csv,
agent/learning.csv) and suite.json are copied into `--state` (committed, under docs/results) when
the suite ends or is stopped with Ctrl-C, and a new machine's OUT starts from them: only the
runs not finished anywhere are played. A stopped Rainbow run's resume point (its replay, ~700
MB) stays in OUT: on a new machine that run starts over.

Rainbow must learn: clearly above random on the games where ppo2 beats random. Tested on the
normalized contest scores of those games: the probability that a Rainbow run beats a random run
there (rliable's probability of improvement, with its 95% stratified-bootstrap interval: the
effect) and a one-sided permutation test stratified by game on the same Mann-Whitney count
(exact; with 3 seeds a bootstrap interval is too narrow to rest on): clearly means p ≤ 0.05.
Last line: `BENCH rainbow_learning p_value=<that p> target=<=0.05`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.contest import records  # noqa: E402
from evaluation.reports.normalize import published_scale  # noqa: E402
from evaluation.reports.report import Run, Table, load_runs  # noqa: E402
from evaluation.reports.stats import (  # noqa: E402
    MIN_SEEDS,
    Estimate,
    interval,
    permutation_p,
    probability_of_improvement,
)
from evaluation.suites.suite import FAILED, REDO, run_state  # noqa: E402
from sonic_common.markdown import md_table  # noqa: E402

GAMES = ("Boxing-Atari2600-v0:Start", "Freeway-Atari2600-v0:Start", "Seaquest-Atari2600-v0:Start")
AGENTS = ("rainbow", "ppo2", "random")
# Random and human scores: evaluation/reports/data/atari_reference_scores.csv (dqn_zoo's table).
# CURL's Table 2 (see above): data-efficient Rainbow, and Rainbow with its standard settings
DER_100K = {"Boxing": 0.2, "Freeway": 27.9, "Seaquest": 354.1}
RAINBOW_100K = {"Boxing": -24.8, "Freeway": 0.0, "Seaquest": 131.69}
THREADS = "--set torch_threads=1 --set tensorboard=false"
# a resume point every 10 000 steps: a stopped suite continues each Rainbow run from its last
# point (up to 10 000 steps and one episode, ~20 min of its learning, played again) instead of
# from the start
RAINBOW_ARGS = THREADS + " --set save_interval=10000"
STATE = ROOT / "docs" / "results" / "rainbow_learning" / "state"
# what a finished run keeps across machines: enough for its score, report and learning curve
KEPT = ("results.json", "monitor.csv", "progress.csv", "agent/learning.csv")
# the end of learning: a run's episodes that end in its last 20 000 steps (a fifth of the
# default budget; ≈ 10 Boxing or Freeway episodes)
FINAL_WINDOW = 20_000
PPO2_ARGS = "--set nsteps=256 --set nminibatches=4 --set noptepochs=4 --set lr=2.5e-4 " + THREADS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000, help="budget per run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rainbow-args", default=RAINBOW_ARGS)
    ap.add_argument("--ppo2-args", default=PPO2_ARGS)
    ap.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "results" / "rainbow_learning",
        help="the suite's directory (resumable: rerun the same command)",
    )
    ap.add_argument(
        "--state",
        type=Path,
        default=None,
        help="finished runs' records, kept across machines (copied into OUT before the suite, "
        f"from OUT after it; default with the default settings: {STATE.relative_to(ROOT)})",
    )
    ap.add_argument("--report-only", action="store_true", help="only read OUT")
    args = ap.parse_args(argv)
    # relative to where the command was given: the suite itself runs in the project's root
    args.out = args.out.resolve()
    args.state = args.state.resolve() if args.state is not None else None
    return args


def finished(run: Path) -> bool:
    """A run that ended well (budget, wall clock, the agent's own end): neither stopped nor
    failed. A failure on one machine (an OOM beside other work) is not kept for the next."""
    status = run_state(run)
    return status is not None and status not in REDO | FAILED


def same_suite(args: argparse.Namespace, suite_dir: Path) -> bool:
    """Whether `suite_dir`'s suite.json has this command's settings."""
    try:
        kept = json.loads((suite_dir / "suite.json").read_text())
    except (OSError, ValueError):
        return False
    mine = {
        "agents": list(AGENTS),
        "levels": list(GAMES),
        "seeds": list(range(args.seeds)),
        "budget": args.steps,
        "agent_args": {
            "rainbow": shlex.split(args.rainbow_args),
            "ppo2": shlex.split(args.ppo2_args),
        },
    }
    return isinstance(kept, dict) and all(kept.get(k) == v for k, v in mine.items())


def kept_state(args: argparse.Namespace) -> Path | None:
    """Where finished runs are kept across machines: --state, or STATE for the default
    settings; None when that, or OUT, holds a suite of other settings (or it is OUT)."""
    defaults = parse_args([])
    settings = ("steps", "seeds", "rainbow_args", "ppo2_args")
    state = args.state
    if state is None and all(getattr(args, k) == getattr(defaults, k) for k in settings):
        state = STATE
    if state is None or state.resolve() == args.out.resolve():
        return None
    for where in (state, args.out):
        if (where / "suite.json").exists() and not same_suite(args, where):
            print(f"note: {where} holds a suite of other settings: {state} not used", flush=True)
            return None
    return state


def copy_finished(src: Path, dst: Path) -> int:
    """suite.json and the kept records of every run finished in `src` but not in `dst`, into
    `dst`; how many runs. What `dst` had of such a run (a stopped attempt, its resume point)
    is removed first, and results.json comes last: a half-copied run is not finished."""
    if not (src / "suite.json").is_file():
        return 0
    dst.mkdir(parents=True, exist_ok=True)
    if not (dst / "suite.json").is_file():
        shutil.copyfile(src / "suite.json", dst / "suite.json")
    copied = 0
    for results in sorted(src.glob("runs/*/*/seed*/results.json")):
        run = results.parent
        target = dst / run.relative_to(src)
        if not finished(run) or finished(target):
            continue
        if target.exists():
            lock = records.lock_dir(target, wait_s=5.0)  # no run may be writing there
            try:
                shutil.rmtree(target)
            finally:
                lock.close()
        for name in sorted(KEPT, key=lambda n: n == "results.json"):
            if (run / name).is_file() and not (run / name).is_symlink():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run / name, target / name)
        copied += 1
    return copied


def run_suite(cmd: list[str], args: argparse.Namespace) -> int:
    """The suite, with the kept runs restored before and the newly finished ones kept after
    (after Ctrl-C too: the suite stops its runs and exits, then they are copied)."""
    state = kept_state(args)
    if state is not None:
        restored = copy_finished(state, args.out)
        print(f"{restored} finished run(s) restored from {state}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:  # let the suite stop its runs and exit (a second SIGINT,
            proc.send_signal(signal.SIGINT)  # from a terminal, only keeps it stopping)
    if state is not None and same_suite(args, args.out):
        saved = copy_finished(args.out, state)
        print(f"{saved} newly finished run(s) kept in {state}", flush=True)
    print(f"suite finished in {(time.monotonic() - t0) / 60:.1f} min (exit {code})", flush=True)
    return code


def game_name(level: str) -> str:
    return level.split("-", 1)[0]


def normalized(score: float, level: str) -> float:
    scale = published_scale(level)
    assert scale is not None, level
    return scale(score)


def final_score(run: Run, window: int = FINAL_WINDOW) -> float:
    """The mean return of the finished episodes that ended in the run's last `window` of the
    timesteps it played (an episode costs its steps and its reset, as the server counts); NaN
    when none did."""
    ended, returns = 0, []
    for episode in run.episodes:
        ended += episode.l + 1
        if not episode.cut and ended > run.timesteps - window:
            returns.append(episode.r)
    return float(np.mean(returns)) if returns else math.nan


def done_runs(table: Table, agent: str, level: str, seeds: int | None = None) -> list[Run]:
    """The agent's runs on the level that ended well, those of seeds below `seeds` when given:
    not an interrupted or running run (its episodes so far are not its score), nor a failed one
    (a crash, out of memory, a timeout, env_error: stricter than the reports, so that a failure
    beside other work on one machine is played again, not kept)."""
    return [
        r
        for r in table.cell(agent, level).runs
        if r.status not in REDO | FAILED and (seeds is None or r.seed < seeds)
    ]


def score_matrix(
    table: Table, agent: str, seeds: int, score: Callable[[Run], float] = lambda r: r.score
) -> np.ndarray:
    """Human-normalized run scores (`score` of each run: the contest's by default), (seeds,
    games); NaN where a run is missing."""
    out = np.full((seeds, len(GAMES)), np.nan)
    for j, level in enumerate(GAMES):
        for run in done_runs(table, agent, level, seeds):
            if not math.isnan(value := score(run)):
                out[run.seed, j] = normalized(value, level)
    return out


def iqm_with_ci(scores: dict[str, np.ndarray], reps: int) -> dict[str, tuple[float, float, float]]:
    """rliable's IQM with its 95% stratified-bootstrap interval (evaluation.reports.stats)."""
    out = {}
    for a, m in scores.items():
        e = interval(m, "iqm", reps)
        out[a] = (e.point, e.low, e.high)
    return out


def print_scores(
    table: Table,
    scores: dict[str, np.ndarray],
    score: Callable[[Run], float],
    what: str,
    seeds: int,
) -> None:
    """The per-game table (raw mean over seeds, normalized in brackets, the published
    columns) of one kind of score, over the runs of the score matrices."""
    rows = []
    for j, level in enumerate(GAMES):
        g = game_name(level)
        raw = [np.nanmean([score(r) for r in done_runs(table, a, level, seeds)]) for a in AGENTS]
        rows.append(
            [
                g,
                *(
                    f"{v:.1f} ({scores[a][:, j].mean():+.3f})"
                    for v, a in zip(raw, AGENTS, strict=True)
                ),
                DER_100K[g],
                RAINBOW_100K[g],
            ]
        )
    print("\n".join(md_table(["game", *AGENTS, "DER 100k", "Rainbow 100k"], rows)))
    print(f"({what}, mean over seeds; in brackets: human-normalized)")


def print_iqm(
    scores: dict[str, np.ndarray], args: argparse.Namespace, what: str
) -> dict[str, tuple[float, float, float]]:
    iqm = iqm_with_ci(scores, args.reps)
    for a in AGENTS:
        p, lo, hi = iqm[a]
        ci = (
            f"95% CI [{lo:+.4f}, {hi:+.4f}]"
            if math.isfinite(lo)
            else f"no interval (fewer than {MIN_SEEDS} seeds)"
        )
        print(
            f"{a}: normalized IQM {p:+.4f}, {ci} of the {what} "
            f"({args.seeds} seed(s) × {len(GAMES)} games, {args.steps} steps)"
        )
    return iqm


def print_runs(table: Table, args: argparse.Namespace, partial: bool) -> None:
    """Each finished run's two scores (with 3 seeds the runs themselves are worth seeing; in a
    suite not finished yet, only they: partial, not a result)."""
    rows = [
        [game_name(level), a, run.seed, f"{run.score:.1f}", f"{final_score(run):.1f}"]
        for level in GAMES
        for a in AGENTS
        for run in sorted(done_runs(table, a, level), key=lambda r: r.seed)
        if run.seed < args.seeds and not math.isnan(run.score)
    ]
    total = len(GAMES) * len(AGENTS) * args.seeds
    if partial:
        print(f"partial: {len(rows)} of {total} runs finished (each run's scores; not a result)")
    else:
        print(f"each run's scores ({len(rows)} of {total} runs)")
    header = ["game", "agent", "seed", "contest score", f"end of learning (last {FINAL_WINDOW:,})"]
    print("\n".join(md_table(header, rows)))


def report(table: Table, args: argparse.Namespace) -> int:
    scores = {a: score_matrix(table, a, args.seeds) for a in AGENTS}
    missing = [a for a, m in scores.items() if np.isnan(m).any()]
    print_runs(table, args, partial=bool(missing))
    if missing:
        print(
            f"error: runs missing or unscored for {', '.join(missing)} in {args.out}: rerun "
            "the same command to resume (no IQM, no BENCH line before every run is done)",
            file=sys.stderr,
        )
        return 1
    window = f"episodes ending in the last {FINAL_WINDOW:,} steps"
    finals = {a: score_matrix(table, a, args.seeds, final_score) for a in AGENTS}
    end = f"end of learning: mean return of the {window}"
    print_scores(table, finals, final_score, end, args.seeds)
    if any(np.isnan(m).any() for m in finals.values()):
        print(f"no end-of-learning IQM: a run has no {window}")
    else:
        print_iqm(finals, args, f"end-of-learning scores ({window})")
        print_learns(finals, args, "end-of-learning scores")
    print_scores(table, scores, lambda r: r.score, "contest score", args.seeds)
    print_iqm(scores, args, "contest scores")
    learns = print_learns(scores, args, "contest scores")
    p = learns[1] if learns is not None else math.nan
    print(f"BENCH rainbow_learning p_value={p:.3g} target=<=0.05")
    return 0


def print_learns(
    scores: dict[str, np.ndarray], args: argparse.Namespace, what: str
) -> tuple[Estimate, float] | None:
    """The issue's test of learning, on the games where ppo2 beats random (its mean normalized
    score above random's): P(a Rainbow run beats a random run on such a game) with its 95%
    interval, and the one-sided p-value of a permutation test stratified by game (with 3 seeds
    the bootstrap interval is too narrow to rest on). Rainbow learns clearly when p ≤ 0.05."""
    games = [
        j for j in range(len(GAMES)) if scores["ppo2"][:, j].mean() > scores["random"][:, j].mean()
    ]
    names = ", ".join(game_name(GAMES[j]) for j in games)
    if not games:
        print(f"ppo2 beats random on no game ({what}): no test of learning")
        return None
    x, y = scores["rainbow"][:, games], scores["random"][:, games]
    e = probability_of_improvement(x, y, args.reps)
    p = permutation_p(x, y, args.reps)
    interval_text = f" [{e.low:.3f}, {e.high:.3f}]" if e.has_interval else " (no interval)"
    print(
        f"P(rainbow > random) on the games where ppo2 beats random ({names}), {what}: "
        f"{e.point:.3f}{interval_text} (95% CI); permutation test (stratified by game, "
        f"one-sided): p = {p:.3g} (learns clearly if p ≤ 0.05)"
    )
    return e, p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("rliable") is None:
        print(
            "rliable is missing: run `bash scripts/setup.sh` (a base dependency)", file=sys.stderr
        )
        return 2
    cmd = [
        sys.executable,
        "-m",
        "evaluation",
        "suite",
        "--agents",
        ",".join(AGENTS),
        "--levels",
        ",".join(GAMES),
        "--seeds",
        str(args.seeds),
        "--budget",
        str(args.steps),
        "--workers",
        str(args.workers),
        "--out",
        str(args.out),
        "--agent-args",
        f"rainbow={args.rainbow_args}",
        "--agent-args",
        f"ppo2={args.ppo2_args}",
    ]
    print("$ " + shlex.join(cmd), flush=True)
    if not args.report_only:
        subprocess.run(
            [sys.executable, "-m", "roms_setup", "import", "--bundled"],
            check=True,
            capture_output=True,
        )
        code = run_suite(cmd, args)
        if code != 0:
            what = "was stopped" if code == 130 else f"failed (exit {code})"
            print(f"the suite {what}: rerun the same command to resume", file=sys.stderr)
            return code
    return report(Table(load_runs(args.out), agents=AGENTS, levels=list(GAMES)), args)


if __name__ == "__main__":
    raise SystemExit(main())
