"""`python -m agent.train`: offline training on local contest environments (joint PPO, joint
Rainbow).

    python -m agent.train --algo ppo|rainbow --levels SET_OR_LIST --timesteps N --out DIR
                          [--workers E] [--config FILE] [--set key=value ...] [--resume]

E worker subprocesses (one emulator each) play the levels, dealt round-robin; a worker with
several levels switches to its next one at every episode end (agent/vec_env.py), so joint PPO
over the 47 training levels runs with any E. Writes DIR/checkpoint.pt (loadable by
`python -m agent.ppo2 --init`, or with --algo rainbow by `agent.rainbow --init`; defaults from
agent/configs/ppo2.yaml or rainbow.yaml), DIR/progress.csv, DIR/tb/ (TensorBoard) and
DIR/config.yaml.
`--resume` continues from DIR/checkpoint.pt (network, optimizer, counters, RNG states) up to
the same --timesteps total; the environments start new episodes (and Rainbow's replay buffer
starts empty: it is not saved).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from agent.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    policy_for_spaces,
    save_checkpoint,
    set_rng_state,
)
from agent.config import CONFIG_DIR, add_device_option, apply_overrides, load_config
from agent.logging import TrainLogger
from agent.ppo import PPO, PPOConfig, learn, pick_device, set_torch_threads
from agent.vec_env import make_level_vec_env
from roms_setup.errors import UserError, exit_on_user_error
from roms_setup.levels import resolve_levels

ALGOS = ("ppo", "rainbow")
DEFAULT_CONFIGS = {"ppo": CONFIG_DIR / "ppo2.yaml", "rainbow": CONFIG_DIR / "rainbow.yaml"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agent.train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=ALGOS, default="ppo")
    parser.add_argument("--levels", required=True,
                        help="a level set name, a CSV file, or Game:State,Game:State,...")
    parser.add_argument("--timesteps", type=int, required=True,
                        help="total environment steps (over all environments)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--workers", "--envs", dest="workers", type=int,
                        help="worker subprocesses, one emulator each (default: config nenvs; "
                        "--envs: its old name)")
    parser.add_argument("--config", help="YAML file with the keys to change from ppo2.yaml "
                        "(--algo rainbow: rainbow.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="change one config key (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.pt when it exists")
    add_device_option(parser)
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace, saved: dict[str, Any] | None) -> dict[str, Any]:
    if saved and args.config is None:  # resume: the run's own config, then this call's --set
        cfg = apply_overrides(saved, args.overrides, source="the checkpoint's config (--set)")
    else:
        cfg = load_config(args.config, args.overrides, defaults=DEFAULT_CONFIGS[args.algo])
    if args.workers is not None:
        cfg["nenvs"] = args.workers
    return cfg


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    from roms_setup.installed import require_playable  # stable-retro: not for the agent image

    args = parse_args(argv)
    if args.timesteps <= 0:
        raise UserError(f"--timesteps must be positive, got {args.timesteps}")
    out = Path(args.out)
    ckpt_path = out / CHECKPOINT_NAME
    saved = load_checkpoint(ckpt_path) if args.resume and ckpt_path.is_file() else None
    if args.resume and saved is None:
        print(f"no checkpoint at {ckpt_path}: starting from scratch")
    if saved is not None and saved["policy_spec"].get("kind", "ppo") != args.algo:
        raise UserError(f"{ckpt_path} was trained with --algo "
                        f"{saved['policy_spec'].get('kind', 'ppo')}, not {args.algo}")
    cfg = resolve_config(args, saved["config"] if saved else None)
    levels = resolve_levels(args.levels)
    for level in levels:
        require_playable(level)  # a one-line error before any worker starts
    if args.algo == "rainbow":
        from agent.train_rainbow import train_rainbow

        return train_rainbow(cfg, [lv.id for lv in levels], args.timesteps, out, saved)
    nenvs = int(cfg["nenvs"])
    ppo_cfg = PPOConfig.from_dict(cfg)
    if (ppo_cfg.nsteps * nenvs) // ppo_cfg.nminibatches < 1:
        raise UserError(f"nsteps × envs = {ppo_cfg.nsteps * nenvs} samples cannot make "
                        f"{ppo_cfg.nminibatches} minibatches: lower nminibatches")
    seed = int(cfg["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    threads = set_torch_threads(int(cfg["torch_threads"]))
    device = pick_device(str(cfg["device"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    envs = make_level_vec_env([lv.id for lv in levels], nenvs, seed=seed,
                              discretizer=str(cfg["discretizer"]),
                              backtracking=bool(cfg["backtracking"]),
                              reward_scale=float(cfg["reward_scale"]))
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    try:
        policy = policy_for_spaces(saved, cfg["policy"], obs_space, act_space, str(ckpt_path))
    except UserError:
        envs.close()
        raise
    ppo = PPO(policy, ppo_cfg, device)
    if saved is not None:
        if "optimizer" in saved:
            ppo.optimizer.load_state_dict(saved["optimizer"])
        ppo.timesteps = int(saved.get("timesteps", 0))
        ppo.updates = int(saved.get("updates", 0))
        ppo.episodes = int(saved.get("episodes", 0))
        if "rng" in saved:
            set_rng_state(saved["rng"])
    save_interval = max(1, int(cfg["save_interval"]))

    played: dict[str, int] = dict((saved or {}).get("level_episodes", {}))

    def save() -> None:
        save_checkpoint(ckpt_path, ppo.policy, config=cfg, optimizer=ppo.optimizer,
                        timesteps=ppo.timesteps, updates=ppo.updates, episodes=ppo.episodes,
                        extra={"levels": [lv.id for lv in levels], "level_episodes": played})

    def count_played() -> None:
        """Add the workers' per-level episode counts (episodes started) to `played`."""
        try:
            for counts in envs.get_attr("played"):
                for level, n in counts.items():
                    played[level] = played.get(level, 0) + int(n)
        except Exception:  # a worker died: the counts are informational only
            pass

    def on_update(p: PPO) -> None:
        if p.updates % save_interval == 0:
            save()

    print(f"training ppo on {len(levels)} level(s) with {nenvs} env(s), device {device}, "
          f"{threads} torch thread(s), from {ppo.timesteps} to {args.timesteps} steps", flush=True)
    logger = TrainLogger(out, total_timesteps=args.timesteps, start_timesteps=ppo.timesteps,
                         tensorboard=bool(cfg["tensorboard"]), resume=saved is not None)
    try:
        try:
            collector = learn(ppo, envs, total_timesteps=args.timesteps, logger=logger,
                              log_interval=int(cfg["log_interval"]), on_update=on_update,
                              seed=seed + ppo.updates)
        except KeyboardInterrupt:
            count_played()
            save()
            print(f"interrupted: saved {ckpt_path} at {ppo.timesteps} steps "
                  "(continue with --resume)")
            return 130
        finally:
            logger.close()
        count_played()
    finally:
        envs.close()
    save()
    print(f"done: {ppo.timesteps} steps, {ppo.updates} updates, {ppo.episodes} episodes, "
          f"mean return (last 100) {collector.tracker.mean_return:.1f}; saved {ckpt_path}")
    print("episodes started per level: " + ", ".join(f"{lv} {n}" for lv, n in sorted(
        played.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
