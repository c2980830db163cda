"""Parallel local contest environments: Gymnasium's AsyncVectorEnv, one emulator per subprocess.

    envs = make_level_vec_env(levels, workers=4, seed=0)      # levels: list of `Game:State`

stable-retro allows one emulator per process, and AsyncVectorEnv builds one environment in the
parent to read the spaces. So the environment here, `LevelEnv`, is lazy: it knows its spaces
from the level's system (no emulator) and opens the emulator at its first reset — which happens
in the worker subprocess. The parent never creates an emulator.

Levels are dealt to the workers round-robin (worker i plays levels i, i+E, i+2E, ...). A worker
with more than one level switches to its next level at every episode end, by closing its
emulator and opening the next one's (one emulator per process), so joint PPO over the 47
training levels works with any number of workers: with E workers each plays ~47/E levels in
turn. With more workers than levels, the levels repeat (worker i plays level i mod L).

The vector env runs in autoreset mode SAME_STEP: a step that ends an episode returns the next
episode's first observation, and the final observation is in infos["final_obs"] (the learner
needs it to bootstrap truncated episodes).

Subprocesses start with the `forkserver` context (fresh, no inherited emulator or torch
threads); observations come back through shared memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RecordEpisodeStatistics

from agent.wrappers import WrapperConfig, wrap_agent_env
from sonic_common.errors import UserError

# Actions of the agent-side discretizers (agent/wrappers.py), by kind and by system for `auto`.
_ACTIONS = {"sonic": 7, "sonic8": 8, "atari": 18}
_AUTO_KIND = {"Genesis": "sonic", "Atari2600": "atari"}


def level_system(level_id: str) -> str:
    """`SonicTheHedgehog-Genesis-v0:GreenHillZone.Act1` → `Genesis`."""
    game = level_id.partition(":")[0]
    parts = game.split("-")
    if len(parts) >= 2 and parts[-1].startswith("v") and parts[-1][1:].isdigit():
        return parts[-2]
    return parts[-1]


def discrete_actions(level_id: str, discretizer: str = "auto") -> int:
    kind = discretizer
    if kind == "auto":
        system = level_system(level_id)
        if system not in _AUTO_KIND:
            raise UserError(
                f"no default action set for {level_id} (system {system}): "
                "set discretizer to sonic, sonic8 or atari"
            )
        kind = _AUTO_KIND[system]
    if kind not in _ACTIONS:
        raise UserError(f"unknown discretizer {kind!r}: use auto, sonic, sonic8 or atari")
    return _ACTIONS[kind]


class LevelEnv(gym.Env):
    """The contest environment of one level (or several in turn) plus the agent-side wrappers.

    The emulator opens at the first reset, so constructing this object is cheap and safe in a
    process that must not hold an emulator. Info of a finished episode carries gymnasium's
    `episode` statistics of the raw (unscaled, contest) reward.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        levels: Sequence[str],
        seed: int | None = None,
        wrappers: WrapperConfig | None = None,
        size: int = 84,
        stack: int = 4,
    ) -> None:
        if not levels:
            raise ValueError("LevelEnv needs at least one level")
        self.levels = [str(lv) for lv in levels]
        self.wrappers = wrappers or WrapperConfig()
        self.size, self.stack = size, stack
        counts = {discrete_actions(lv, self.wrappers.discretizer) for lv in self.levels}
        if len(counts) != 1:
            raise UserError(
                f"levels {', '.join(self.levels)} have different action sets "
                f"({sorted(counts)} actions): train them separately"
            )
        self.action_space = spaces.Discrete(counts.pop())
        self.observation_space = spaces.Box(0, 255, (stack, size, size), dtype=np.uint8)
        self._rng = np.random.default_rng(seed)
        self._env: gym.Env | None = None
        self._next = 0  # index of the level the next emulator opens
        self.level: str | None = None
        self.played: dict[str, int] = {}  # episodes started per level (joint training's mix)

    def _open_next(self) -> None:
        from evaluation.contest.env import make_contest_env

        if self._env is not None:
            self._env.close()  # one emulator per process: close before opening the next
            self._env = None
        self.level = self.levels[self._next % len(self.levels)]
        self._next += 1
        seed = int(self._rng.integers(2**31))
        env = wrap_agent_env(
            RecordEpisodeStatistics(make_contest_env(self.level, seed=seed)),
            self.wrappers,
            size=self.size,
            stack=self.stack,
        )
        if (
            env.action_space != self.action_space
            or env.observation_space.shape != self.observation_space.shape
        ):
            env.close()
            raise RuntimeError(
                f"{self.level}: spaces {env.action_space}, "
                f"{env.observation_space} differ from the expected "
                f"{self.action_space}, {self.observation_space}"
            )
        self._env = env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._next = 0
        if self._env is None or len(self.levels) > 1 or seed is not None:
            self._open_next()
        assert self._env is not None and self.level is not None
        self.played[self.level] = self.played.get(self.level, 0) + 1
        return self._env.reset()

    def step(self, action: Any):
        if self._env is None:
            raise RuntimeError("reset the environment before stepping it")
        return self._env.step(action)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def assign_levels(levels: Sequence[str], nenvs: int) -> list[list[str]]:
    """Round-robin: worker i gets levels i, i+E, ...; more workers than levels: level i mod L."""
    if nenvs < 1:
        raise UserError(f"the number of environments must be at least 1, got {nenvs}")
    if not levels:
        raise UserError("no levels to train on")
    if nenvs >= len(levels):
        return [[levels[i % len(levels)]] for i in range(nenvs)]
    return [list(levels[i::nenvs]) for i in range(nenvs)]


def make_level_vec_env(
    levels: Sequence[str],
    workers: int,
    seed: int = 0,
    wrappers: WrapperConfig | None = None,
    context: str = "forkserver",
    asynchronous: bool = True,
) -> gym.vector.VectorEnv:
    """`workers` worker processes over `levels` (see the module docstring). asynchronous=False
    runs them in this process instead (only for one level on one env: one emulator per
    process)."""
    groups = assign_levels([str(lv) for lv in levels], workers)
    wrappers = wrappers or WrapperConfig()
    counts = {discrete_actions(lv, wrappers.discretizer) for lv in levels}
    if len(counts) != 1:
        raise UserError(
            f"the levels have different action sets ({sorted(counts)} actions): "
            "train games of one system together"
        )
    fns: list[Callable[[], gym.Env]] = [
        functools.partial(LevelEnv, group, seed + i, wrappers) for i, group in enumerate(groups)
    ]
    if not asynchronous:
        if workers != 1:
            raise ValueError("in-process environments: one at most (one emulator per process)")
        return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    return AsyncVectorEnv(
        fns, shared_memory=True, copy=False, context=context, autoreset_mode=AutoresetMode.SAME_STEP
    )
