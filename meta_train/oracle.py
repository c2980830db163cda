"""Oracles of the HalfCheetah task families: a policy trained on each fixed task at the same
horizon, so that a MAML return can be read as a fraction of what a specialist reaches.

    python -m meta_train oracle --config halfcheetah-dir-repro.yaml --out runs/oracle-dir
        [--iterations 500] [--meta-batch 5] [--eval-trajectories 40] [--set key=value ...]

Direction: the tasks +1 and −1. Velocity: the goals 0.0, 0.2, 0.6, 1.0, 1.4, 1.8, 2.0 (0 and 2
are the ends of the configs' U[0, 2]; the oracle's return on another goal is interpolated
linearly between them, and held at the end values outside them). Each oracle is the config's
policy and meta-optimizer trained without adaptation (`--joint`) on its one task, `meta_batch`
× `trajectories` trajectories per iteration, resumable (OUT/<task>/ is a meta_train run). Each
is then evaluated on `--eval-trajectories` fresh trajectories; OUT/oracle.json holds per task the
mean return, its standard error, the iterations and environment steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from agent.checkpoint import load_checkpoint, policy_from_checkpoint
from sonic_common.errors import UserError

ORACLE_TASKS = {
    "halfcheetah-dir": [1.0, -1.0],
    "halfcheetah-vel": [0.0, 0.2, 0.6, 1.0, 1.4, 1.8, 2.0],
}
ORACLE_JSON = "oracle.json"
EVAL_SEED = 7_000_003  # evaluation rollouts never reuse a training iteration's seeds


def task_name(kind: str, value: float) -> str:
    return f"dir{value:+.0f}" if kind == "halfcheetah-dir" else f"vel{value:.2f}"


def oracle_config(
    cfg: dict[str, Any], value: float, iterations: int, meta_batch: int
) -> dict[str, Any]:
    key = "direction" if cfg["task"]["kind"] == "halfcheetah-dir" else "goal"
    return {
        **cfg,
        "task": {**cfg["task"], key: value},
        "adapt_steps": 0,
        "iterations": iterations,
        "meta_batch": meta_batch,
    }


def evaluate_oracle(checkpoint: Path, count: int) -> tuple[float, float]:
    """Mean undiscounted return and its standard error over `count` fresh trajectories."""
    from meta_train.sampler import Sampler
    from meta_train.tasks import TaskDistribution

    data = load_checkpoint(checkpoint)
    policy = policy_from_checkpoint(data, "cpu")
    task = TaskDistribution.from_config(data["config"]).sample(1, np.random.default_rng(0))[0]
    params = {k: v.detach() for k, v in policy.named_parameters()}
    with Sampler(policy) as sampler:
        returns = sampler.sample([(params, task, EVAL_SEED)], count)[0].returns()
    return float(returns.mean()), float(returns.std(ddof=1) / np.sqrt(len(returns)))


def train_oracles(
    cfg: dict[str, Any],
    out: Path,
    *,
    iterations: int = 500,
    meta_batch: int = 5,
    eval_trajectories: int = 40,
    progress: bool = True,
) -> dict[str, Any]:
    from meta_train.loop import train

    kind = str(cfg["task"]["kind"])
    if kind not in ORACLE_TASKS:
        raise UserError(f"oracles exist for {', '.join(ORACLE_TASKS)}, not {kind}")
    rows = []
    for value in ORACLE_TASKS[kind]:
        name = task_name(kind, value)
        ocfg = oracle_config(cfg, value, iterations, meta_batch)
        ckpt = train(ocfg, out / name, resume=True, joint=True, progress=progress)
        mean, stderr = evaluate_oracle(ckpt, eval_trajectories)
        saved = load_checkpoint(ckpt)
        rows.append(
            {
                "task": name,
                "value": value,
                "return": mean,
                "stderr": stderr,
                "iterations": int(saved["iteration"]),
                "env_steps": int(saved["timesteps"]),
                "trajectories": eval_trajectories,
            }
        )
        print(
            f"oracle {name}: {mean:.1f} ± {stderr:.1f} after {saved['iteration']} iterations",
            flush=True,
        )
    summary = {
        "kind": kind,
        "horizon": int(cfg["task"]["horizon"]),
        "action_scale": float(cfg["task"].get("action_scale", 1.0)),
        "tasks": rows,
        "mean": float(np.mean([r["return"] for r in rows])),
    }
    tmp = out / (ORACLE_JSON + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / ORACLE_JSON)
    return summary


def oracle_return(summary: dict[str, Any], tasks: list[dict[str, Any]]) -> float:
    """The oracles' expected mean return on `tasks`: per direction, or interpolated over the
    goal velocity."""
    values = np.array([r["value"] for r in summary["tasks"]])
    returns = np.array([r["return"] for r in summary["tasks"]])
    if summary["kind"] == "halfcheetah-dir":
        lookup = dict(zip(values.tolist(), returns.tolist(), strict=True))
        return float(np.mean([lookup[float(t["direction"])] for t in tasks]))
    order = np.argsort(values)
    return float(
        np.mean(np.interp([float(t["goal"]) for t in tasks], values[order], returns[order]))
    )
