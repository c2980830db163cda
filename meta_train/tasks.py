"""Task distributions for meta-learning: a distribution samples tasks, a task makes environments.

A task is a small, picklable dict (`{"kind": "halfcheetah-dir", "direction": -1.0, ...}`), so it
travels to sampler worker processes and into checkpoints/CSV files as is; `make_env(task)` builds
one Gymnasium environment for it.

HalfCheetah sanity tasks (Finn et al. 2017), on Gymnasium's `HalfCheetah-v5` with
`ctrl_cost_weight=0.05` (MAML's control cost; the default is 0.1):

    direction:  r = direction · v_x − 0.05 · ‖a‖²        direction ∈ {−1, +1} with equal odds
    velocity:   r = −|v_x − goal| − 0.05 · ‖a‖²           goal ~ U[0, 2]

with v_x = `info["x_velocity"]` and `a` the action the simulator received (the sampler clips the
Gaussian policy's sample to [−1, 1]). HalfCheetah never terminates; every trajectory has exactly
`horizon` steps. The default horizon is 100 (pytorch-maml-rl, garage): half of Finn's 200, which
halves the MuJoCo and policy cost per trajectory on a CPU. Finn's simulator used 0.01 s steps and
a 20-D observation; v5 uses 0.05 s steps and 17-D, so returns are not comparable with the paper.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

Task = dict[str, Any]

CTRL_COST_WEIGHT = 0.05
KINDS = ("halfcheetah-dir", "halfcheetah-vel")


def direction_reward(direction: float, x_velocity: float, action: np.ndarray) -> float:
    return float(direction * x_velocity - CTRL_COST_WEIGHT * np.sum(np.square(action)))


def velocity_reward(goal: float, x_velocity: float, action: np.ndarray) -> float:
    return float(-abs(x_velocity - goal) - CTRL_COST_WEIGHT * np.sum(np.square(action)))


class HalfCheetahTaskReward(gym.Wrapper):  # type: ignore[type-arg]
    """Replaces HalfCheetah's reward by the task's; never terminates (v5 does not either)."""

    def __init__(self, env: gym.Env, task: Task) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        self.task = dict(task)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = self.env.step(action)
        v = float(info["x_velocity"])
        a = np.asarray(action, dtype=np.float64)
        if self.task["kind"] == "halfcheetah-dir":
            reward = direction_reward(float(self.task["direction"]), v, a)
        else:
            reward = velocity_reward(float(self.task["goal"]), v, a)
        return obs, reward, bool(terminated), bool(truncated), info


def _quiet_mujoco() -> None:
    """MuJoCo 3.3+/4 warns that HalfCheetah's XML uses the deprecated `settotalmass`, on stderr
    and into ./MUJOCO_LOG.TXT, once per environment built: drop that known, harmless one and
    route any other MuJoCo warning to Python's `warnings`."""
    try:
        import warnings

        import mujoco

        if getattr(_quiet_mujoco, "done", False):
            return
        def handler(msg: str) -> None:
            if "settotalmass" not in msg:
                warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2)

        mujoco.set_mju_user_warning(handler)
        _quiet_mujoco.done = True  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        pass


def make_env(task: Task) -> gym.Env:  # type: ignore[type-arg]
    """One environment for `task` (horizon enforced by a TimeLimit)."""
    _quiet_mujoco()
    kind = task["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}: one of {', '.join(KINDS)}")
    env = gym.make("HalfCheetah-v5", ctrl_cost_weight=CTRL_COST_WEIGHT,
                   max_episode_steps=int(task["horizon"]))
    return HalfCheetahTaskReward(env, task)


class TaskDistribution:
    """Samples tasks of one kind. `sample(n, rng)` is a pure function of the generator."""

    def __init__(self, kind: str, horizon: int = 100, low: float = 0.0, high: float = 2.0) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown task kind {kind!r}: one of {', '.join(KINDS)}")
        if horizon < 1:
            raise ValueError(f"horizon must be ≥ 1, got {horizon}")
        self.kind, self.horizon, self.low, self.high = kind, int(horizon), float(low), float(high)

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        if self.kind == "halfcheetah-dir":
            signs = rng.integers(0, 2, size=n) * 2 - 1
            return [{"kind": self.kind, "horizon": self.horizon, "direction": float(s)}
                    for s in signs]
        goals = rng.uniform(self.low, self.high, size=n)
        return [{"kind": self.kind, "horizon": self.horizon, "goal": float(g)} for g in goals]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TaskDistribution:
        t = cfg["task"]
        return cls(str(t["kind"]), int(t["horizon"]), float(t.get("goal_low", 0.0)),
                   float(t.get("goal_high", 2.0)))


def describe(task: Task) -> str:
    if task["kind"] == "halfcheetah-dir":
        return f"dir{int(task['direction']):+d}"
    return f"vel{task['goal']:.2f}"
