"""`python -m agent.train`: offline training on local contest environments (joint PPO, joint
Rainbow).

    python -m agent.train --algo ppo|rainbow --levels SET_OR_LIST --timesteps N --out DIR
                          [--workers E] [--config FILE] [--set key=value ...] [--resume]

E worker subprocesses (one emulator each) play the levels, dealt round-robin; a worker with
several levels switches to its next one at every episode end (agent/training/level_envs.py),
so joint PPO over the 47 training levels runs with any E. Writes DIR/checkpoint.pt (loadable by
`python -m agent.ppo2 --init`, or with --algo rainbow by `agent.rainbow --init`; defaults from
agent.configs: PPO2 or RAINBOW), DIR/learning.csv, DIR/tb/ (TensorBoard) and
DIR/config.yaml.
`--resume` continues from DIR/checkpoint.pt (network, optimizer, counters, RNG states) up to
the same --timesteps total; the environments start new episodes (and Rainbow's replay buffer
starts empty: it is not saved).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import yaml

from agent.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    policy_for_spaces,
    save_checkpoint,
    set_rng_state,
)
from agent.config import add_device_option, add_set_option, apply_overrides, load_config
from agent.configs import PPO2, RAINBOW
from agent.learners.ppo import PPO, PPOConfig, learn
from agent.runtime import seed_everything, torch_setup
from agent.train_log import TrainLogger
from agent.training.level_envs import make_level_vec_env
from agent.wrappers import WrapperConfig
from roms_setup.levels import resolve_levels
from sonic_common.errors import UserError, exit_on_user_error

ALGOS = ("ppo", "rainbow")
DEFAULT_CONFIGS = {"ppo": PPO2, "rainbow": RAINBOW}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agent.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--algo", choices=ALGOS, default="ppo")
    parser.add_argument(
        "--levels", required=True, help="a level set name, a CSV file, or Game:State,Game:State,..."
    )
    parser.add_argument(
        "--timesteps",
        type=int,
        required=True,
        help="total environment steps (over all environments)",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--workers",
        type=int,
        help="worker subprocesses, one emulator each (default: config workers)",
    )
    parser.add_argument(
        "--config",
        help="YAML file with the keys it changes from the "
        "baseline's defaults (see agent/configs/ppo2.yaml; --algo rainbow: "
        "rainbow.yaml)",
    )
    add_set_option(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt when it exists"
    )
    add_device_option(parser)
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace, saved: dict[str, Any] | None) -> dict[str, Any]:
    if saved and args.config is None:  # resume: the run's own config, then this call's --set
        old = sorted({"nenvs", "lam"} & set(saved))
        if old:  # written before these keys became `workers` and `gae_lambda`
            raise UserError(
                f"the checkpoint's config has the old key(s) {', '.join(old)} "
                "(now workers, gae_lambda): resume with --config FILE, the run's "
                "settings under the new names"
            )
        cfg = apply_overrides(
            saved,
            args.overrides,
            source="the checkpoint's config (--set)",
            reference=DEFAULT_CONFIGS[args.algo],
        )
    else:
        cfg = load_config(args.config, args.overrides, defaults=DEFAULT_CONFIGS[args.algo])
    if args.workers is not None:
        cfg["workers"] = args.workers
    return cfg


def _resume_point(args: argparse.Namespace) -> tuple[Path, dict[str, Any] | None]:
    """The checkpoint path and, with --resume, what it holds (None: start from scratch)."""
    ckpt_path = Path(args.out) / CHECKPOINT_NAME
    saved = load_checkpoint(ckpt_path) if args.resume and ckpt_path.is_file() else None
    if args.resume and saved is None:
        print(f"no checkpoint at {ckpt_path}: starting from scratch")
    if saved is not None and saved["policy_spec"].get("kind", "ppo") != args.algo:
        raise UserError(
            f"{ckpt_path} was trained with --algo "
            f"{saved['policy_spec'].get('kind', 'ppo')}, not {args.algo}"
        )
    return ckpt_path, saved


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    from roms_setup.installed import require_playable  # stable-retro: not for the agent image

    args = parse_args(argv)
    if args.timesteps <= 0:
        raise UserError(f"--timesteps must be positive, got {args.timesteps}")
    ckpt_path, saved = _resume_point(args)
    cfg = resolve_config(args, saved["config"] if saved else None)
    if int(cfg["workers"]) < 1:
        raise UserError(
            f"workers={cfg['workers']} (from --workers, --set or the config): give at least 1"
        )
    levels = resolve_levels(args.levels)
    for level in levels:
        require_playable(level)  # a one-line error before any worker starts
    if args.algo == "rainbow":
        from agent.training.joint_rainbow import train_rainbow

        return train_rainbow(cfg, [lv.id for lv in levels], args.timesteps, Path(args.out), saved)
    return train_ppo(cfg, [lv.id for lv in levels], args.timesteps, ckpt_path, saved)


class LevelRun:
    """A PPO run on levels: its vector environment, learner and checkpoint, and the episodes
    started per level (added up over resumes)."""

    def __init__(
        self,
        cfg: dict[str, Any],
        levels: list[str],
        ckpt_path: Path,
        saved: dict[str, Any] | None,
        envs: Any,
        ppo: PPO,
    ) -> None:
        self.cfg, self.levels, self.ckpt_path = cfg, levels, ckpt_path
        self.envs, self.ppo = envs, ppo
        self.played: dict[str, int] = dict((saved or {}).get("level_episodes", {}))
        self.save_interval = max(1, int(cfg["save_interval"]))

    def save(self) -> None:
        ppo = self.ppo
        save_checkpoint(
            self.ckpt_path,
            ppo.policy,
            config=self.cfg,
            optimizer=ppo.optimizer,
            timesteps=ppo.timesteps,
            updates=ppo.updates,
            episodes=ppo.episodes,
            extra={"levels": self.levels, "level_episodes": self.played},
        )

    def count_played(self) -> None:
        """Add the workers' per-level episode counts (episodes started) to `played`."""
        try:
            for counts in self.envs.get_attr("played"):
                for level, n in counts.items():
                    self.played[level] = self.played.get(level, 0) + int(n)
        except Exception:  # a worker died: the counts are informational only
            pass

    def on_update(self, p: PPO) -> None:
        if p.updates % self.save_interval == 0:
            self.save()


