"""`python -m agent.rainbow`: the contest's Rainbow baseline, learning on the remote level.

    python -m agent.rainbow [--config FILE] [--init CHECKPOINT] [--resume] [--set key=value ...]

One environment (the contest connection), the agent-side wrappers with unscaled rewards, Rainbow
with the contest baseline's settings (agent.configs.RAINBOW: RainbowConfig in
agent/learners/rainbow.py). `--init` (or
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
from pathlib import Path
from typing import Any

import torch

from agent.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from agent.config import load_config
from agent.configs import RAINBOW
from agent.connection import output_dir
from agent.learners.rainbow import Rainbow, RainbowConfig, learn, rainbow_for_spaces
from agent.runtime import agent_parser, checkpoint_path, contest_envs, learn_until_budget, start
from agent.train_log import TrainLogger
from sonic_common.errors import UserError, exit_on_user_error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = agent_parser(
        "rainbow", __doc__, "rainbow.yaml", checkpoint_help="Rainbow checkpoint to fine-tune"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from $AGENT_OUTPUT_DIR/checkpoint.pt when it exists",
    )
    return parser.parse_args(argv)


def save_rainbow(
    path: Path, agent: Rainbow, cfg: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    return save_checkpoint(
        path,
        agent.online,
        config=cfg,
        optimizer=agent.optimizer,
        timesteps=agent.timesteps,
        updates=agent.updates,
        episodes=agent.episodes,
        extra={**agent.state(), **(extra or {})},
    )


def _starting_point(
    args: argparse.Namespace, out: Path | None
) -> tuple[dict[str, Any] | None, bool, str]:
    """(checkpoint data, whether it is a resume, its path) — read before connecting."""
    if args.resume:
        if out is None:
            raise UserError("--resume needs $AGENT_OUTPUT_DIR (where checkpoint.pt is written)")
        if (out / CHECKPOINT_NAME).is_file():
            return load_checkpoint(out / CHECKPOINT_NAME), True, str(out / CHECKPOINT_NAME)
    init = checkpoint_path(args.init)
    return (load_checkpoint(init) if init else None), False, str(init)


def _connect(
    cfg: dict[str, Any],
    rcfg: RainbowConfig,
    device: torch.device,
    saved: dict[str, Any] | None,
    resuming: bool,
    source: str,
) -> tuple[Any, Rainbow]:
    """The wrapped contest connection (a vector env of 1) and the learner on its spaces."""
    envs = contest_envs(cfg)
    try:
        agent = rainbow_for_spaces(
            saved, rcfg, int(cfg["features"]), envs, device, source, resume=resuming
        )
    except UserError:
        envs.close()
        raise
    return envs, agent


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides, defaults=RAINBOW)
    try:
        rcfg = RainbowConfig.from_dict(cfg)
    except ValueError as e:
        raise UserError(f"bad Rainbow config: {e}") from None
    seed, device = start(cfg)
    out = output_dir()
    saved, resuming, source = _starting_point(args, out)

    envs, agent = _connect(cfg, rcfg, device, saved, resuming, source)
    init = None if resuming or saved is None else source
    logger = TrainLogger(
        out, tensorboard=bool(cfg["tensorboard"]), progress_bar=False, resume=resuming, config=cfg
    )
    save_every = max(1, int(cfg["save_interval"]))

    def save() -> Path | None:
        return save_rainbow(out / CHECKPOINT_NAME, agent, cfg, {"init": init}) if out else None

    def on_step(a: Rainbow) -> None:
        if a.timesteps % save_every == 0:
            save()

    how = (
        "resuming " + source
        if resuming
        else "fine-tuning " + source
        if saved is not None
        else "learning from scratch"
    )
    print(
        f"rainbow agent: {how} on {device}, capacity={rcfg.capacity} "
        f"learning_starts={rcfg.learning_starts} (the replay buffer starts empty)",
        flush=True,
    )
    return learn_until_budget(
        "rainbow",
        agent,
        learn,
        envs=envs,
        logger=logger,
        cfg=cfg,
        seed=seed,
        save=save,
        on_step=on_step,
    )


if __name__ == "__main__":
    raise SystemExit(main())
