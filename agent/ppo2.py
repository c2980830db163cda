"""`python -m agent.ppo2`: the contest's PPO2 baseline, learning on the remote level in the budget.

    python -m agent.ppo2 [--config FILE] [--init CHECKPOINT] [--set key=value ...]

One environment (the contest connection), the agent-side wrappers, PPO with the settings of
agent/configs/ppo2.yaml. `--init` (or $AGENT_CHECKPOINT, which agent images built with a
checkpoint set) starts from a trained network to fine-tune it, e.g. joint PPO; otherwise the
network starts from scratch. When the server says the budget is spent, the agent saves its
final model to $AGENT_OUTPUT_DIR/checkpoint.pt (when that is set) and exits 0.

Runs in the small agent image: imports torch, numpy, gymnasium, opencv and pyyaml, never
stable-retro or meta_train.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
from gymnasium.wrappers import RecordEpisodeStatistics

from agent.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    policy_for_spaces,
    save_checkpoint,
)
from agent.config import add_device_option, load_config
from agent.connection import BudgetExhausted, RemoteEnvClosed, agent_seed, make_env, output_dir
from agent.logging import TrainLogger
from agent.ppo import PPO, PPOConfig, learn
from agent.vec_env import make_single_vec_env
from agent.wrappers import wrap_agent_env
from sonic_common.agent_env import CHECKPOINT_ENV
from sonic_common.devices import choose_device, set_torch_threads
from sonic_common.errors import UserError, exit_on_user_error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agent.ppo2",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file with the keys to change from ppo2.yaml")
    parser.add_argument("--checkpoint", "--init", dest="init", metavar="FILE",
                        help=f"checkpoint to fine-tune (default: ${CHECKPOINT_ENV}; "
                        "--init: its old name)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="change one config key (repeatable)")
    add_device_option(parser)
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    seed = agent_seed(int(cfg["seed"]))
    assert seed is not None
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_torch_threads(int(cfg["torch_threads"]))
    device = choose_device(str(cfg["device"]))
    init = args.init or os.environ.get(CHECKPOINT_ENV) or None
    init_data = load_checkpoint(init) if init else None  # fail before connecting

    remote = make_env(copy_obs=False)  # WarpFrame makes its own array at once
    envs = make_single_vec_env(lambda: wrap_agent_env(
        RecordEpisodeStatistics(remote), discretizer=str(cfg["discretizer"]),
        backtracking=bool(cfg["backtracking"]), reward_scale=float(cfg["reward_scale"])))
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    try:
        policy = policy_for_spaces(init_data, cfg["policy"], obs_space, act_space, str(init))
    except UserError:
        envs.close()
        raise
    ppo = PPO(policy, PPOConfig.from_dict(cfg), device)
    out = output_dir()
    logger = TrainLogger(out, tensorboard=bool(cfg["tensorboard"]), progress_bar=False,
                         config=cfg)
    save_interval = max(1, int(cfg["save_interval"]))

    def save(path_dir: Path | None) -> Path | None:
        if path_dir is None:
            return None
        return save_checkpoint(path_dir / CHECKPOINT_NAME, ppo.policy, config=cfg,
                               optimizer=ppo.optimizer, timesteps=ppo.timesteps,
                               updates=ppo.updates, episodes=ppo.episodes,
                               extra={"init": str(init) if init else None})

    def on_update(p: PPO) -> None:
        if p.updates % save_interval == 0:
            save(out)

    print(f"ppo2 agent: {'fine-tuning ' + str(init) if init else 'learning from scratch'} on "
          f"{device}, nsteps={ppo.config.nsteps} nminibatches={ppo.config.nminibatches}",
          flush=True)
    try:
        learn(ppo, envs, total_timesteps=None, logger=logger,
              log_interval=int(cfg["log_interval"]), on_update=on_update, seed=seed)
    except BudgetExhausted as e:
        path = save(out)
        print(f"ppo2 agent: budget spent after {ppo.timesteps} steps, {ppo.updates} updates, "
              f"{ppo.episodes} episodes ({e.reason}); model: {path or 'not saved (no output dir)'}",
              flush=True)
        return 0
    except RemoteEnvClosed as e:
        save(out)
        print(f"ppo2 agent: the server closed the connection: {e}", file=sys.stderr)
        return 1
    finally:
        logger.close()
        envs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
