"""Agent-side wrappers (what the contest's baselines put between the remote env and the policy).

They only use the action and observation spaces, never the emulator, so they work the same on
the remote contest connection as on a local environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TransformReward

from sonic_common.errors import UserError

GENESIS_BUTTONS: tuple[str, ...] = (
    "B",
    "A",
    "MODE",
    "START",
    "UP",
    "DOWN",
    "LEFT",
    "RIGHT",
    "C",
    "Y",
    "X",
    "Z",
)
ATARI2600_BUTTONS: tuple[str | None, ...] = (
    "BUTTON",
    None,
    "SELECT",
    "RESET",
    "UP",
    "DOWN",
    "LEFT",
    "RIGHT",
)

# The retro-baselines Sonic action set; the "Gotta Learn Fast" paper's adds a no-op (8 actions).
SONIC_COMBOS: tuple[tuple[str, ...], ...] = (
    ("LEFT",),
    ("RIGHT",),
    ("LEFT", "DOWN"),
    ("RIGHT", "DOWN"),
    ("DOWN",),
    ("DOWN", "B"),
    ("B",),
)
# ALE's full 18-action set, in ALE's order, with FIRE being the 2600 joystick's BUTTON.
ATARI_COMBOS: tuple[tuple[str, ...], ...] = (
    (),
    ("BUTTON",),
    ("UP",),
    ("RIGHT",),
    ("LEFT",),
    ("DOWN",),
    ("UP", "RIGHT"),
    ("UP", "LEFT"),
    ("DOWN", "RIGHT"),
    ("DOWN", "LEFT"),
    ("UP", "BUTTON"),
    ("RIGHT", "BUTTON"),
    ("LEFT", "BUTTON"),
    ("DOWN", "BUTTON"),
    ("UP", "RIGHT", "BUTTON"),
    ("UP", "LEFT", "BUTTON"),
    ("DOWN", "RIGHT", "BUTTON"),
    ("DOWN", "LEFT", "BUTTON"),
)


class ButtonDiscretizer(gym.ActionWrapper):
    """Discrete(len(combos)) over a MultiBinary button space: action i presses combos[i]."""

    def __init__(
        self, env: gym.Env, buttons: Sequence[str | None], combos: Sequence[Sequence[str]]
    ) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, spaces.MultiBinary) or int(np.prod(space.shape)) != len(buttons):
            raise ValueError(f"expected MultiBinary({len(buttons)}) actions, got {space}")
        table = np.zeros((len(combos), len(buttons)), dtype=np.int8)
        for i, combo in enumerate(combos):
            for button in combo:
                table[i, buttons.index(button)] = 1
        self.table = table
        self.combos = [tuple(c) for c in combos]
        self.action_space = spaces.Discrete(len(combos))

    def action(self, action: int) -> np.ndarray:
        return self.table[int(action)].copy()


class SonicDiscretizer(ButtonDiscretizer):
    """The 7 Sonic button combinations, or 8 with a trailing no-op (`noop=True`)."""

    def __init__(self, env: gym.Env, noop: bool = False) -> None:
        combos = SONIC_COMBOS + (((),) if noop else ())
        super().__init__(env, GENESIS_BUTTONS, combos)


class AtariDiscretizer(ButtonDiscretizer):
    """ALE's 18 joystick actions on a stable-retro Atari 2600 game's MultiBinary(8) buttons."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env, ATARI2600_BUTTONS, ATARI_COMBOS)


class AllowBacktracking(gym.Wrapper):
    """Reward only new progress: max(0, progress − best progress so far).

    Progress is the running sum of rewards since reset (the agent never sees `info`), so going
    back left costs nothing and regaining lost ground earns nothing twice.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._cur = 0.0
        self._best = 0.0

    def reset(self, **kwargs):
        self._cur = 0.0
        self._best = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, rew, terminated, truncated, info = self.env.step(action)
        self._cur += float(rew)
        rew = max(0.0, self._cur - self._best)
        self._best = max(self._best, self._cur)
        return obs, rew, terminated, truncated, info


_cv2 = None


def _opencv():
    """cv2, imported on first use: agents that never look at the screen (JERK, random) run in
    images without OpenCV."""
    global _cv2
    if _cv2 is None:
        import cv2

        # One thread is faster for an 84x84 resize and keeps parallel workers off each other.
        cv2.setNumThreads(1)
        _cv2 = cv2
    return _cv2


def to_gray84(frame: np.ndarray, size: int = 84) -> np.ndarray:
    """RGB frame → size×size grayscale uint8 (cv2, INTER_AREA), as the baselines' WarpFrame."""
    cv2 = _opencv()
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


