"""The meta-training loop: sample tasks, collect pre/post-adaptation trajectories, meta-step, log,
checkpoint. Resumable: every iteration's tasks and rollout seeds are functions of (seed,
iteration), and the checkpoint holds θ, α and the meta-optimizer state, so `--resume` continues
exactly as a straight run would.

metrics.csv, one row per meta-iteration: `return_j` is the mean over the meta-batch's tasks and
their trajectories of a trajectory's undiscounted return after j inner steps. For HalfCheetah a
trajectory is one episode. For levels (`task.kind: levels`) it is the sum of the rewards over
the `task.horizon` steps of the trajectory (which may span several episodes), reported in the
game's units: the training reward (after the backtracking wrapper, when on) divided by
`task.reward_scale`. `env_steps` counts agent steps (each 4 emulator frames for levels).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from agent.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from agent.policies import ActorCritic, build_policy, spec_from_config
from agent.train_log import LogLayout, TrainLogger, summary_writer
from agent.wrappers import WrapperConfig
from meta_train.collect import collect
from meta_train.configs import META_OPTIMIZERS, flat_config
from meta_train.meta_learner import MetaLearner, TaskBatch, iteration_seeds
from meta_train.meta_optimizers import make_meta_optimizer
from meta_train.sampler import Sampler
from meta_train.tasks import TaskDistribution, make_env
from sonic_common.devices import choose_device, set_torch_threads
from sonic_common.errors import UserError

METRICS_CSV = "metrics.csv"
MAML_FORMAT = "maml/1"


def policy_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    """The network for the config's tasks. For levels, make_env gives the lazy LevelEnv: its
    spaces, and no emulator in this process."""
    dist = TaskDistribution.from_config(cfg)
    env = make_env(dist.sample(1, np.random.default_rng(0))[0])
    try:
        pol = dict(cfg["policy"])
        pol.setdefault("body", "auto")  # auto: the Nature CNN for frames, an MLP otherwise
        spec = spec_from_config(pol, env.observation_space, env.action_space)
    finally:
        env.close()
    if spec["action"]["type"] == "gaussian":
        spec["action"]["init_std"] = float(cfg["policy"].get("init_std", 1.0))
    return spec


def resolve_device(cfg: dict[str, Any]) -> torch.device:
    """The config's `device` (default cpu): cpu, cuda (an error without a GPU) or auto."""
    return choose_device(str(cfg.get("device", "cpu")))


def make_learner(policy: ActorCritic, cfg: dict[str, Any]) -> MetaLearner:
    return MetaLearner(
        policy,
        adapt_steps=int(cfg["adapt_steps"]),
        inner_lr=float(cfg["inner_lr"]),
        learn_inner_lr=bool(cfg["learn_inner_lr"]),
        first_order=bool(cfg["first_order"]),
        gamma=float(cfg["gamma"]),
        gae_lambda=float(cfg["gae_lambda"]),
        ridge=float(cfg["baseline_ridge"]),
        grad_chunk=int(cfg.get("grad_chunk", 0)),
    )


def adaptation_settings(cfg: dict[str, Any], steps: int) -> dict[str, Any]:
    """What an agent needs to adapt as meta-training did (the checkpoint's `adaptation`; the
    per-parameter α, when learned, is in its `step_sizes`)."""
    task = cfg["task"]
    return {
        "adapt_steps": int(steps),
        "trajectories": int(cfg["trajectories"]),
        "horizon": int(task["horizon"]),
        "inner_lr": float(cfg["inner_lr"]),
        "gamma": float(cfg["gamma"]),
        "gae_lambda": float(cfg["gae_lambda"]),
        "baseline_ridge": float(cfg["baseline_ridge"]),
        **WrapperConfig.from_dict(task).as_dict(),
    }


