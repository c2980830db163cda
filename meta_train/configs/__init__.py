"""Meta-training configs: every key and its default here (`MetaTrainConfig`, the one source of
the defaults); the YAML files beside this module name only the keys a run changes, with comments.
`--set key=value` changes one more (dots reach into sections: trpo.max_kl=0.02).

`MetaTrainConfig()` is the CPU scale of halfcheetah-dir.yaml; *-full.yaml are Finn et al.'s
scale; atari-train.yaml and sonic-train.yaml make game levels the tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import PolicyConfig as AgentPolicyConfig
from agent.config import TypedDefaults

CONFIG_DIR = Path(__file__).resolve().parent

# The meta-optimizers a config may name (`meta_optimizer:`), in meta_train.meta_optimizers.
META_OPTIMIZERS = ("vpg", "trpo", "ppo", "reptile")


@dataclass
class TaskConfig:
    """`task:`: the task distribution."""

    # halfcheetah-dir (direction ±1), halfcheetah-vel (goal ~ U[goal_low, goal_high]) or levels
    # (one task = one game level of `levels`)
    kind: str = "halfcheetah-dir"
    # steps per trajectory: 100 as pytorch-maml-rl/garage (CPU cost); Finn used 200. levels:
    # agent steps (4 frames each); an episode ending sooner is followed by a new one
    horizon: int = 100
    goal_low: float = 0.0  # halfcheetah-vel only
    goal_high: float = 2.0  # halfcheetah-vel only
    # halfcheetah-dir: None draws ±1 per task; 1 or -1 fixes it (an oracle's task)
    direction: float | None = None
    # halfcheetah-vel: None draws U[goal_low, goal_high]; a number fixes it (an oracle's task)
    goal: float | None = None
    # HalfCheetah: torque = clip(action / action_scale, −1, 1). 10 as ProMP, garage and
    # pytorch-maml-rl (init std 1 = 0.1 torque); 1 as learn2learn and RLlib (raw torques). 1
    # here: the study's scale, and at 1.2 M steps (60 TRPO iterations of 10×10×100) neither
    # scale showed meta-learning, so no result moved the default
    # (docs/results/maml_reproduction/README.md); the -repro configs use 10
    action_scale: float = 1.0
    # The keys below apply to kind: levels only (HalfCheetah ignores them).
    # level set name (python -m roms_setup levels SET), a CSV file, or Game:State,...; a
    # meta-batch draws levels without replacement (with, if it asks for more)
    levels: str = "atari-train"
    # the agent-side wrappers (agent.wrappers.WrapperConfig): action set auto (Genesis →
    # sonic's 7, Atari 2600 → ALE's 18), sonic, sonic8 or atari; reward only new progress (the
    # baselines' AllowBacktracking; auto: on for Genesis games, off for Atari 2600 ones, whose
    # score can drop); training reward = game reward × reward_scale (the metrics divide it back
    # out)
    discretizer: str = "auto"
    backtracking: bool | str = "auto"
    reward_scale: float = 0.01


# the task keys only `kind: levels` reads: a HalfCheetah run's values of them mean nothing
LEVEL_TASK_KEYS = frozenset(
    {"task.levels", "task.discretizer", "task.backtracking", "task.reward_scale"}
)


@dataclass
class PolicyConfig(AgentPolicyConfig):
    """`policy:`: an agent.policies spec (the agents' `policy:` keys and defaults: auto is the
    Nature CNN for 84×84×4 frames (levels), else an MLP 2×100 ReLU), and for Gaussian heads the
    learned state-independent std's start."""

    init_std: float = 1.0  # Gaussian heads (HalfCheetah): initial action std


@dataclass
class VPGConfig:
    lr: float = 1.0e-3  # Adam


@dataclass
class TRPOConfig:
    max_kl: float = 0.01  # mean-KL bound (Finn's direction checkpoint: 0.02)
    cg_iters: int = 10
    cg_damping: float = 1.0e-5
    ls_ratio: float = 0.8  # backtracking factor
    ls_max_steps: int = 15


@dataclass
class MetaPPOConfig:
    lr: float = 3.0e-4  # Adam
    epochs: int = 5  # Adam steps per meta-iteration, each re-running the inner steps
    clip: float = 0.2
    # stop the epochs once the post-update policies' mean KL to the sampling ones passes
    # 1.5 × target_kl (CleanRL's early stop); None: every epoch. Added after the direction
    # reproduction's seed 2 collapsed (run without it); whether it prevents that is not measured
    target_kl: float | None = None


