"""`python -m agent.ppo2`: the contest's PPO2 baseline, learning on the remote level in the budget.

    python -m agent.ppo2 [--config FILE] [--init CHECKPOINT] [--set key=value ...]

One environment (the contest connection), the agent-side wrappers, PPO with the settings of
agent.configs.PPO2 (PPOConfig). `--init` (or $AGENT_CHECKPOINT, which agent images built with a
checkpoint set) starts from a trained network to fine-tune it, e.g. joint PPO; otherwise the
network starts from scratch. When the server says the budget is spent, the agent saves its
final model to $AGENT_OUTPUT_DIR/checkpoint.pt (when that is set) and exits 0.

Runs in the small agent image: imports torch, numpy, gymnasium, opencv and pyyaml, never
stable-retro or meta_train.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    policy_for_spaces,
    save_checkpoint,
)
from agent.config import load_config
from agent.connection import output_dir
from agent.learners.ppo import PPO, PPOConfig, learn
from agent.runtime import agent_parser, checkpoint_path, contest_envs, learn_until_budget, start
from agent.train_log import TrainLogger
from sonic_common.errors import UserError, exit_on_user_error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return agent_parser(
        "ppo2", __doc__, "ppo2.yaml", checkpoint_help="checkpoint to fine-tune"
    ).parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    seed, device = start(cfg)
    init = checkpoint_path(args.init)
    init_data = load_checkpoint(init) if init else None  # fail before connecting
    ppo_cfg = PPOConfig.from_dict(cfg)

    envs = contest_envs(cfg)
    try:
        policy = policy_for_spaces(
            init_data,
            cfg["policy"],
            envs.single_observation_space,
            envs.single_action_space,
            str(init),
        )
    except UserError:
        envs.close()
        raise
    ppo = PPO(policy, ppo_cfg, device)
    out = output_dir()
    logger = TrainLogger(out, tensorboard=bool(cfg["tensorboard"]), progress_bar=False, config=cfg)
    save_interval = max(1, int(cfg["save_interval"]))

    def save() -> Path | None:
        if out is None:
            return None
        return save_checkpoint(
            out / CHECKPOINT_NAME,
            ppo.policy,
            config=cfg,
            optimizer=ppo.optimizer,
            timesteps=ppo.timesteps,
            updates=ppo.updates,
            episodes=ppo.episodes,
            extra={"init": str(init) if init else None},
        )

    def on_update(p: PPO) -> None:
        if p.updates % save_interval == 0:
            save()

    print(
        f"ppo2 agent: {'fine-tuning ' + str(init) if init else 'learning from scratch'} on "
        f"{device}, nsteps={ppo.config.nsteps} nminibatches={ppo.config.nminibatches}",
        flush=True,
    )
    return learn_until_budget(
        "ppo2",
        ppo,
        learn,
        envs=envs,
        logger=logger,
        cfg=cfg,
        seed=seed,
        save=save,
        on_update=on_update,
    )


if __name__ == "__main__":
    raise SystemExit(main())
