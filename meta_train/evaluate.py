"""Few-shot evaluation as in Finn et al.'s table: mean return after 0..S inner steps on fresh
tasks, for the meta-learned initialization beside a randomly initialized policy and, when given,
a jointly trained (pretrained on the task mixture) one. Every policy sees the same tasks and the
same rollout seeds.

For levels, the tasks are levels drawn from the training set, or from `levels` (e.g. a held-out
set such as atari-heldout), and the returns are in the game's units (see meta_train.loop)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.checkpoint import load_checkpoint, policy_from_checkpoint
from agent.policies import build_policy
from meta_train.loop import MAML_FORMAT, make_learner, make_sampler, resolve_device
from meta_train.meta_learner import MetaLearner
from meta_train.sampler import Sampler
from meta_train.tasks import TaskDistribution, describe
from sonic_common.errors import UserError
from sonic_common.files import write_atomic
from sonic_common.progress import progress

EVAL_SEED_OFFSET = 1_000_003  # evaluation tasks never coincide with training iterations' tasks


def adaptation_curve(
    learner: MetaLearner,
    sampler: Sampler,
    tasks: Sequence[dict[str, Any]],
    count: int,
    steps: int,
    seed: int,
    lrs: Sequence[float] | None = None,
    return_scale: float = 1.0,
    tick: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """Mean return per task (tasks, steps + 1) after 0..steps inner steps, × `return_scale`;
    `tick` is called after each step's sampling (progress)."""
    # seed of (task i, step j) independent of `steps`: runs with 1 or 3 steps share step 0
    seeds = np.array(
        [
            [
                np.random.SeedSequence([seed, EVAL_SEED_OFFSET, i, j]).generate_state(
                    1, dtype=np.uint32
                )[0]
                for j in range(steps + 1)
            ]
            for i in range(len(tasks))
        ]
    )
    current = [learner.detached() for _ in tasks]
    out = np.zeros((len(tasks), steps + 1))
    for j in range(steps + 1):
        trajs = sampler.sample(
            [(current[i], t, int(seeds[i, j])) for i, t in enumerate(tasks)], count
        )
        tick()
        for i, traj in enumerate(trajs):
            out[i, j] = traj.returns().mean() * return_scale
            if j < steps:
                lr = None if lrs is None else lrs[min(j, len(lrs) - 1)]
                current[i] = learner.adapted_detached(current[i], learner.prepare(traj), lr)
    return out


def _load(path: str | Path) -> dict[str, Any]:
    data = load_checkpoint(path)
    if data.get("maml_format") != MAML_FORMAT:
        raise UserError(f"{path} is not a meta_train checkpoint (no maml_format)")
    return data


def output_paths(prefix: str | Path) -> tuple[Path, Path]:
    """PREFIX.csv and PREFIX.json; a prefix ending in .csv or .json loses it, any other dot stays
    (`alpha0.05` → `alpha0.05.csv`, not `alpha0.csv`)."""
    prefix = Path(prefix)
    if prefix.suffix in (".csv", ".json"):
        prefix = prefix.with_suffix("")
    return prefix.with_name(prefix.name + ".csv"), prefix.with_name(prefix.name + ".json")


