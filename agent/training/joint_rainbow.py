"""Joint Rainbow: `python -m agent.train --algo rainbow` (arguments are read by agent.train).

E environments (worker subprocesses, one emulator each, levels dealt round-robin and switched at
every episode end, as for joint PPO) step in lockstep into one prioritized replay; Rainbow learns
as in the contest agent (one update per transition entering the replay). The checkpoint is what
`python -m agent.rainbow --init` fine-tunes on a test level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agent.checkpoint import CHECKPOINT_NAME
from agent.learners.rainbow import Rainbow, RainbowConfig, learn, rainbow_for_spaces
from agent.rainbow import save_rainbow
from agent.train_log import TrainLogger
from agent.training.joint import start_training
from sonic_common.errors import UserError


def train_rainbow(
    cfg: dict[str, Any], levels: list[str], timesteps: int, out: Path, saved: dict[str, Any] | None
) -> int:
    """Seed, build the environments and the agent (restored when resuming), learn, save."""
    try:
        rcfg = RainbowConfig.from_dict(cfg)
    except ValueError as e:
        raise UserError(f"bad Rainbow config: {e}") from None
    nenvs = int(cfg["workers"])
    seed, threads, device, envs = start_training(cfg, levels, out)
    ckpt_path = out / CHECKPOINT_NAME
    try:
        agent = make_agent(cfg, rcfg, envs, device, saved, str(ckpt_path))
    except UserError:
        envs.close()
        raise
    print(
        f"training rainbow on {len(levels)} level(s) with {nenvs} env(s), device {device}, "
        f"{threads} torch thread(s), from {agent.timesteps} to {timesteps} steps",
        flush=True,
    )
    return learn_rainbow(
        agent, envs, cfg, levels, timesteps, ckpt_path, seed, resume=saved is not None
    )


def learn_rainbow(
    agent: Rainbow,
    envs: Any,
    cfg: dict[str, Any],
    levels: list[str],
    timesteps: int,
    ckpt_path: Path,
    seed: int,
    resume: bool,
) -> int:
    """Rainbow's loop until `timesteps`, saving every save_interval steps; Ctrl-C saves a
    checkpoint to --resume from (exit 130)."""
    nenvs = int(cfg["workers"])
    save_every = max(nenvs, int(cfg["save_interval"]) // nenvs * nenvs)

    def save() -> None:
        save_rainbow(ckpt_path, agent, cfg, {"levels": levels})

    def on_step(a: Rainbow) -> None:
        if a.timesteps % save_every == 0:
            save()

    logger = TrainLogger(
        ckpt_path.parent,
        total_timesteps=timesteps,
        start_timesteps=agent.timesteps,
        tensorboard=bool(cfg["tensorboard"]),
        resume=resume,
        config=cfg,
    )
    try:
        tracker = learn(
            agent,
            envs,
            total_timesteps=timesteps,
            logger=logger,
            log_interval=int(cfg["log_interval"]),
            on_step=on_step,
            seed=seed + agent.timesteps,
        )
    except KeyboardInterrupt:
        save()
        print(f"interrupted: saved {ckpt_path} at {agent.timesteps} steps (continue with --resume)")
        return 130
    finally:
        logger.close()
        envs.close()
    save()
    print(
        f"done: {agent.timesteps} steps, {agent.updates} updates, {agent.episodes} episodes, "
        f"mean return (last 100) {tracker.mean_return:.1f}; saved {ckpt_path}"
    )
    return 0


def make_agent(
    cfg: dict[str, Any],
    rcfg: RainbowConfig,
    envs: Any,
    device: torch.device,
    saved: dict[str, Any] | None,
    source: str,
) -> Rainbow:
    """A new Rainbow for the environments' spaces, or the one in `saved` (a resume: target,
    optimizer, counters and RNG state too)."""
    return rainbow_for_spaces(saved, rcfg, int(cfg["features"]), envs, device, source, resume=True)
