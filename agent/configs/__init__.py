"""The learning agents' configs: every key and its default comes from one typed config, the
learner's (agent.learners.ppo.PPOConfig, agent.learners.rainbow.RainbowConfig: the contest
baselines' values, each commented there), the agent-side wrappers' (agent.wrappers.WrapperConfig),
the network's and the run's (agent.config.PolicyConfig, RunConfig) and the MAML agent's
adaptation (`MamlConfig`). The YAML file of a command beside this module lists only what that
command changes from them, with where each value comes from; `--config FILE` and
`--set key=value` change more.

    load_config(args.config, args.overrides, defaults=RAINBOW)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from agent.config import (
    CONFIG_DIR,
    PolicyConfig,
    RunConfig,
    TrainingRunConfig,
    TypedDefaults,
    field_hints,
)
from agent.learners.ppo import PPOConfig
from agent.learners.rainbow import RainbowConfig
from agent.wrappers import WrapperConfig


@dataclass
class MamlConfig:
    """agent.maml's adaptation keys. None: the checkpoint's value (its `adaptation` settings,
    written by `python -m meta_train`, which also fix the network, the wrappers and the inner
    step's γ, GAE λ and baseline ridge)."""

    adapt_steps: int | None = None  # N inner steps (0: no adaptation, straight to what follows)
    # K trajectories per inner step, each from the level start (env.reset())
    trajectories: int | None = None
    horizon: int | None = None  # H steps per trajectory (an episode ending early restarts in it)
    # α: a number replaces the checkpoint's step size(s), learned ones included
    inner_lr: float | None = None
    # inner gradient in chunks of at most this many frames (bounds memory; the same step up to
    # rounding); 0: all K·H frames at once
    grad_chunk: int = 2048
    # ppo: keep learning with PPO (PPOConfig's keys, from the adapted parameters; the value
    # head starts where meta-training left it); act: keep acting with the adapted policy
    after_adaptation: str = "ppo"


def ppo2_defaults() -> dict[str, Any]:
    """agent.ppo2's and `agent.train --algo ppo`'s keys: the contest baseline's PPO2."""
    return {
        **asdict(TrainingRunConfig()),
        **asdict(PPOConfig()),
        **WrapperConfig().as_dict(),
        "policy": asdict(PolicyConfig()),
    }


def rainbow_defaults() -> dict[str, Any]:
    """agent.rainbow's and `agent.train --algo rainbow`'s keys (rainbow.yaml changes some)."""
    return {
        **asdict(TrainingRunConfig()),
        **asdict(RainbowConfig()),
        **WrapperConfig().as_dict(),
        # the noisy fully connected layer after the Nature CNN: as wide as PPO's
        "features": PolicyConfig().features,
    }


def maml_defaults() -> dict[str, Any]:
    """agent.maml's keys: the adaptation's, then PPO's (the contest baseline's, as agent.ppo2)."""
    return {**asdict(MamlConfig()), **asdict(PPOConfig()), **asdict(RunConfig())}


def ppo2_hints() -> dict[str, Any]:
    return {
        **field_hints(TrainingRunConfig, PPOConfig, WrapperConfig),
        **field_hints(PolicyConfig, prefix="policy."),
    }


def rainbow_hints() -> dict[str, Any]:
    return {**field_hints(TrainingRunConfig, RainbowConfig, WrapperConfig), "features": int}


def maml_hints() -> dict[str, Any]:
    return field_hints(MamlConfig, PPOConfig, RunConfig)


PPO2 = TypedDefaults(ppo2_defaults, CONFIG_DIR, CONFIG_DIR / "ppo2.yaml", ppo2_hints)
RAINBOW = TypedDefaults(rainbow_defaults, CONFIG_DIR, CONFIG_DIR / "rainbow.yaml", rainbow_hints)
MAML = TypedDefaults(maml_defaults, CONFIG_DIR, CONFIG_DIR / "maml.yaml", maml_hints)
