"""`python -m agent.rainbow`: the contest's Rainbow baseline, learning on the remote level.

    python -m agent.rainbow [--config FILE] [--init CHECKPOINT] [--resume] [--set key=value ...]

One environment (the contest connection), the agent-side wrappers with unscaled rewards, Rainbow
with the settings of agent/configs/rainbow.yaml (agent/rainbow_learner.py). `--init` (or
$AGENT_CHECKPOINT, which agent images built with a checkpoint set) fine-tunes a trained Rainbow
network, e.g. joint Rainbow from `agent.train --algo rainbow`; otherwise it starts from scratch.
Every `save_interval` steps and when the server says the budget is spent, it saves
$AGENT_OUTPUT_DIR/checkpoint.pt (online and target networks, optimizer, counters, RNG states)
and exits 0. `--resume` continues from that file: the learner is restored, the replay buffer is
not (it is not saved: 3.5 GB at full capacity), so updates start again once it holds
`learning_starts` new transitions.

Runs in the agent image: imports torch, numpy, gymnasium, opencv and pyyaml, never stable-retro
or meta_train.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.wrappers import RecordEpisodeStatistics

from agent.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint, set_rng_state
from agent.config import CONFIG_DIR, add_device_option, load_config
from agent.connection import BudgetExhausted, RemoteEnvClosed, agent_seed, make_env, output_dir
from agent.logging import TrainLogger
from agent.rainbow_learner import Rainbow, RainbowConfig, learn, net_for_spaces
from agent.vec_env import make_single_vec_env
from agent.wrappers import wrap_agent_env
from sonic_common.agent_env import CHECKPOINT_ENV
from sonic_common.devices import choose_device, set_torch_threads
from sonic_common.errors import UserError, exit_on_user_error

DEFAULT_CONFIG = CONFIG_DIR / "rainbow.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agent.rainbow",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file with the keys to change from rainbow.yaml")
    parser.add_argument("--checkpoint", "--init", dest="init", metavar="FILE",
                        help=f"Rainbow checkpoint to fine-tune (default: ${CHECKPOINT_ENV}; "
                        "--init: its old name)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from $AGENT_OUTPUT_DIR/checkpoint.pt when it exists")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="change one config key (repeatable)")
    add_device_option(parser)
    return parser.parse_args(argv)


def save_rainbow(path: Path, agent: Rainbow, cfg: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> Path:
    return save_checkpoint(path, agent.online, config=cfg, optimizer=agent.optimizer,
                           timesteps=agent.timesteps, updates=agent.updates,
                           episodes=agent.episodes, extra={**agent.state(), **(extra or {})})


def _starting_point(args: argparse.Namespace,
                    out: Path | None) -> tuple[dict[str, Any] | None, bool, str]:
    """(checkpoint data, whether it is a resume, its path) — read before connecting."""
    if args.resume:
        if out is None:
            raise UserError("--resume needs $AGENT_OUTPUT_DIR (where checkpoint.pt is written)")
        if (out / CHECKPOINT_NAME).is_file():
            return load_checkpoint(out / CHECKPOINT_NAME), True, str(out / CHECKPOINT_NAME)
    init = args.init or os.environ.get(CHECKPOINT_ENV) or None
    return (load_checkpoint(init) if init else None), False, str(init)


def _connect(cfg: dict[str, Any], rcfg: RainbowConfig, device: torch.device,
             saved: dict[str, Any] | None, resuming: bool, source: str) -> tuple[Any, Rainbow]:
    """The wrapped contest connection (a vector env of 1) and the learner on its spaces."""
    remote = make_env(copy_obs=False)  # WarpFrame makes its own array at once
    envs = make_single_vec_env(lambda: wrap_agent_env(
        RecordEpisodeStatistics(remote), discretizer=str(cfg["discretizer"]),
        backtracking=bool(cfg["backtracking"]), reward_scale=float(cfg["reward_scale"])))
    try:
        net = net_for_spaces(saved, rcfg, int(cfg["features"]), envs.single_observation_space,
                             envs.single_action_space, source)
    except UserError:
        envs.close()
        raise
    agent = Rainbow(net, rcfg, device)
    if saved is not None:
        agent.load(saved, optimizer=resuming)
        if resuming and "rng" in saved:
            set_rng_state(saved["rng"])
    return envs, agent


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides, defaults=DEFAULT_CONFIG)
    try:
        rcfg = RainbowConfig.from_dict(cfg)
    except ValueError as e:
        raise UserError(f"bad Rainbow config: {e}") from None
    seed = agent_seed(int(cfg["seed"]))
    assert seed is not None
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_torch_threads(int(cfg["torch_threads"]))
    device = choose_device(str(cfg["device"]))
    out = output_dir()
    saved, resuming, source = _starting_point(args, out)

    envs, agent = _connect(cfg, rcfg, device, saved, resuming, source)
    init = None if resuming or saved is None else source
    logger = TrainLogger(out, tensorboard=bool(cfg["tensorboard"]), progress_bar=False,
                         resume=resuming, config=cfg)
    save_every = max(1, int(cfg["save_interval"]))

    def save() -> Path | None:
        return save_rainbow(out / CHECKPOINT_NAME, agent, cfg, {"init": init}) if out else None

    def on_step(a: Rainbow) -> None:
        if a.timesteps % save_every == 0:
            save()

    how = ("resuming " + source if resuming else "fine-tuning " + source if saved is not None
           else "learning from scratch")
    print(f"rainbow agent: {how} on {device}, capacity={rcfg.capacity} "
          f"learning_starts={rcfg.learning_starts} (the replay buffer starts empty)", flush=True)
    try:
        learn(agent, envs, total_timesteps=None, logger=logger,
              log_interval=int(cfg["log_interval"]), on_step=on_step, seed=seed)
    except BudgetExhausted as e:
        path = save()
        print(f"rainbow agent: budget spent after {agent.timesteps} steps, {agent.updates} "
              f"updates, {agent.episodes} episodes ({e.reason}); model: "
              f"{path or 'not saved (no output dir)'}", flush=True)
        return 0
    except RemoteEnvClosed as e:
        save()
        print(f"rainbow agent: the server closed the connection: {e}", file=sys.stderr)
        return 1
    finally:
        logger.close()
        envs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
