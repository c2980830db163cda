"""The HalfCheetah reproduction's results, from its runs: curves, Finn's table, summary.json.

    python -m meta_train.reproduction [--runs runs/repro] [--oracles runs/oracle]
        [--out docs/results/maml_reproduction] [--eval-tasks 40] [--workers 2] [--no-eval]

For every run RUNS/NAME (a meta_train output directory, e.g. made by scripts/maml-reproduction):
its metrics are copied to OUT/metrics/NAME.csv and, unless `--no-eval`, its checkpoint is
evaluated on `--eval-tasks` fresh tasks after 0..3 inner steps beside a random initialization
and, where RUNS/<task>-joint-s<seed> exists, the jointly trained policy (OUT/eval/NAME.json,
redone only when the run or that joint baseline has moved on; `--no-eval` keeps the last one
as it is). The oracles are read from ORACLES/dir/oracle.json and ORACLES/vel/oracle.json
(`python -m meta_train oracle`) where present. Writes OUT/curves.png (post-update training
return against environment steps, mean and min–max over seeds, the references' values as
lines), OUT/table.md and OUT/summary.json (one entry per run: task, meta_optimizer, changes
(its settings that differ from the defaults and from the other MAML runs: such runs are their
own group in the curves), seed, env_steps, return_0, return_1, oracle, oracle_fraction
(return_1 / oracle, where the oracle is positive: the direction target), gap_closed
((return_1 − return_0) / (oracle − return_0): the velocity target), ...).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from agent.checkpoint import CHECKPOINT_NAME, load_checkpoint
from meta_train.configs import META_OPTIMIZERS, RUN_LOCAL_KEYS, MetaTrainConfig, flat_config
from sonic_common import plots
from sonic_common.errors import UserError, exit_on_user_error
from sonic_common.markdown import md_table

# The references' plateau after one step at horizon 100 (RLlib's MAML on HalfCheetahRandDirec;
# learn2learn's MAML-TRPO example, whose horizon may have been 200 when its plot was made).
REFERENCES = {
    "halfcheetah-dir": (
        "references' plateau: RLlib ≈ 250–270 (from ≈ 60–100 M steps),\n"
        "learn2learn ≈ 265 (300 updates; 3 seeds, std ≈ 180 read off its plot)",
        250.0,
        270.0,
    )
}
# RLlib's published run (rl-experiments maml/halfcheetah-rand-direc.png: one run, TensorBoard's
# smoothed episode_reward_mean_adapt_1, steps counting the pre- and post-update samples, as ours)
# read off the image against its gridlines, session 12: (million steps, return after one step).
REFERENCE_CURVES = {
    "halfcheetah-dir": (
        "RLlib's MAML, one run (read off its published curve)",
        ((0, -29), (17.7, 0), (20, 39), (25, 92), (30, 142), (35, 166), (40, 198), (45, 221))
        + ((50, 229), (60, 237)),
    )
}
SHORT = {"halfcheetah-dir": "dir", "halfcheetah-vel": "vel"}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def parse_task(label: str) -> dict[str, float]:
    """Back from `meta_train.tasks.describe`: dir+1 / vel0.53."""
    if label.startswith("dir"):
        return {"direction": float(label[3:])}
    return {"goal": float(label[3:])}


IGNORED = RUN_LOCAL_KEYS | {"seed"}  # not what makes a run another variant


def own_settings(info: dict[str, Any], defaults: dict[str, Any]) -> dict[str, str]:
    """The run's settings that differ from MetaTrainConfig's defaults (flat keys, values as
    text), leaving out how it ran (RUN_LOCAL_KEYS), its seed, and other meta-optimizers'
    sections."""
    others = set(META_OPTIMIZERS) - {info["meta_optimizer"]}
    out = {}
    for k, v in flat_config(info["config"]).items():
        top = k.split(".")[0]
        if top in IGNORED or top in others or k not in defaults or v == defaults[k]:
            continue
        out[k] = f"{v:g}" if isinstance(v, float) else str(v)
    return out


def label_changes(infos: list[dict[str, Any]]) -> None:
    """Each MAML run's `changes`: its settings that differ from the defaults and are not shared
    by every MAML run of every task family (their common scale is no variant; the family itself,
    `task.kind`, is not one either), so runs that differ in a setting are separate curves, not
    more seeds of one, and a family's only run still names what it changed."""
    defaults = flat_config(dataclasses.asdict(MetaTrainConfig()))
    maml = [i for i in infos if not i["joint"]]
    own = [own_settings(i, defaults) for i in maml]
    shared = set.intersection(*(set(o.items()) for o in own)) if own else set()
    for info, settings in zip(maml, own, strict=True):
        info["changes"] = ", ".join(
            f"{k}={v}"
            for k, v in sorted(settings.items())
            if (k, v) not in shared and k != "task.kind"
        )