class WarpFrame(gym.ObservationWrapper):
    """84×84 grayscale uint8 frames of shape (84, 84)."""

    def __init__(self, env: gym.Env, size: int = 84) -> None:
        super().__init__(env)
        self.size = size
        self.observation_space = spaces.Box(0, 255, (size, size), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return to_gray84(observation, self.size)


class FrameStack(gym.Wrapper):
    """The last `k` frames as one uint8 array of shape (k, H, W), oldest first.

    Channel-first for PyTorch. A reset fills the stack with the first frame. The returned array
    is a fresh copy, so a caller may keep it (rollout buffers do).
    """

    def __init__(self, env: gym.Env, k: int = 4) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        if shape is None or len(shape) != 2:
            raise ValueError(f"FrameStack expects (H, W) frames, got {shape}")
        self.k = k
        self.frames = np.zeros((k, *shape), dtype=np.uint8)
        self.observation_space = spaces.Box(0, 255, (k, *shape), dtype=np.uint8)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.frames[:] = obs
        return self.frames.copy(), info

    def step(self, action):
        obs, rew, terminated, truncated, info = self.env.step(action)
        self.frames[:-1] = self.frames[1:]
        self.frames[-1] = obs
        return self.frames.copy(), rew, terminated, truncated, info


def scale_reward(env: gym.Env, scale: float) -> gym.Env:
    def scaled(reward: SupportsFloat) -> float:
        return float(reward) * scale

    return TransformReward(env, scaled)


def platform_of(env: gym.Env, setting: str) -> str:
    """`genesis` or `atari2600`, by the button count of the emulator's MultiBinary actions
    (12, 8); `setting` names what needed it, for the error when neither fits."""
    n = int(np.prod(env.action_space.shape or (0,)))
    platforms = {len(GENESIS_BUTTONS): "genesis", len(ATARI2600_BUTTONS): "atari2600"}
    if n not in platforms:
        raise UserError(
            f"no default {setting} for a game with {env.action_space} actions (neither Genesis "
            f"nor Atari 2600): set {setting} in the config"
        )
    return platforms[n]


def discretizer_for(env: gym.Env, kind: str = "auto") -> gym.Env:
    """`sonic`, `sonic8`, `atari`, or `auto` (by the button count: 12 Genesis, 8 Atari 2600)."""
    if kind == "auto":
        kind = {"genesis": "sonic", "atari2600": "atari"}[platform_of(env, "discretizer")]
    if kind == "sonic":
        return SonicDiscretizer(env)
    if kind == "sonic8":
        return SonicDiscretizer(env, noop=True)
    if kind == "atari":
        return AtariDiscretizer(env)
    raise ValueError(f"unknown discretizer {kind!r}: use auto, sonic, sonic8 or atari")


@dataclass(frozen=True)
class WrapperConfig:
    """The agent-side wrappers' settings, the one source of their defaults (the learners'
    configs, meta-training's `task:` and a MAML checkpoint's `adaptation` carry these keys)."""

    discretizer: str = "auto"  # auto (Genesis → the 7 Sonic combos, Atari 2600 → 18), sonic,
    #                            sonic8 (with a no-op) or atari
    # reward only new progress, max(0, progress − best so far): the baselines' AllowBacktracking,
    # made for Sonic, whose reward is progress to the right. auto: on for Genesis games, off for
    # Atari 2600 ones, whose reward is the game's score, which can drop (Boxing's opponent
    # scores): the wrapper would hide every drop. true or false: on or off for any game
    backtracking: bool | str = "auto"
    reward_scale: float = 0.01  # rewards × this before learning (the baselines' PPO scale)

    def __post_init__(self) -> None:
        backtracking_setting(self.backtracking)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WrapperConfig:
        """The settings in a config, task or checkpoint mapping; a key it lacks: the default."""
        default = cls()
        return cls(
            discretizer=str(d.get("discretizer", default.discretizer)),
            backtracking=backtracking_setting(d.get("backtracking", default.backtracking)),
            reward_scale=float(d.get("reward_scale", default.reward_scale)),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def backtracking_setting(value: Any) -> bool | str:
    """A `backtracking` value as given (YAML true/false, or auto); a clear error otherwise."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise UserError(f"backtracking {value!r} is not true, false or auto: set one of them")


def backtracking_on(env: gym.Env, setting: bool | str) -> bool:
    """Whether the AllowBacktracking wrapper goes on `env` (the emulator's actions, before the
    discretizer): `setting` itself, or for auto whether the game is a Genesis one."""
    if setting == "auto":
        return platform_of(env, "backtracking") == "genesis"
    return setting is True


def wrap_agent_env(
    env: gym.Env, config: WrapperConfig | None = None, *, size: int = 84, stack: int = 4
) -> gym.Env:
    """The baselines' agent-side stack: discrete actions, backtracking reward (see
    `WrapperConfig.backtracking`), scaled reward, 84×84 grayscale, 4 stacked frames (uint8,
    channel-first)."""
    config = config or WrapperConfig()
    backtracking = backtracking_on(env, config.backtracking)
    env = discretizer_for(env, config.discretizer)
    if backtracking:
        env = AllowBacktracking(env)
    if config.reward_scale != 1.0:
        env = scale_reward(env, config.reward_scale)
    env = WarpFrame(env, size)
    return FrameStack(env, stack)