@dataclass
class ReptileConfig:
    """First-order Reptile (Nichol et al. 2018): θ ← θ + ε·mean_tasks(φ − θ)."""

    lr: float = 0.1  # outer step size ε (1 = move θ onto the tasks' mean adapted parameters)
    # SGD steps (step size inner_lr) of the inner loss on the post-adaptation batch D_S, after
    # the adapt_steps inner steps on D_0..D_{S-1}: φ
    inner_epochs: int = 1


@dataclass
class MetaTrainConfig:
    """Every key a meta_train config may set, with its default."""

    seed: int = 1
    task: TaskConfig = field(default_factory=TaskConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    iterations: int = 200  # meta-iterations (one meta-batch each)
    meta_batch: int = 10  # tasks per meta-iteration (Finn: 40)
    trajectories: int = 10  # trajectories per task per step (Finn: 20)
    adapt_steps: int = 1  # inner REINFORCE steps (0 = plain joint training, see --joint)
    inner_lr: float = 0.1  # α (Finn: 0.1)
    learn_inner_lr: bool = False  # Meta-SGD: learn α per parameter element, from inner_lr
    first_order: bool = False  # True: first-order MAML (no gradient through the inner gradient)
    gamma: float = 0.99
    gae_lambda: float = 1.0
    baseline_ridge: float = 1.0e-5  # linear feature baseline's ridge coefficient
    # >0: meta-gradient by recomputation in chunks of this many samples (peak memory: one
    # chunk's second-order graph; for image policies). 0: one task's whole graph at a time
    # (fastest for the MLP)
    grad_chunk: int = 0
    meta_optimizer: str = "trpo"  # vpg | trpo | ppo | reptile
    vpg: VPGConfig = field(default_factory=VPGConfig)
    trpo: TRPOConfig = field(default_factory=TRPOConfig)
    ppo: MetaPPOConfig = field(default_factory=MetaPPOConfig)
    reptile: ReptileConfig = field(default_factory=ReptileConfig)
    # sampler worker processes. HalfCheetah: 0 = in this process; tasks are spread over the
    # workers. Levels: emulator processes (one emulator each; the policy stays in the trainer);
    # a task's trajectories run in lock-step in chunks of this many; 0 = one per trajectory
    workers: int = 0
    # where θ learns and the sampler's policy runs: cpu, cuda, or auto (cuda when there is a
    # GPU). The MLP is fastest on the CPU; the CNN of levels wants a GPU
    device: str = "cpu"
    # intra-op threads for learning and the sampler's policy forward (MLP 2×100: 1 is
    # fastest); 0 = PyTorch's default (all cores)
    torch_threads: int = 1
    tensorboard: bool = True


# `load_config(path, overrides, defaults=DEFAULTS)`: MetaTrainConfig's defaults, then the file
DEFAULTS = TypedDefaults(MetaTrainConfig, CONFIG_DIR)


# Keys a resumed run may take from the new call without saying so: where and how it runs, not
# what it computes (`meta_optimizer` has its own check when the checkpoint is loaded).
RUN_LOCAL_KEYS = frozenset(
    {
        "iterations",
        "workers",
        "torch_threads",
        "device",
        "backend",
        "ray_address",
        "tensorboard",
        "grad_chunk",
        "meta_optimizer",
    }
)


def flat_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`task.levels`-style keys for a nested config."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_conflicts(saved: dict[str, Any], cfg: dict[str, Any], named: set[str]) -> list[str]:
    """The settings a resume would change without being asked: keys whose value in `cfg` (the
    config file and this call's options) differs from the run's own (`saved`), except those
    this call names (`named`: deliberate changes) and RUN_LOCAL_KEYS. A key only one side has
    (a setting added or removed since the run started) is not compared, nor are LEVEL_TASK_KEYS
    in a run whose tasks are not levels."""
    old, new = flat_config(saved), flat_config(cfg)
    unread = LEVEL_TASK_KEYS if old.get("task.kind") != "levels" else frozenset()
    return [
        f"{k} is {old[k]!r} in the run and {new[k]!r} here"
        for k in sorted(old.keys() & new.keys())
        if old[k] != new[k]
        and k not in named
        and k not in unread
        and k.split(".")[0] not in RUN_LOCAL_KEYS
    ]