def variant(info: dict[str, Any]) -> str:
    """MAML-TRPO, or MAML-TRPO (trpo.max_kl=0.06) for changed settings."""
    label = f"MAML-{info['meta_optimizer'].upper()}"
    return f"{label} ({info['changes']})" if info["changes"] else label


def run_info(run: Path) -> dict[str, Any]:
    saved = load_checkpoint(run / CHECKPOINT_NAME)
    cfg = saved["config"]
    opt = str(saved["meta_optimizer"])
    iterations = int(saved["iteration"])
    # one row per iteration of the checkpoint: a row repeated (two processes resumed the same
    # run) or past the checkpoint (a crash after the row was written) is not counted twice
    by_iteration = {int(r["iteration"]): r for r in read_csv(run / "metrics.csv")}
    rows = [by_iteration[i] for i in sorted(by_iteration) if i < iterations]
    return {
        "name": run.name,
        "task": str(cfg["task"]["kind"]),
        "meta_optimizer": opt,
        "config": cfg,
        "changes": "",  # label_changes, which needs the other runs
        "seed": int(cfg["seed"]),
        "joint": bool(saved.get("joint", False)),
        "iterations": iterations,
        "env_steps": int(saved["timesteps"]),
        "action_scale": float(cfg["task"].get("action_scale", 1.0)),
        "wall_s": round(sum(float(r["sampling_s"]) + float(r["learning_s"]) for r in rows), 1),
        "metrics": rows,
    }


def evaluate_run(
    info: dict[str, Any], runs: Path, out: Path, tasks: int, workers: int = 2
) -> dict[str, Any]:
    from meta_train.evaluate import evaluate

    path = out / "eval" / f"{info['name']}.json"
    joint = runs / f"{SHORT[info['task']]}-joint-s{info['seed']}" / CHECKPOINT_NAME
    joint_iterations = int(load_checkpoint(joint)["iteration"]) if joint.is_file() else None
    if path.is_file():
        done = json.loads(path.read_text())
        if (
            done.get("iterations") == info["iterations"]
            and done.get("tasks") == tasks
            and done.get("pretrained_iterations") == joint_iterations
        ):
            return done
    evaluate(
        runs / info["name"] / CHECKPOINT_NAME,
        tasks=tasks,
        adapt_steps=3,
        pretrained=joint if joint.is_file() else None,
        out=path.with_suffix(""),
        workers=workers,
    )
    result = json.loads(path.read_text())
    with open(path.with_suffix(".csv"), newline="") as f:
        result["stderr"] = {
            r["policy"]: [float(r[f"stderr_{j}"]) for j in range(4)] for r in csv.DictReader(f)
        }
    result["iterations"] = info["iterations"]
    result["pretrained_iterations"] = joint_iterations
    path.write_text(json.dumps(result, indent=2))
    return result


