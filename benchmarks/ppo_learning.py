"""Does the PPO2 agent learn inside the contest? Its contest score against random and JERK.

    .venv/bin/python benchmarks/ppo_learning.py            # ~35 min on 2 cores (2 workers)
    .venv/bin/python benchmarks/ppo_learning.py --report-only   # redo the figures from OUT

Runs the real evaluation (`python -m evaluation suite`: one environment server per run, the
agents as `python -m agent.NAME` processes over the contest connection, the budget enforced by
the server) for ppo2, jerk and random on one ROM-free level (Seaquest, Atari 2600 ROM shipped
with ale-py), K seeds each, then writes a learning-curve PNG and a table into
docs/results/ppo_learning/.

PPO2 runs with the contest baseline's settings (agent.configs.PPO2: Nature CNN on 84×84×4
frames, γ 0.99, λ 0.95, clip 0.1, entropy 0.01, reward × 0.01) except for the rollout and
optimizer sizes, passed on the command line (`--set`): the baseline's nsteps 4096 with one
environment makes only ~20 updates in 80k steps, too few to learn anything in a CPU budget;
nsteps 256 with 4 minibatches of 64, 4 epochs and lr 2.5e-4 (the Atari PPO settings of Schulman
et al. 2017, for one environment) update every 256 steps. torch_threads 1: two runs share the
machine's 2 cores.

Metric: ppo2_vs_random = contest score of ppo2 / contest score of random, where the contest
score of an agent on the level is the mean over seeds of the run score (the mean return of all
episodes finished within the budget, learning included). Seaquest's scores are positive (random
gets ~80 per episode), so the ratio is well defined. Target: >= 1.5, i.e. over the whole budget,
early episodes included, PPO2 averages at least 1.5x what random does. The script also prints the
difference in units of random's per-episode standard deviation, and the same figures for JERK.

The last line is `BENCH ppo_learning ppo2_vs_random=<ratio> target=>=1.5`.
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.reports.report import Table, load_runs, run_curve  # noqa: E402
from sonic_common import plots  # noqa: E402
from sonic_common.files import write_atomic  # noqa: E402
from sonic_common.markdown import md_table  # noqa: E402

LEVEL = "Seaquest-Atari2600-v0:Start"
AGENTS = ("ppo2", "jerk", "random")
PPO2_ARGS = (
    "--set nsteps=256 --set nminibatches=4 --set noptepochs=4 --set lr=2.5e-4 "
    "--set torch_threads=1 --set tensorboard=false"
)
TARGET = 1.5
COLORS = {"ppo2": "tab:blue", "jerk": "tab:orange", "random": "tab:gray"}
DOCS = ROOT / "docs" / "results" / "ppo_learning"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", default=LEVEL)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=80_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ppo2-args", default=PPO2_ARGS, help="arguments of the ppo2 agent")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "results" / "ppo_learning",
        help="the suite's directory (resumable: rerun the same command)",
    )
    ap.add_argument("--docs", type=Path, default=DOCS, help="where the PNG and table go")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="do not run the suite, only read OUT and write the figures",
    )
    return ap.parse_args(argv)


def suite_command(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "evaluation",
        "suite",
        "--agents",
        ",".join(AGENTS),
        "--levels",
        args.level,
        "--seeds",
        str(args.seeds),
        "--budget",
        str(args.budget),
        "--workers",
        str(args.workers),
        "--out",
        str(args.out),
        "--agent-args",
        f"ppo2={args.ppo2_args}",
    ]


def episode_stats(table: Table, agent: str, level: str) -> tuple[np.ndarray, list[float]]:
    """All finished episodes' returns (pooled over seeds) and the per-seed run scores."""
    cell = table.cell(agent, level)
    returns = [e.r for r in cell.counted for e in r.episodes if not e.cut]
    return np.array(returns, dtype=float), [r.score for r in cell.counted]


def binned_curve(run, edges: np.ndarray) -> np.ndarray:  # noqa: ANN001 (evaluation.reports.report.Run)
    """Mean return of the episodes that finished in each timestep bin (NaN: none finished)."""
    ends = np.cumsum([e.l for e in run.episodes])
    out = np.full(len(edges) - 1, np.nan)
    r = np.array([e.r for e in run.episodes], dtype=float)
    keep = np.array([not e.cut for e in run.episodes], dtype=bool)
    for i in range(len(edges) - 1):
        m = keep & (ends > edges[i]) & (ends <= edges[i + 1])
        if m.any():
            out[i] = r[m].mean()
    return out


