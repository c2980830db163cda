"""Many HalfCheetah-v5 simulations stepped together on MuJoCo's own Python API.

Gymnasium's `HalfCheetah-v5` in behaviour: the same model file, 5 physics steps of 0.01 s per
agent step (dt = 0.05 s), the same reset (`mj_resetData`, then qpos += U(−0.1, 0.1) and
qvel += 0.1·N(0, 1) drawn, in that order, from the generator Gymnasium makes of the reset seed),
the same 17-D observation (qpos without the x position, then qvel) and
x_velocity = Δx / dt. The task rewards of `meta_train.tasks` are computed on x_velocity and the
torque. tests/test_halfcheetah_sim.py checks all of it against `gym.make("HalfCheetah-v5")`.

Why not Gymnasium's environments: one `env.step` adds ≈ 40% of Python around the physics
(spaces checks, `info` dicts, wrappers, `mj_rnePostConstraint` for contact forces the
observation never uses); here a sampler worker loops over plain `MjData` (figures in
docs/benchmarks.md, maml_throughput).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mujoco
import numpy as np
from gymnasium.utils import seeding

FRAME_SKIP = 5
RESET_NOISE_SCALE = 0.1
OBS_DIM = 17
ACTION_DIM = 6


def model_path() -> Path:
    import gymnasium.envs.mujoco as gym_mujoco

    return Path(gym_mujoco.__file__).parent / "assets" / "half_cheetah.xml"


class HalfCheetahSims:
    """`count` HalfCheetah simulations sharing one compiled model (grown on demand)."""

    def __init__(self, count: int = 0) -> None:
        from meta_train.tasks import quiet_mujoco

        quiet_mujoco()
        self.model = mujoco.MjModel.from_xml_path(str(model_path()))
        self.dt = float(self.model.opt.timestep) * FRAME_SKIP
        first = mujoco.MjData(self.model)
        self.init_qpos = first.qpos.copy()
        self.init_qvel = first.qvel.copy()
        self.datas: list[mujoco.MjData] = [first]
        self.ensure(count)

    def ensure(self, count: int) -> None:
        while len(self.datas) < count:
            self.datas.append(mujoco.MjData(self.model))

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Reset the first len(seeds) simulations, each with its seed; their observations."""
        self.ensure(len(seeds))
        nq, nv = self.model.nq, self.model.nv
        for data, seed in zip(self.datas, seeds, strict=False):
            rng, _ = seeding.np_random(int(seed))
            mujoco.mj_resetData(self.model, data)
            data.qpos[:] = self.init_qpos + rng.uniform(-RESET_NOISE_SCALE, RESET_NOISE_SCALE, nq)
            data.qvel[:] = self.init_qvel + RESET_NOISE_SCALE * rng.standard_normal(nv)
            mujoco.mj_forward(self.model, data)
        return self.observe(len(seeds))

    def observe(self, count: int) -> np.ndarray:
        obs = np.empty((count, OBS_DIM), dtype=np.float64)
        for k in range(count):
            data = self.datas[k]
            obs[k, :8] = data.qpos[1:]
            obs[k, 8:] = data.qvel
        return obs

    def step(self, torques: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One agent step of the first len(torques) simulations: (observations, x_velocity)."""
        model, dt = self.model, self.dt
        count = len(torques)
        x_velocity = np.empty(count, dtype=np.float64)
        obs = np.empty((count, OBS_DIM), dtype=np.float64)
        for k in range(count):
            data = self.datas[k]
            x_before = data.qpos[0]
            data.ctrl[:] = torques[k]
            mujoco.mj_step(model, data, FRAME_SKIP)
            x_velocity[k] = (data.qpos[0] - x_before) / dt
            obs[k, :8] = data.qpos[1:]
            obs[k, 8:] = data.qvel
        return obs, x_velocity
