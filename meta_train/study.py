"""The meta-optimizer study: VPG vs TRPO vs PPO on HalfCheetah direction and velocity, with 1, 2
and 3 adaptation steps. Resumable (every run resumes from its checkpoint; finished runs and
evaluations are skipped), results written atomically-enough to re-run at will.

    python -m meta_train.study --out docs/results/maml_study [--iterations 20] [--meta-batch 8]
        [--trajectories 10] [--horizon 100] [--eval-tasks 10] [--families dir,vel]
        [--optimizers vpg,trpo,ppo] [--steps 1,2,3]

Writes RUNS/<env>-<optimizer>-<steps>/ (the training runs, checkpoints included; default
runs/maml_study, git-ignored), OUT/metrics/<run>.csv (copies), OUT/study.csv (one row per run:
training returns averaged over its last iterations, evaluation returns after 0..S steps on fresh
tasks, seconds per iteration), OUT/study.png (post-adaptation training return per iteration) and
OUT/study.md (the table and the command).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from agent.config import load_config
from meta_train.configs import CONFIG_DIR, DEFAULTS
from sonic_common import plots
from sonic_common.errors import UserError, exit_on_user_error
from sonic_common.files import atomic_open
from sonic_common.markdown import md_table

ENVS = {"dir": "halfcheetah-dir.yaml", "vel": "halfcheetah-vel.yaml"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m meta_train.study", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--out",
        default="docs/results/maml_study",
        help="summaries: study.csv/.png/.md and a copy of each run's metrics.csv",
    )
    p.add_argument(
        "--runs",
        default="runs/maml_study",
        help="training runs (checkpoints; git-ignored by default)",
    )
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--meta-batch", type=int, default=8)
    p.add_argument("--trajectories", type=int, default=10)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--eval-tasks", type=int, default=10)
    p.add_argument("--families", default="dir,vel", help="HalfCheetah task families")
    p.add_argument("--optimizers", default="vpg,trpo,ppo")
    p.add_argument("--steps", default="1,2,3")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    return p.parse_args(argv)


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_one(args: argparse.Namespace, env: str, opt: str, steps: int, out: Path) -> dict[str, Any]:
    from meta_train.evaluate import evaluate
    from meta_train.loop import train

    run_dir = Path(args.runs) / f"{env}-{opt}-{steps}"
    overrides = [
        f"meta_batch={args.meta_batch}",
        f"trajectories={args.trajectories}",
        f"task.horizon={args.horizon}",
        f"iterations={args.iterations}",
        f"meta_optimizer={opt}",
        f"adapt_steps={steps}",
        f"seed={args.seed}",
        f"workers={args.workers}",
        "tensorboard=false",
    ]
    cfg = load_config(CONFIG_DIR / ENVS[env], overrides, defaults=DEFAULTS)
    ckpt = train(cfg, run_dir, resume=True, progress=True)
    eval_base = run_dir / f"evaluate-it{args.iterations}"  # re-evaluated after more iterations
    eval_file = eval_base.with_suffix(".json")
    if eval_file.is_file() and json.loads(eval_file.read_text())["tasks"] == args.eval_tasks:
        returns = json.loads(eval_file.read_text())["returns"]
    else:
        returns = evaluate(
            ckpt,
            tasks=args.eval_tasks,
            adapt_steps=steps,
            seed=args.seed,
            out=eval_base,
            workers=args.workers,
        )
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "metrics.csv", out / "metrics" / f"{env}-{opt}-{steps}.csv")
    rows = read_metrics(run_dir / "metrics.csv")
    tail = rows[-max(1, len(rows) // 4) :]
    mean = lambda key: sum(float(r[key]) for r in tail) / len(tail)  # noqa: E731
    row: dict[str, Any] = {
        "env": env,
        "optimizer": opt,
        "adapt_steps": steps,
        "iterations": len(rows),
    }
    columns = max(int(s) for s in args.steps.split(",")) + 1  # the study's most steps
    for j in range(columns):
        row[f"train_return_{j}"] = f"{mean(f'return_{j}'):.2f}" if j <= steps else ""
    for label in ("maml", "random"):
        for j in range(columns):
            row[f"{label}_eval_{j}"] = f"{returns[label][j]:.2f}" if j <= steps else ""
    row["sampling_s_per_it"] = f"{mean('sampling_s'):.2f}"
    row["learning_s_per_it"] = f"{mean('learning_s'):.2f}"
    return row


def _smooth(values: list[float], window: int = 5) -> list[float]:
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def plot(out: Path, runs: list[tuple[str, str, int]]) -> None:
    """Per task: the post-adaptation return, and the adaptation gain (return after S steps −
    before, on the same tasks: the task-to-task noise cancels), moving averages over 5
    iterations."""
    envs = sorted({e for e, _, _ in runs})
    fig, axes = plots.figure(6 * len(envs), 7, nrows=2, ncols=len(envs), squeeze=False)
    styles = {1: "-", 2: "--", 3: ":"}
    colors = {"vpg": "tab:blue", "trpo": "tab:orange", "ppo": "tab:green"}
    for col, env in enumerate(envs):
        for e, opt, steps in runs:
            if e != env:
                continue
            rows = read_metrics(out / "metrics" / f"{e}-{opt}-{steps}.csv")
            its = [int(r["iteration"]) for r in rows]
            after = [float(r[f"return_{steps}"]) for r in rows]
            gain = [a - float(r["return_0"]) for a, r in zip(after, rows, strict=True)]
            kw = {"color": colors.get(opt), "label": f"{opt} {steps} step(s)"}
            axes[0][col].plot(its, _smooth(after), styles.get(steps, "-"), **kw)
            axes[1][col].plot(its, _smooth(gain), styles.get(steps, "-"), **kw)
        axes[0][col].set_title(f"HalfCheetah {env}: return after adaptation (MA 5)")
        axes[1][col].set_title(f"HalfCheetah {env}: adaptation gain R_S − R_0 (MA 5)")
        axes[1][col].axhline(0.0, color="gray", lw=0.5)
        for ax in axes[:, col]:
            ax.set_xlabel("meta-iteration")
            ax.set_ylabel("mean return")
            ax.legend(fontsize=6)
    plots.save(fig, out / "study.png")


def study_runs(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(family, meta-optimizer, steps) of every run, each checked before the first trains."""
    from meta_train.configs import META_OPTIMIZERS

    families = [f.strip() for f in args.families.split(",")]
    optimizers = [o.strip() for o in args.optimizers.split(",")]
    for name, given, known in (
        ("--families", families, tuple(ENVS)),
        ("--optimizers", optimizers, META_OPTIMIZERS),
    ):
        unknown = [x for x in given if x not in known]
        if unknown:
            raise UserError(
                f"{name}: unknown {', '.join(map(repr, unknown))}: choose from {', '.join(known)}"
            )
    try:
        steps = [int(s) for s in args.steps.split(",")]
    except ValueError:
        steps = [0]
    if min(steps) < 1:
        raise UserError(f"--steps {args.steps}: give whole numbers ≥ 1, e.g. 1,2,3")
    return [(e, o, s) for e in families for o in optimizers for s in steps]


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    runs = study_runs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.monotonic()
    for env, opt, steps in runs:
        print(f"== {env} {opt} {steps} step(s)", file=sys.stderr, flush=True)
        rows.append(run_one(args, env, opt, steps, out))
    fields = list(rows[0])
    with atomic_open(out / "study.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    plot(out, runs)
    command = "python -m meta_train.study " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# MAML meta-optimizer study ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `{command}`",
        "",
        "Evaluation: mean return on fresh tasks after 0..S adaptation steps "
        "(`maml_eval_j`), beside a random initialization (`random_eval_j`); "
        "training columns average the last quarter of the iterations.",
        "",
        *md_table(fields, [[r[k] for k in fields] for r in rows]),
    ]
    reading = ""  # a hand-written "## Reading" section survives re-runs
    if (out / "study.md").is_file():
        old = (out / "study.md").read_text()
        if "## Reading" in old:
            reading = "\n" + old[old.index("## Reading") :]
    (out / "study.md").write_text("\n".join(lines) + "\n" + reading)
    print(
        f"study: {len(rows)} runs, {time.monotonic() - t0:.0f} s this call; "
        f"written {out / 'study.csv'}, {out / 'study.png'}, {out / 'study.md'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
