"""Joint Rainbow: `python -m agent.train --algo rainbow` (arguments are read by agent.train).

E environments (worker subprocesses, one emulator each, levels dealt round-robin and switched at
every episode end, as for joint PPO) step in lockstep into one prioritized replay; Rainbow learns
as in the contest agent (one update per transition entering the replay). The checkpoint is what
`python -m agent.rainbow --init` fine-tunes on a test level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.checkpoint import CHECKPOINT_NAME, set_rng_state
from agent.learners.rainbow import Rainbow, RainbowConfig, learn, net_for_spaces
from agent.rainbow import save_rainbow
from agent.train_log import TrainLogger
from agent.training.joint import start_training
from sonic_common.errors import UserError


def train_rainbow(cfg: dict[str, Any], levels: list[str], timesteps: int, out: Path,
                  saved: dict[str, Any] | None) -> int:
    try:
        rcfg = RainbowConfig.from_dict(cfg)
    except ValueError as e:
        raise UserError(f"bad Rainbow config: {e}") from None
    nenvs = int(cfg["workers"])
    seed, threads, device, envs = start_training(cfg, levels, out)
    ckpt_path = out / CHECKPOINT_NAME
    try:
        net = net_for_spaces(saved, rcfg, int(cfg["features"]), envs.single_observation_space,
                             envs.single_action_space, str(ckpt_path))
    except UserError:
        envs.close()
        raise
    agent = Rainbow(net, rcfg, device)
    if saved is not None:
        agent.load(saved)
        if "rng" in saved:
            set_rng_state(saved["rng"])
    save_every = max(nenvs, int(cfg["save_interval"]) // nenvs * nenvs)

    def save() -> None:
        save_rainbow(ckpt_path, agent, cfg, {"levels": levels})

    def on_step(a: Rainbow) -> None:
        if a.timesteps % save_every == 0:
            save()

    print(f"training rainbow on {len(levels)} level(s) with {nenvs} env(s), device {device}, "
          f"{threads} torch thread(s), from {agent.timesteps} to {timesteps} steps", flush=True)
    logger = TrainLogger(out, total_timesteps=timesteps, start_timesteps=agent.timesteps,
                         tensorboard=bool(cfg["tensorboard"]), resume=saved is not None,
                         config=cfg)
    try:
        tracker = learn(agent, envs, total_timesteps=timesteps, logger=logger,
                        log_interval=int(cfg["log_interval"]), on_step=on_step,
                        seed=seed + agent.timesteps)
    except KeyboardInterrupt:
        save()
        print(f"interrupted: saved {ckpt_path} at {agent.timesteps} steps "
              "(continue with --resume)")
        return 130
    finally:
        logger.close()
        envs.close()
    save()
    print(f"done: {agent.timesteps} steps, {agent.updates} updates, {agent.episodes} episodes, "
          f"mean return (last 100) {tracker.mean_return:.1f}; saved {ckpt_path}")
    return 0