def write_results(out: str | Path, per_task: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """OUT.csv (mean and standard error over tasks per step and policy) and OUT.json (`info`),
    each written whole or not at all."""
    csv_path, json_path = output_paths(out)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    steps = next(iter(per_task.values())).shape[1]
    lines = [
        ",".join(
            [
                "policy",
                *[f"return_{j}" for j in range(steps)],
                *[f"stderr_{j}" for j in range(steps)],
            ]
        )
    ]
    for label, curve in per_task.items():
        se = (
            curve.std(axis=0, ddof=1) / np.sqrt(len(curve))
            if len(curve) > 1
            else np.zeros(curve.shape[1])
        )
        lines.append(
            ",".join([label, *[f"{x:.3f}" for x in curve.mean(axis=0)], *[f"{x:.3f}" for x in se]])
        )
    write_atomic(csv_path, "\n".join(lines) + "\n")
    write_atomic(json_path, json.dumps(info, indent=2))


def evaluate(
    checkpoint: str | Path,
    *,
    tasks: int = 40,
    adapt_steps: int = 3,
    trajectories: int | None = None,
    pretrained: str | Path | None = None,
    seed: int = 0,
    inner_lr: Sequence[float] | None = None,
    workers: int = 0,
    out: str | Path | None = None,
    levels: str | None = None,
    device: str | None = None,
) -> dict[str, list[float]]:
    """{label: mean return after 0..adapt_steps steps}; writes `out` (.csv and .json) if given.
    `levels`: for a levels checkpoint, evaluate on this level set instead of the training one.
    `device`: where torch runs, instead of the checkpoint config's."""
    data = _load(checkpoint)
    cfg = _evaluation_config(data["config"], levels, device)
    count = int(trajectories or cfg["trajectories"])
    dist = _task_distribution(cfg)
    task_list = dist.sample(tasks, np.random.default_rng([seed, EVAL_SEED_OFFSET]))
    learners = _learners(data, cfg, seed, pretrained)
    per_task = _curves(
        learners,
        cfg,
        dist,
        task_list,
        count=count,
        workers=workers,
        adapt_steps=adapt_steps,
        seed=seed,
        inner_lr=inner_lr,
    )
    results = {label: [float(x) for x in curve.mean(axis=0)] for label, curve in per_task.items()}
    if out is not None:
        write_results(
            out,
            per_task,
            {
                "checkpoint": str(checkpoint),
                "pretrained": str(pretrained) if pretrained else None,
                "tasks": tasks,
                "task_list": [describe(t) for t in task_list],
                "trajectories": count,
                "adapt_steps": adapt_steps,
                "seed": seed,
                "inner_lr": list(inner_lr) if inner_lr else None,
                "returns": results,
            },
        )
    return results


def _evaluation_config(
    cfg: dict[str, Any], levels: str | None, device: str | None
) -> dict[str, Any]:
    """The checkpoint's config with the evaluation's device and level set, if given."""
    cfg = cfg if device is None else {**cfg, "device": device}
    if levels is not None:
        if cfg["task"]["kind"] != "levels":
            raise UserError(f"--levels applies to level checkpoints, not {cfg['task']['kind']}")
        cfg = {**cfg, "task": {**cfg["task"], "levels": levels}}
    return cfg


def _task_distribution(cfg: dict[str, Any]) -> TaskDistribution:
    """The config's tasks, checked playable here (a one-line error otherwise)."""
    try:
        dist = TaskDistribution.from_config(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    dist.require_playable()
    return dist


def _learners(
    data: dict[str, Any], cfg: dict[str, Any], seed: int, pretrained: str | Path | None
) -> dict[str, MetaLearner]:
    """The policies compared, by label: the meta-learned one (with its learned step sizes), a
    random initialization (seeded by `seed`), and the pretrained checkpoint's if given."""
    learners: dict[str, MetaLearner] = {}
    device = resolve_device(cfg)
    meta = make_learner(policy_from_checkpoint(data, device), cfg)
    meta.load_step_size_state(data["step_sizes"])
    learners["maml"] = meta
    torch.manual_seed(seed)
    learners["random"] = make_learner(
        build_policy(data["policy_spec"]).to(device), {**cfg, "learn_inner_lr": False}
    )
    if pretrained is not None:
        pdata = _load(pretrained)
        learners["pretrained"] = make_learner(
            policy_from_checkpoint(pdata, device), pdata["config"]
        )
    return learners


def _curves(
    learners: dict[str, MetaLearner],
    cfg: dict[str, Any],
    dist: TaskDistribution,
    task_list: Sequence[dict[str, Any]],
    *,
    count: int,
    workers: int,
    adapt_steps: int,
    seed: int,
    inner_lr: Sequence[float] | None,
) -> dict[str, np.ndarray]:
    """Each policy's adaptation curve per task, (tasks, adapt_steps + 1), on the same tasks."""
    per_task: dict[str, np.ndarray] = {}
    # progress in sampling rounds: each policy samples all tasks once per step (0..adapt_steps)
    bar = progress(len(learners) * (adapt_steps + 1), unit="round", desc="evaluate")
    for label, learner in learners.items():
        with make_sampler(cfg, learner.policy, dist, count=count, workers=workers) as sampler:
            per_task[label] = adaptation_curve(
                learner,
                sampler,
                task_list,
                count,
                adapt_steps,
                seed,
                inner_lr,
                dist.return_scale,
                tick=lambda: bar.update(1),
            )
    bar.close()
    return per_task


def format_table(results: dict[str, list[float]]) -> str:
    steps = len(next(iter(results.values())))
    head = f"{'policy':<12}" + "".join(f"{f'{j} steps':>12}" for j in range(steps))
    lines = [head]
    for label, values in results.items():
        lines.append(f"{label:<12}" + "".join(f"{v:>12.2f}" for v in values))
    return "\n".join(lines)