def check_finite(info: dict[str, Any], it: int, learner: MetaLearner, ckpt_path: Path) -> None:
    """Stop with a one-line error when a meta-step diverged, before it is checkpointed."""
    bad = [
        k
        for k in ("loss_before", "loss_after", "kl")
        if k in info and not math.isfinite(float(info[k]))
    ]
    if bad or not all(torch.isfinite(p).all() for p in learner.meta_parameters()):
        what = ", ".join(f"{k}={info[k]}" for k in bad) or "parameters not finite"
        raise UserError(
            f"meta-iteration {it} diverged ({what}); {ckpt_path} keeps iteration "
            f"{it - 1}: lower the meta-optimizer's lr or inner_lr and --resume"
        )


def _int_setting(cfg: dict[str, Any], key: str) -> int:
    value = cfg[key]
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise UserError(f"{key} must be a whole number, got {value!r}: e.g. --set {key}=10")
    return int(value)


def check_config(cfg: dict[str, Any]) -> None:
    for key in ("iterations", "meta_batch", "trajectories"):
        if _int_setting(cfg, key) < 1:
            raise UserError(f"{key} must be ≥ 1, got {cfg[key]}")
    if _int_setting(cfg, "adapt_steps") < 0:
        raise UserError(f"adapt_steps must be ≥ 0, got {cfg['adapt_steps']}")
    if cfg["meta_optimizer"] not in META_OPTIMIZERS:
        raise UserError(
            f"meta_optimizer must be one of {', '.join(META_OPTIMIZERS)}, "
            f"not {cfg['meta_optimizer']!r}"
        )
    if cfg["meta_optimizer"] == "reptile" and bool(cfg["learn_inner_lr"]):
        raise UserError(
            "meta_optimizer reptile does not learn the inner step size: set learn_inner_lr=false"
        )
    if int(cfg["workers"]) < 0:
        raise UserError(f"workers must be ≥ 0, got {cfg['workers']}")
    target_kl = cfg["ppo"].get("target_kl")
    if target_kl is not None and not float(target_kl) > 0:
        raise UserError(f"ppo.target_kl must be above 0 (or null: off), got {target_kl}")
    try:
        TaskDistribution.from_config(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None


def make_sampler(
    cfg: dict[str, Any],
    policy: ActorCritic,
    dist: TaskDistribution,
    count: int | None = None,
    workers: int | None = None,
) -> Any:
    """The sampler for the config's tasks. Levels: the level sampler with the config's
    `workers` emulator processes (0: one per trajectory, `count` or the config's
    `trajectories`), after checking that every level is playable (a one-line UserError before
    any worker starts); the `workers` argument is not used. HalfCheetah: `Sampler` with
    `workers` processes (default: the config's).
    `backend: ray`: one such sampler per node of the Ray cluster (meta_train.ray_sampler)."""
    if cfg.get("backend", "local") == "ray":
        from meta_train.ray_sampler import RaySampler

        if dist.kind == "levels":
            dist.require_playable()
        return RaySampler(
            policy, cfg, int(count or cfg["trajectories"]), address=cfg.get("ray_address")
        )
    if dist.kind == "levels":
        from meta_train.level_sampler import LevelSampler

        dist.require_playable()
        envs = int(cfg["workers"]) or int(count or cfg["trajectories"])
        return LevelSampler(policy, envs=envs)
    return Sampler(policy, workers=int(cfg["workers"] if workers is None else workers))


def metric_fields(adapt_steps: int) -> list[str]:
    return (
        ["iteration"]
        + [f"return_{j}" for j in range(adapt_steps + 1)]
        + [
            "loss_before",
            "loss_after",
            "kl",
            "ls_steps",
            "inner_lr_mean",
            "sampling_s",
            "learning_s",
            "env_steps",
        ]
    )


def meta_scalars(row: dict[str, Any]) -> Iterator[tuple[str, float, int]]:
    """Each curve by meta-iteration (meta/)."""
    for k, v in row.items():
        if k not in ("iteration", "env_steps") and isinstance(v, int | float) and math.isfinite(v):
            yield f"meta/{k}", v, row["iteration"]


def env_step_scalars(row: dict[str, Any]) -> Iterator[tuple[str, float, int]]:
    """Each curve by environment steps so far (by_env_steps/, as CleanRL's global_step), when
    the row counts them."""
    steps = row.get("env_steps")
    if not (isinstance(steps, int | float) and math.isfinite(steps)):
        return
    for tag, v, _ in meta_scalars(row):
        yield f"by_env_steps/{tag.removeprefix('meta/')}", v, int(steps)


class MetricsLog(TrainLogger):
    """metrics.csv (on resume: the rows of the iterations before `start` kept), TensorBoard
    scalars when the config asks, and a progress bar over iterations: the learners'
    TrainLogger with meta-training's layout. The `meta/*` curves go to tb/, the `by_env_steps/*`
    ones to tb/by_env_steps/ (on resume each purged from its own step: TensorBoard drops every
    tag of a directory from the purge step on, and `env_steps` is far above the iteration)."""

    def __init__(
        self,
        out: Path,
        cfg: dict[str, Any],
        start: int,
        desc: str,
        progress: bool,
        start_env_steps: int = 0,
    ) -> None:
        self.steps = int(cfg["adapt_steps"])
        layout = LogLayout(METRICS_CSV, tuple(metric_fields(self.steps)), meta_scalars, "nan")
        super().__init__(
            out,
            int(cfg["iterations"]),
            start,
            tensorboard=bool(cfg.get("tensorboard", True)),
            progress_bar=progress,
            config=flat_config(cfg),
            layout=layout,
            keep_rows_below=start,
            unit="it",
            desc=desc,
        )
        self._by_steps = None
        if self._tb is not None:
            # the row of the last kept iteration is at start_env_steps
            purge = start_env_steps + 1
            self._by_steps = summary_writer(out / "tb" / "by_env_steps", purge, None)

    def write(self, row: dict[str, Any]) -> None:
        self.log(row)
        if self._by_steps is not None:
            for tag, value, step in env_step_scalars(row):
                self._by_steps.add_scalar(tag, value, step)
            self._by_steps.flush()

    def close(self) -> None:
        super().close()
        if self._by_steps is not None:
            self._by_steps.close()

    def advance_row(self, row: dict[str, Any]) -> None:
        self.advance(
            int(row["iteration"]) + 1,
            {
                "R0": f"{row['return_0']:.1f}",
                f"R{self.steps}": f"{row[f'return_{self.steps}']:.1f}",
                "kl": f"{row.get('kl', 0.0):.4f}",
            },
        )


def _saved_run(ckpt_path: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: start afresh)."""
    saved = load_checkpoint(ckpt_path) if resume and ckpt_path.is_file() else None
    if saved is not None and saved.get("maml_format") != MAML_FORMAT:
        raise UserError(f"{ckpt_path} is not a meta_train checkpoint: use another --out")
    return saved


def _build(
    cfg: dict[str, Any], saved: dict[str, Any] | None, ckpt_path: Path
) -> tuple[ActorCritic, MetaLearner, Any, int, int]:
    """(policy, learner, meta-optimizer, first iteration, environment steps so far): seeded,
    or restored from `saved`."""
    threads = int(cfg["torch_threads"])
    if threads > 0:  # 0: PyTorch's own default, not set_torch_threads' every allowed core
        set_torch_threads(threads)
    torch.manual_seed(int(cfg["seed"]))
    spec = saved["policy_spec"] if saved is not None else policy_spec(cfg)
    policy = build_policy(spec)
    if saved is not None:
        policy.load_state_dict(saved["policy_state"])
    policy.to(resolve_device(cfg))  # before the learner and optimizer take its parameters
    learner = make_learner(policy, cfg)
    opt = make_meta_optimizer(str(cfg["meta_optimizer"]), learner, cfg)
    if saved is None:
        return policy, learner, opt, 0, 0
    if saved.get("meta_optimizer") != opt.name:
        raise UserError(
            f"{ckpt_path} was trained with {saved.get('meta_optimizer')}, "
            f"not {opt.name}: resume with the same --meta-optimizer"
        )
    learner.load_step_size_state(saved["step_sizes"])
    opt.load_state_dict(saved["meta_optimizer_state"])
    return policy, learner, opt, int(saved["iteration"]), int(saved.get("timesteps", 0))


def metrics_row(
    it: int,
    batches: Sequence[TaskBatch],
    info: dict[str, Any],
    learner: MetaLearner,
    dist: TaskDistribution,
    seconds: tuple[float, float],
    env_steps: int,
) -> dict[str, Any]:
    """One metrics.csv row: returns after 0..S inner steps (in the game's units), the
    meta-optimizer's figures, the mean α, times and the environment steps so far."""
    returns = [
        dist.return_scale * sum(b.step_returns[j] for b in batches) / len(batches)
        for j in range(learner.adapt_steps + 1)
    ]
    alpha = (
        torch.cat([a.detach().reshape(-1) for a in learner.step_sizes.values()]).mean().item()
        if learner.step_sizes
        else learner.inner_lr
    )
    return {
        "iteration": it,
        **{f"return_{j}": r for j, r in enumerate(returns)},
        **info,
        "inner_lr_mean": alpha,
        "sampling_s": seconds[0],
        "learning_s": seconds[1],
        "env_steps": env_steps,
    }


def _save(
    ckpt_path: Path,
    cfg: dict[str, Any],
    learner: MetaLearner,
    opt: Any,
    it: int,
    env_steps: int,
    joint: bool,
) -> None:
    steps = learner.adapt_steps
    save_checkpoint(
        ckpt_path,
        learner.policy,
        config=cfg,
        timesteps=env_steps,
        updates=it + 1,
        extra={
            "maml_format": MAML_FORMAT,
            "iteration": it + 1,
            "joint": joint,
            "meta_optimizer": opt.name,
            "meta_optimizer_state": opt.state_dict(),
            "step_sizes": learner.step_size_state(),
            "adapt_steps": steps,
            "task": dict(cfg["task"]),
            "adaptation": adaptation_settings(cfg, steps),
        },
    )


def train(
    cfg: dict[str, Any],
    out: str | Path,
    *,
    resume: bool = False,
    joint: bool = False,
    progress: bool = True,
) -> Path:
    """Meta-train (or, `joint`, train plainly on the task mixture) into `out`; returns the
    checkpoint path. Each iteration: sample tasks → collect → meta-step → log → checkpoint."""
    out = Path(out)
    ckpt_path = out / CHECKPOINT_NAME
    saved = _saved_run(ckpt_path, resume)
    if saved is not None:
        joint = bool(saved.get("joint", False))
    if joint:
        cfg = {**cfg, "adapt_steps": 0}
    check_config(cfg)
    TaskDistribution.from_config(cfg).require_playable()  # levels: ROMs imported, states known
    out.mkdir(parents=True, exist_ok=True)
    policy, learner, opt, start, env_steps = _build(cfg, saved, ckpt_path)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    desc = f"{'joint' if joint else 'maml'}-{opt.name}"
    log = MetricsLog(out, cfg, start, desc, progress, start_env_steps=env_steps)
    dist = TaskDistribution.from_config(cfg)
    count, meta_batch = int(cfg["trajectories"]), int(cfg["meta_batch"])
    steps = int(cfg["adapt_steps"])
    sampler = make_sampler(cfg, policy, dist)
    try:
        for it in range(start, int(cfg["iterations"])):
            rng, seeds = iteration_seeds(int(cfg["seed"]), it, meta_batch, steps)
            tasks = dist.sample(meta_batch, rng)
            t0 = time.perf_counter()
            batches = collect(learner, sampler, tasks, count, seeds)
            t1 = time.perf_counter()
            info = opt.step(batches)
            t2 = time.perf_counter()
            check_finite(info, it, learner, ckpt_path)
            env_steps += meta_batch * count * dist.horizon * (steps + 1)
            row = metrics_row(it, batches, info, learner, dist, (t1 - t0, t2 - t1), env_steps)
            log.write(row)
            _save(ckpt_path, cfg, learner, opt, it, env_steps, joint)
            log.advance_row(row)
    finally:
        sampler.close()
        log.close()
    return ckpt_path