def restore(ppo: PPO, saved: dict[str, Any] | None) -> None:
    """The optimizer, counters and random state of a resumed run."""
    if saved is None:
        return
    if "optimizer" in saved:
        ppo.optimizer.load_state_dict(saved["optimizer"])
    ppo.timesteps = int(saved.get("timesteps", 0))
    ppo.updates = int(saved.get("updates", 0))
    ppo.episodes = int(saved.get("episodes", 0))
    if "rng" in saved:
        set_rng_state(saved["rng"])


def start_training(
    cfg: dict[str, Any], levels: list[str], out: Path
) -> tuple[int, int, torch.device, Any]:
    """What every offline training run does first: seed, set up torch, write OUT/config.yaml
    and start the level workers. (seed, torch threads, device, vector environment)."""
    seed = int(cfg["seed"])
    seed_everything(seed)
    threads, device = torch_setup(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    envs = make_level_vec_env(
        levels, int(cfg["workers"]), seed=seed, wrappers=WrapperConfig.from_dict(cfg)
    )
    return seed, threads, device, envs


def train_ppo(
    cfg: dict[str, Any],
    levels: list[str],
    timesteps: int,
    ckpt_path: Path,
    saved: dict[str, Any] | None,
) -> int:
    """Seed, build the environments and the learner (restored when resuming), learn, save."""
    nenvs = int(cfg["workers"])
    ppo_cfg = PPOConfig.from_dict(cfg)
    if (ppo_cfg.nsteps * nenvs) // ppo_cfg.nminibatches < 1:
        raise UserError(
            f"nsteps × envs = {ppo_cfg.nsteps * nenvs} samples cannot make "
            f"{ppo_cfg.nminibatches} minibatches: lower nminibatches"
        )
    seed, threads, device, envs = start_training(cfg, levels, ckpt_path.parent)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    try:
        policy = policy_for_spaces(saved, cfg["policy"], obs_space, act_space, str(ckpt_path))
    except UserError:
        envs.close()
        raise
    ppo = PPO(policy, ppo_cfg, device)
    restore(ppo, saved)
    print(
        f"training ppo on {len(levels)} level(s) with {nenvs} env(s), device {device}, "
        f"{threads} torch thread(s), from {ppo.timesteps} to {timesteps} steps",
        flush=True,
    )
    return learn_levels(
        LevelRun(cfg, levels, ckpt_path, saved, envs, ppo), timesteps, resume=saved is not None
    )


def learn_levels(run: LevelRun, timesteps: int, resume: bool) -> int:
    """PPO's loop until `timesteps`; Ctrl-C saves a checkpoint to --resume from (exit 130)."""
    cfg, ppo = run.cfg, run.ppo
    logger = TrainLogger(
        run.ckpt_path.parent,
        total_timesteps=timesteps,
        start_timesteps=ppo.timesteps,
        tensorboard=bool(cfg["tensorboard"]),
        resume=resume,
        config=cfg,
    )
    try:
        try:
            collector = learn(
                ppo,
                run.envs,
                total_timesteps=timesteps,
                logger=logger,
                log_interval=int(cfg["log_interval"]),
                on_update=run.on_update,
                seed=int(cfg["seed"]) + ppo.updates,
            )
        except KeyboardInterrupt:
            run.count_played()
            run.save()
            print(
                f"interrupted: saved {run.ckpt_path} at {ppo.timesteps} steps "
                "(continue with --resume)"
            )
            return 130
        finally:
            logger.close()
        run.count_played()
    finally:
        run.envs.close()
    run.save()
    print(
        f"done: {ppo.timesteps} steps, {ppo.updates} updates, {ppo.episodes} episodes, "
        f"mean return (last 100) {collector.tracker.mean_return:.1f}; saved {run.ckpt_path}"
    )
    print(
        "episodes started per level: "
        + ", ".join(f"{lv} {n}" for lv, n in sorted(run.played.items()))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