def plot(table: Table, level: str, budget: int, path: Path, stats: dict) -> None:
    fig, (ax, bx) = plots.figure(12, 4.6, dpi=110, ncols=2, width_ratios=[2.2, 1])
    bins = 10
    edges = np.linspace(0, budget, bins + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    grid = np.linspace(0, budget, 200)
    for agent in table.agents:
        runs = table.cell(agent, level).counted
        if not runs:
            continue
        c = COLORS.get(agent)
        for r in runs:  # each seed: the mean of its last 10 episodes, thin
            ax.plot(grid, run_curve(r, grid), color=c, alpha=0.25, lw=0.8)
        b = np.array([binned_curve(r, edges) for r in runs])
        with np.errstate(all="ignore"):
            mean = np.nanmean(b, axis=0)
        ax.plot(
            mids,
            mean,
            color=c,
            lw=2.4,
            marker="o",
            ms=4,
            label=f"{agent}: score {stats[agent]['score']:.0f}",
        )
    nseeds = len(table.cell(table.agents[0], level).counted)
    ax.set_xlabel("agent steps (the server's count, resets included)")
    ax.xaxis.set_major_formatter(lambda x, _pos: f"{x / 1000:.0f}k")
    ax.set_ylabel("episode return")
    ax.set_title(
        f"{level}, {budget // 1000}k-step budget\nthick: mean return of the episodes "
        f"ending in each {budget // bins // 1000}k-step bin, mean over {nseeds} seeds; "
        "thin: each seed, mean of its last 10 episodes",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    ax.set_xlim(0, budget)
    ax.set_ylim(bottom=-0.03 * max(1.0, ax.get_ylim()[1]))

    for i, agent in enumerate(table.agents):
        s = stats[agent]
        c = COLORS.get(agent)
        bx.bar(i, s["score"], color=c, alpha=0.6)
        bx.scatter([i] * len(s["seeds"]), s["seeds"], color="black", s=14, zorder=3)
        bx.annotate(
            f"{s['score']:.0f}",
            (i, s["score"]),
            xytext=(12, 2),
            textcoords="offset points",
            fontsize=9,
        )
    bx.set_xticks(range(len(table.agents)), table.agents)
    bx.set_ylabel("contest score (mean return of all finished episodes)")
    bx.set_title("contest score\nmean over seeds (bar), each seed (dots)", fontsize=9)
    bx.grid(axis="y", alpha=0.3)
    plots.save(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cmd = suite_command(args)
    print("$ " + shlex.join(cmd), flush=True)
    if not args.report_only:
        t0 = time.monotonic()
        done = subprocess.run(cmd, cwd=ROOT)
        print(
            f"suite finished in {(time.monotonic() - t0) / 60:.1f} min (exit {done.returncode})",
            flush=True,
        )
        if done.returncode != 0:
            print(
                f"error: the suite failed (exit {done.returncode}); rerun to resume",
                file=sys.stderr,
            )
            return done.returncode

    runs = load_runs(args.out)
    table = Table(runs, agents=AGENTS, levels=[args.level])
    bad = [r for r in runs if r.status != "budget"]
    for r in bad:
        print(f"warning: {r.agent} seed {r.seed} ended with {r.status}: {r.error}")
    stats: dict[str, dict] = {}
    for agent in AGENTS:
        eps, seeds = episode_stats(table, agent, args.level)
        seeds = [s for s in seeds if not math.isnan(s)]
        if not seeds:
            print(f"error: no scored run of {agent} in {args.out}", file=sys.stderr)
            return 1
        # the last fifth of the budget: where the learner stands at the end
        counted = table.cell(agent, args.level).counted
        late = [
            e.r
            for r in counted
            for e, end in zip(r.episodes, np.cumsum([e.l for e in r.episodes]), strict=True)
            if not e.cut and end > 0.8 * args.budget
        ]
        stats[agent] = {
            "score": float(np.mean(seeds)),
            "seeds": seeds,
            "seed_std": float(np.std(seeds, ddof=1)) if len(seeds) > 1 else math.nan,
            "episodes": len(eps),
            "ep_std": float(np.std(eps, ddof=1)) if len(eps) > 1 else 0.0,
            "late": float(np.mean(late)) if late else math.nan,
            "wall_min": float(np.mean([r.wallclock_s for r in counted])) / 60,
        }
    rnd = stats["random"]
    for agent in AGENTS:
        s = stats[agent]
        s["ratio"] = s["score"] / rnd["score"] if rnd["score"] > 0 else math.nan
        s["diff_sd"] = (s["score"] - rnd["score"]) / rnd["ep_std"] if rnd["ep_std"] else math.nan

    args.docs.mkdir(parents=True, exist_ok=True)
    png = args.docs / "learning_curves.png"
    plot(table, args.level, args.budget, png, stats)
    header_cells = [
        "agent",
        "contest score ± std over seeds",
        "per seed",
        "episodes",
        f"mean return, last {args.budget // 5 // 1000}k steps",
        "÷ random",
        "(− random) / random's episode std",
        "wall clock per run",
    ]
    rows = [
        [
            agent,
            f"{s['score']:.1f} ± {s['seed_std']:.1f}",
            ", ".join(f"{v:.1f}" for v in s["seeds"]),
            s["episodes"],
            f"{s['late']:.1f}",
            f"{s['ratio']:.2f}",
            f"{s['diff_sd']:+.2f}",
            f"{s['wall_min']:.1f} min",
        ]
        for agent, s in ((a, stats[a]) for a in AGENTS)
    ]
    table_md = "\n".join(md_table(header_cells, rows)) + "\n"
    header = (
        f"Level `{args.level}`, {args.seeds} seeds (0..{args.seeds - 1}), budget "
        f"{args.budget:,} steps per run, `python -m evaluation suite` with "
        f"{args.workers} workers.\nppo2 arguments: `{args.ppo2_args}`.\n\n"
    )
    write_atomic(args.docs / "table.md", header + table_md)
    print(table_md, end="")
    print(f"figure: {png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}")
    for agent in ("ppo2", "jerk"):
        s = stats[agent]
        print(
            f"{agent} vs random: score ratio {s['ratio']:.3f}, difference "
            f"{s['score'] - rnd['score']:+.1f} = {s['diff_sd']:+.2f} random episode std "
            f"({rnd['ep_std']:.1f})"
        )
    jerk = stats["jerk"]["score"]
    print(
        f"ppo2 vs jerk: difference {stats['ppo2']['score'] - jerk:+.1f}"
        + (
            f", score ratio {stats['ppo2']['score'] / jerk:.3f}"
            if jerk > 0
            else " (JERK's score is not positive: no ratio)"
        )
    )
    print(f"BENCH ppo_learning ppo2_vs_random={stats['ppo2']['ratio']:.3f} target=>={TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
