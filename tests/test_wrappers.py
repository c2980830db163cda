"""Agent-side wrappers: discretizer tables, backtracking reward, frames, stacking, scaling."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from agent.wrappers import (
    AllowBacktracking,
    AtariDiscretizer,
    FrameStack,
    SonicDiscretizer,
    WarpFrame,
    WrapperConfig,
    scale_reward,
    wrap_agent_env,
)
from evaluation.contest.env import make_contest_env
from sonic_common.errors import UserError
from tests.support import AIRSTRIKER, BREAKOUT


class RecordedRewards(gym.Env):
    """Plays back a recorded reward sequence with 224×320 RGB frames numbered by step."""

    def __init__(self, rewards: list[float], buttons: int = 12) -> None:
        self.rewards = rewards
        self.t = 0
        self.action_space = spaces.MultiBinary(buttons)
        self.observation_space = spaces.Box(0, 255, (224, 320, 3), np.uint8)
        self.received: list[np.ndarray] = []

    def frame(self) -> np.ndarray:
        return np.full((224, 320, 3), self.t * 10 % 256, np.uint8)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self.frame(), {}

    def step(self, action):
        self.received.append(np.asarray(action))
        r = self.rewards[self.t]
        self.t += 1
        return self.frame(), r, self.t == len(self.rewards), False, {}


def test_sonic_discretizer_table():
    env = SonicDiscretizer(RecordedRewards([0.0] * 10))
    names = ("B", "A", "MODE", "START", "UP", "DOWN", "LEFT", "RIGHT", "C", "Y", "X", "Z")
    pressed = [tuple(names[i] for i in np.flatnonzero(row)) for row in env.table]
    assert pressed == [
        ("LEFT",),
        ("RIGHT",),
        ("DOWN", "LEFT"),
        ("DOWN", "RIGHT"),
        ("DOWN",),
        ("B", "DOWN"),
        ("B",),
    ]
    assert env.action_space == spaces.Discrete(7)
    env.reset()
    env.step(5)
    assert env.env.received[-1].tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    with_noop = SonicDiscretizer(RecordedRewards([0.0]), noop=True)
    assert with_noop.action_space == spaces.Discrete(8)
    assert not with_noop.table[7].any()


def test_atari_discretizer_table_follows_ale_order():
    env = AtariDiscretizer(RecordedRewards([0.0], buttons=8))
    assert env.action_space == spaces.Discrete(18)
    # buttons: BUTTON, -, SELECT, RESET, UP, DOWN, LEFT, RIGHT
    assert not env.table[0].any()  # NOOP
    assert env.table[1].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]  # FIRE
    assert env.table[6].tolist() == [0, 0, 0, 0, 1, 0, 0, 1]  # UPRIGHT
    assert env.table[17].tolist() == [1, 0, 0, 0, 0, 1, 1, 0]  # DOWNLEFTFIRE
    assert not env.table[:, 2:4].any()  # never SELECT or RESET
    assert len({row.tobytes() for row in env.table}) == 18


def test_discretizer_refuses_the_wrong_button_count():
    with pytest.raises(ValueError, match="MultiBinary"):
        SonicDiscretizer(RecordedRewards([0.0], buttons=8))


def test_allow_backtracking_rewards_only_new_progress():
    recorded = [1.0, 2.0, -3.0, 1.0, 1.0, 2.0, -1.0, 3.0]
    # progress 1 3 0 1 2 4 3 6; best so far 1 3 3 3 3 4 4 6
    env = AllowBacktracking(RecordedRewards(recorded))
    env.reset()
    got = [env.step(0)[1] for _ in recorded]
    assert got == [1.0, 2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.0]
    assert sum(got) == max(np.cumsum(recorded))
    env.reset()  # a reset starts progress afresh
    assert env.step(0)[1] == 1.0


@pytest.mark.parametrize(
    "buttons,setting,expected",
    [
        (12, "auto", [1.0, 0.0, 0.0, 1.0]),  # Genesis: on, as the baselines on Sonic
        (8, "auto", [1.0, -2.0, 1.0, 2.0]),  # Atari 2600: off, the score's drop kept
        (8, True, [1.0, 0.0, 0.0, 1.0]),
        (12, False, [1.0, -2.0, 1.0, 2.0]),
    ],
)
def test_backtracking_auto_is_on_for_genesis_games_only(
    buttons: int, setting: bool | str, expected: list[float]
) -> None:
    recorded = [1.0, -2.0, 1.0, 2.0]  # progress 1 −1 0 2, best so far 1 1 1 2
    config = WrapperConfig.from_dict({"backtracking": setting, "reward_scale": 1.0})
    env = wrap_agent_env(RecordedRewards(recorded, buttons), config)
    env.reset()
    assert [env.step(0)[1] for _ in recorded] == expected


def test_a_backtracking_value_that_is_not_true_false_or_auto_is_refused() -> None:
    with pytest.raises(UserError, match="'yes' is not true, false or auto"):
        WrapperConfig.from_dict({"backtracking": "yes"})
    with pytest.raises(UserError, match="'false' is not true, false or auto"):
        WrapperConfig(backtracking="false")  # as a library passes it (agent.sb3_adapter)


def test_boxing_keeps_its_negative_rewards(atari_roms, closing):
    # Boxing's reward is the difference of the two boxers' points: the opponent's punches are
    # −1, which the Sonic-made backtracking wrapper would hide
    env = closing(wrap_agent_env(make_contest_env("Boxing-Atari2600-v0:Start", seed=3)))
    env.reset(seed=3)
    env.action_space.seed(3)
    rewards = [env.step(env.action_space.sample())[1] for _ in range(600)]
    assert min(rewards) < 0 < max(rewards)


def test_reward_scale():
    env = scale_reward(RecordedRewards([250.0, -40.0]), 0.01)
    env.reset()
    assert env.step(0)[1] == pytest.approx(2.5)
    assert env.step(0)[1] == pytest.approx(-0.4)


def test_warp_frame_matches_cv2_gray_then_area_resize(closing):
    env = closing(make_contest_env(AIRSTRIKER, seed=0))
    warped = WarpFrame(env)
    raw, _ = env.reset(seed=0)
    expected = cv2.resize(
        cv2.cvtColor(raw, cv2.COLOR_RGB2GRAY), (84, 84), interpolation=cv2.INTER_AREA
    )
    got = warped.observation(raw)
    assert got.shape == (84, 84) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert got.std() > 0  # a real picture, not a blank


def test_frame_stack_keeps_the_last_four_frames_oldest_first():
    env = FrameStack(WarpFrame(RecordedRewards([0.0] * 10)), 4)
    obs, _ = env.reset()
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert (obs == 0).all()  # the first frame repeated
    kept = obs
    for _ in range(5):
        obs, *_ = env.step(0)
    assert [int(obs[i, 0, 0]) for i in range(4)] == [20, 30, 40, 50]
    assert (kept == 0).all(), "a returned observation changed after later steps"
    assert env.observation_space.shape == (4, 84, 84)


@pytest.mark.parametrize("level,actions", [(AIRSTRIKER, 7), (BREAKOUT, 18)])
def test_full_agent_stack_on_real_games(level, actions, atari_roms, closing):
    env = closing(wrap_agent_env(make_contest_env(level, seed=1)))
    obs, _ = env.reset(seed=1)
    assert env.action_space == spaces.Discrete(actions)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    for _ in range(200):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        assert r >= 0.0  # no negative rewards: Airstriker's backtracking, Breakout's score
        if term or trunc:
            break
    assert obs.shape == (4, 84, 84)
