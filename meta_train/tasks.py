"""Task distributions for meta-learning: a distribution samples tasks, a task makes environments.

A task is a small, picklable dict (`{"kind": "halfcheetah-dir", "direction": -1.0, ...}`), so it
travels to sampler worker processes and into checkpoints/CSV files as is; `make_env(task)` builds
one Gymnasium environment for it.

HalfCheetah sanity tasks (Finn et al. 2017), on Gymnasium's `HalfCheetah-v5` with
`ctrl_cost_weight=0.05` (MAML's control cost; the default is 0.1):

    direction:  r = direction · v_x − 0.05 · ‖a‖²        direction ∈ {−1, +1} with equal odds
    velocity:   r = −|v_x − goal| − 0.05 · ‖a‖²           goal ~ U[0, 2]

with v_x = `info["x_velocity"]` and `a` the torque the simulator received: the Gaussian policy's
sample divided by `task.action_scale` and clipped to [−1, 1] (scale 10: the policy acts in
[−10, 10], as in ProMP, garage and pytorch-maml-rl; scale 1: raw torques). HalfCheetah never
terminates; every trajectory has exactly `horizon` steps. The default horizon is 100
(pytorch-maml-rl, garage): half of Finn's 200, which halves the cost per trajectory on a CPU.
Finn's simulator used 0.01 s steps and a 20-D observation; v5 uses 0.05 s steps and 17-D, so
returns are not comparable with the paper.

Levels as tasks (`kind: levels`): a task is one game level (`Game:State`) of a level set
(`roms_setup.levels.resolve_levels`: a set name such as `atari-train` or `sonic-train`, a CSV
file, or comma-separated ids), played through the contest environment plus the agent-side
wrappers (`agent.training.level_envs.LevelEnv`: discrete actions, backtracking and scaled
reward, 84×84×4 uint8 frames):

    {"kind": "levels", "level": "Qbert-Atari2600-v0:Start", "horizon": 128,
     "discretizer": "auto", "backtracking": "auto", "reward_scale": 0.01}

A meta-batch draws levels without replacement (with replacement when it asks for more levels
than the set has). A trajectory is `horizon` steps; an episode that ends sooner is followed by a
fresh one (the trajectory's `dones` mark where). `make_env` gives the lazy `LevelEnv`, whose
spaces are known without an emulator: the emulator opens at its first reset, which only the
level sampler's worker processes do (meta_train.level_sampler; one emulator per process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from agent.wrappers import WrapperConfig

Task = dict[str, Any]

CTRL_COST_WEIGHT = 0.05
HALFCHEETAH_KINDS = ("halfcheetah-dir", "halfcheetah-vel")
KINDS = (*HALFCHEETAH_KINDS, "levels")


def task_rewards(tasks: Sequence[Task], x_velocity: np.ndarray, torques: np.ndarray) -> np.ndarray:
    """The rewards of len(tasks) HalfCheetah steps at once (one task per row, see the module
    docstring), in float64."""
    ctrl = CTRL_COST_WEIGHT * np.square(torques.astype(np.float64)).sum(axis=1)
    direction = np.array([t.get("direction", 0.0) for t in tasks], dtype=np.float64)
    goal = np.array([t.get("goal", 0.0) for t in tasks], dtype=np.float64)
    is_dir = np.array([t["kind"] == "halfcheetah-dir" for t in tasks])
    return np.where(is_dir, direction * x_velocity, -np.abs(x_velocity - goal)) - ctrl


def scaled_torque(action: np.ndarray, scale: float) -> np.ndarray:
    """The policy acts in [−scale, scale]; the simulator gets action / scale in [−1, 1]
    (`task.action_scale`; pytorch-maml-rl's NormalizedActionWrapper)."""
    return np.clip(np.asarray(action, dtype=np.float64) / scale, -1.0, 1.0)


class HalfCheetahTaskReward(gym.Wrapper):
    """Gymnasium's HalfCheetah-v5 as a task: the task's reward and action scale; never terminates
    (v5 does not either). The sampler steps `meta_train.halfcheetah_sim` instead (the same
    numbers, faster); this one is the reference the tests compare it with."""

    def __init__(self, env: gym.Env, task: Task) -> None:
        super().__init__(env)
        self.task = dict(task)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        torque = scaled_torque(action, float(self.task.get("action_scale", 1.0)))
        obs, _, terminated, truncated, info = self.env.step(torque)
        v = np.array([float(info["x_velocity"])])
        reward = float(task_rewards([self.task], v, torque[None])[0])
        return obs, reward, bool(terminated), bool(truncated), info


def quiet_mujoco() -> None:
    """MuJoCo 3.3+/4 warns that HalfCheetah's XML uses the deprecated `settotalmass`, on stderr
    and into ./MUJOCO_LOG.TXT, once per environment built: drop that known, harmless one and
    route any other MuJoCo warning to Python's `warnings`."""
    try:
        import warnings

        import mujoco

        if getattr(quiet_mujoco, "done", False):
            return

        def handler(msg: str) -> None:
            if "settotalmass" not in msg:
                warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2)

        mujoco.set_mju_user_warning(handler)
        quiet_mujoco.done = True  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        pass