def last_evaluation(info: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """The run's last evaluation (`--no-eval`: kept, at whatever iteration it was made)."""
    path = out / "eval" / f"{info['name']}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def oracle_for(task: str, oracles: Path, task_list: list[str]) -> float | None:
    from meta_train.oracle import ORACLE_JSON, oracle_return

    path = oracles / SHORT[task] / ORACLE_JSON
    if not path.is_file() or not task_list:
        return None
    return oracle_return(json.loads(path.read_text()), [parse_task(t) for t in task_list])


def curve_groups(infos: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    """The MAML runs of a task family by variant (meta-optimizer and changed settings): the
    seeds each curve averages."""
    out: dict[str, list[dict[str, Any]]] = {}
    for info in infos:
        if info["task"] == kind and not info["joint"]:
            out.setdefault(variant(info), []).append(info)
    return dict(sorted(out.items()))


def draw_references(ax: Any, kind: str, oracle: float | None) -> None:
    if kind in REFERENCES:
        text, low, high = REFERENCES[kind]
        ax.axhspan(low, high, color="grey", alpha=0.25, label=text)
    if kind in REFERENCE_CURVES:
        text, points = REFERENCE_CURVES[kind]
        x, y = zip(*points, strict=True)
        ax.plot(x, y, ls="--", lw=1, marker=".", color="dimgrey", label=text)
    if oracle is not None:
        ax.axhline(oracle, ls=":", color="black", label="our oracle")


def plot_curves(infos: list[dict[str, Any]], oracles: dict[str, float | None], path: Path) -> None:
    kinds = sorted({i["task"] for i in infos})
    fig, axes = plots.figure(
        7.0 * max(1, len(kinds)), 6.5, dpi=110, ncols=max(1, len(kinds)), squeeze=False
    )
    for ax, kind in zip(axes[0], kinds, strict=False):
        for name, group in curve_groups(infos, kind).items():
            n = min(len(i["metrics"]) for i in group)
            x = np.array([float(r["env_steps"]) for r in group[0]["metrics"][:n]]) / 1e6
            ys = np.array([[float(r["return_1"]) for r in i["metrics"][:n]] for i in group])
            label = f"{name}, {len(group)} seed{'s' if len(group) > 1 else ''}"
            (line,) = ax.plot(x, ys.mean(axis=0), label=label)
            before = np.array([[float(r["return_0"]) for r in i["metrics"][:n]] for i in group])
            ax.plot(
                x,
                before.mean(axis=0),
                ls=":",
                lw=1,
                color=line.get_color(),
                label=f"{name} before the step",
            )
            if len(group) > 1:
                ax.fill_between(
                    x, ys.min(axis=0), ys.max(axis=0), alpha=0.2, color=line.get_color()
                )
        draw_references(ax, kind, oracles.get(kind))
        ax.set_title(f"HalfCheetah {SHORT[kind]}: return after one inner step (training)")
        ax.set_xlabel("environment steps (millions)")
        ax.set_ylabel("mean return over the meta-batch")
        ax.legend(  # below the axes: the curves fill the plot
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncol=2,
            title="lines: mean over seeds; band: min–max over seeds",
            title_fontsize=7,
        )
    plots.save(fig, path)


def fmt(mean: float, se: float | None) -> str:
    return f"{mean:.1f}" if se is None else f"{mean:.1f} ± {se:.1f}"


def evaluated_at(info: dict[str, Any], result: dict[str, Any]) -> tuple[int, int]:
    """(iterations, environment steps) of the checkpoint the evaluation was made on."""
    iterations = int(result.get("iterations", info["iterations"]))
    return iterations, int(info["metrics"][iterations - 1]["env_steps"])


def against_oracle(maml: list[float], oracle: float | None) -> dict[str, float | None]:
    """After one step, as a fraction of the oracle (where returns are positive: direction) and
    of the gap from before the step to it (any sign: velocity's returns are below 0)."""
    if oracle is None:
        return {"oracle_fraction": None, "gap_closed": None}
    gap = oracle - maml[0]
    return {
        "oracle_fraction": maml[1] / oracle if oracle > 0 else None,
        "gap_closed": (maml[1] - maml[0]) / gap if gap > 0 else None,
    }


def run_table(info: dict[str, Any], result: dict[str, Any], oracle: float | None) -> list[str]:
    iterations, steps = evaluated_at(info, result)
    head = [
        f"**{info['name']}** ({info['task']}, {variant(info)}, seed "
        f"{info['seed']}, evaluated at iteration {iterations} = {steps / 1e6:.1f} M steps; "
        f"the run is at {info['iterations']}, {info['wall_s'] / 3600:.2f} h of training; "
        f"{result['tasks']} fresh tasks, mean ± standard error over tasks)",
        "",
    ]
    rows = []
    for label, values in result["returns"].items():
        se = result.get("stderr", {}).get(label, [None] * len(values))
        rows.append([label, *(fmt(v, s) for v, s in zip(values, se, strict=True))])
    tail = []
    if oracle is not None:
        rows.append(["oracle", f"{oracle:.1f}", "", "", ""])
        ratios = against_oracle(result["returns"]["maml"], oracle)
        said = [
            f"{v:.2f} {what}"
            for v, what in [
                (ratios["oracle_fraction"], "of the oracle"),
                (ratios["gap_closed"], "of the gap from before the step to the oracle"),
            ]
            if v is not None
        ]
        tail = ["", "MAML after one step: " + ", ".join(said)] if said else []
    table = md_table(["start", "0 steps", "1 step", "2 steps", "3 steps"], rows)
    return head + table + tail + [""]


def summary_row(
    info: dict[str, Any], result: dict[str, Any], oracle: float | None
) -> dict[str, Any]:
    """One run's entry of summary.json: the run, where it was evaluated, MAML's returns."""
    maml = result["returns"]["maml"]
    iterations, steps = evaluated_at(info, result)
    keys = ("name", "task", "meta_optimizer", "changes", "seed", "action_scale")
    return {k: info[k] for k in keys} | {
        "env_steps": steps,
        "iterations": iterations,
        "run_iterations": info["iterations"],
        "run_wall_s": info["wall_s"],
        "return_0": maml[0],
        "return_1": maml[1],
        "returns": maml,
        "oracle": oracle,
        **against_oracle(maml, oracle),
        "eval_tasks": result["tasks"],
        "machine": f"{platform.machine()}, {_cores()} cores",
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m meta_train.reproduction", description=__doc__.splitlines()[0]
    )
    p.add_argument("--runs", default="runs/repro")
    p.add_argument("--oracles", default="runs/oracle")
    p.add_argument("--out", default="docs/results/maml_reproduction")
    p.add_argument("--eval-tasks", type=int, default=40)
    p.add_argument("--no-eval", action="store_true", help="curves and metrics only")
    p.add_argument("--workers", type=int, default=2, help="sampler processes of the evaluation")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    if not runs.is_dir():
        raise UserError(
            f"--runs {runs}: no such directory; start the runs with "
            "scripts/maml-reproduction or give their directory"
        )
    infos = [
        run_info(r)
        for r in sorted(runs.iterdir())
        if (r / CHECKPOINT_NAME).is_file() and (r / "metrics.csv").is_file()
    ]
    if not infos:  # the summary in --out must not be replaced by an empty one
        raise UserError(
            f"--runs {runs} holds no run (a directory with {CHECKPOINT_NAME} and "
            "metrics.csv): give the runs' directory (default runs/repro)"
        )
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    label_changes(infos)
    summary, tables, oracles = [], [], {}
    for info in infos:
        shutil.copyfile(
            runs / info["name"] / "metrics.csv", out / "metrics" / f"{info['name']}.csv"
        )
        if info["joint"]:
            continue
        result = (
            last_evaluation(info, out)
            if args.no_eval
            else evaluate_run(info, runs, out, args.eval_tasks, args.workers)
        )
        if result is None:
            continue
        oracle = oracle_for(info["task"], Path(args.oracles), result.get("task_list", []))
        oracles[info["task"]] = oracle
        summary.append(summary_row(info, result, oracle))
        tables += run_table(info, result, oracle)
    plot_curves(infos, oracles, out / "curves.png")
    (out / "table.md").write_text("\n".join(tables))
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")
    print(
        f"written: {out / 'curves.png'}, {out / 'table.md'}, {out / 'summary.json'} "
        f"({len(infos)} runs)"
    )
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    raise SystemExit(main())