def make_level_env(task: Task) -> gym.Env:
    """The lazy environment of a level task: spaces now, the emulator at its first reset."""
    from agent.training.level_envs import LevelEnv

    return LevelEnv([str(task["level"])], wrappers=WrapperConfig.from_dict(task))


def make_env(task: Task) -> gym.Env:
    """One environment for `task`: HalfCheetah with the horizon enforced by a TimeLimit, or a
    level's lazy `LevelEnv` (no emulator until reset; the sampler enforces the horizon)."""
    kind = task["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}: one of {', '.join(KINDS)}")
    if kind == "levels":
        return make_level_env(task)
    quiet_mujoco()
    env = gym.make(
        "HalfCheetah-v5", ctrl_cost_weight=CTRL_COST_WEIGHT, max_episode_steps=int(task["horizon"])
    )
    return HalfCheetahTaskReward(env, task)


class TaskDistribution:
    """Samples tasks of one kind. `sample(n, rng)` is a pure function of the generator."""

    def __init__(
        self,
        kind: str,
        horizon: int = 100,
        low: float = 0.0,
        high: float = 2.0,
        levels: str | Sequence[str] = "atari-train",
        wrappers: WrapperConfig | None = None,
        action_scale: float = 1.0,
        fixed: float | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown task kind {kind!r}: one of {', '.join(KINDS)}")
        if horizon < 1:
            raise ValueError(f"horizon must be ≥ 1, got {horizon}")
        self.kind, self.horizon, self.low, self.high = kind, int(horizon), float(low), float(high)
        self.levels: list[str] = []
        self.wrappers = wrappers or WrapperConfig()
        self.reward_scale = self.wrappers.reward_scale
        self.action_scale = float(action_scale)
        self.fixed = None if fixed is None else float(fixed)  # one task only: an oracle's
        if not self.action_scale > 0:
            raise ValueError(f"task.action_scale must be > 0, got {action_scale}")
        if kind == "levels":
            self.levels = self._resolve(levels)
            if not self.reward_scale > 0:
                raise ValueError(f"task.reward_scale must be > 0, got {self.reward_scale}")

    def _resolve(self, levels: str | Sequence[str]) -> list[str]:
        from agent.training.level_envs import discrete_actions
        from roms_setup.levels import resolve_levels

        spec = levels if isinstance(levels, str) else ",".join(str(lv) for lv in levels)
        ids = list(dict.fromkeys(lv.id for lv in resolve_levels(spec)))
        counts = {discrete_actions(lv, self.wrappers.discretizer) for lv in ids}
        if len(counts) != 1:
            raise ValueError(
                f"task.levels {spec!r} mixes action sets ({sorted(counts)} "
                "actions): meta-train the games of one system together"
            )
        return ids

    @property
    def return_scale(self) -> float:
        """Factor from the stored (training) rewards to the reported returns: 1/reward_scale for
        levels (the game's units), 1 for HalfCheetah."""
        return 1.0 / self.reward_scale if self.kind == "levels" else 1.0

    def require_playable(self) -> None:
        """A one-line UserError unless every level can be played (ROM imported, state known);
        nothing to check for HalfCheetah."""
        from roms_setup.installed import require_playable
        from roms_setup.levels import Level

        for lv in self.levels:
            require_playable(Level.parse(lv))

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        if self.kind == "levels":
            idx = rng.choice(len(self.levels), size=n, replace=n > len(self.levels))
            return [
                {
                    "kind": "levels",
                    "level": self.levels[int(i)],
                    "horizon": self.horizon,
                    **self.wrappers.as_dict(),
                }
                for i in idx
            ]
        if self.kind == "halfcheetah-dir":
            signs = rng.integers(0, 2, size=n) * 2 - 1
            if self.fixed is not None:
                signs = np.full(n, self.fixed)
            return [
                {
                    "kind": self.kind,
                    "horizon": self.horizon,
                    "direction": float(s),
                    "action_scale": self.action_scale,
                }
                for s in signs
            ]
        goals = rng.uniform(self.low, self.high, size=n)
        if self.fixed is not None:
            goals = np.full(n, self.fixed)
        return [
            {
                "kind": self.kind,
                "horizon": self.horizon,
                "goal": float(g),
                "action_scale": self.action_scale,
            }
            for g in goals
        ]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TaskDistribution:
        t = cfg["task"]
        return cls(
            str(t["kind"]),
            int(t["horizon"]),
            float(t.get("goal_low", 0.0)),
            float(t.get("goal_high", 2.0)),
            levels=t.get("levels", "atari-train"),
            wrappers=WrapperConfig.from_dict(t),
            action_scale=float(t.get("action_scale", 1.0)),
            fixed=t.get("direction" if t["kind"] == "halfcheetah-dir" else "goal"),
        )


def describe(task: Task) -> str:
    if task["kind"] == "levels":
        return str(task["level"])
    if task["kind"] == "halfcheetah-dir":
        return f"dir{int(task['direction']):+d}"
    return f"vel{task['goal']:.2f}"
