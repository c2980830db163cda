"""The contest environment on real emulators: scenario, actions, frame skip, episode limit."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.contest.env import (
    StochasticFrameSkip,
    contest_scenario,
    make_contest_env,
    make_retro_env,
)
from evaluation.contest.rules import EPISODE_STEPS
from sonic_common.errors import UserError
from tests.support import AIRSTRIKER, BREAKOUT


class RecordingEmulator:
    """Stands between stable-retro and its emulator and records every frame's button mask."""

    def __init__(self, em: object) -> None:
        self._em = em
        self._pending: bytes | None = None
        self.frames: list[bytes] = []

    def set_button_mask(self, mask: np.ndarray, player: int = 0) -> None:
        self._pending = np.asarray(mask, dtype=np.uint8).tobytes()
        self._em.set_button_mask(mask, player)

    def step(self) -> None:
        self.frames.append(self._pending)
        self._em.step()

    def __getattr__(self, name: str) -> object:
        return getattr(self._em, name)


def frame_skip_of(env) -> StochasticFrameSkip:
    while not isinstance(env, StochasticFrameSkip):
        env = env.env
    return env


def record(env) -> RecordingEmulator:
    retro = env.unwrapped
    retro.em = RecordingEmulator(retro.em)
    return retro.em


def two_actions(n: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros(n, np.int8)
    b = np.zeros(n, np.int8)
    a[7] = 1  # RIGHT
    b[6] = 1  # LEFT
    return a, b


def test_contest_scenario_only_where_the_game_has_one():
    assert contest_scenario("SonicTheHedgehog-Genesis-v0") == "contest"
    assert contest_scenario("SonicTheHedgehogCustomKevin-Genesis") == "contest"
    assert contest_scenario("Airstriker-Genesis-v0") is None
    assert contest_scenario("SonicTheHedgehog-Sms-v0") is None  # not a contest game: its score


def test_a_contest_game_without_its_contest_scenario_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a broken install: stable-retro's data without contest.json (the fault, injected)
    import evaluation.contest.env as contest_env

    monkeypatch.setattr(contest_env, "has_file", lambda game, name: False)
    with pytest.raises(UserError, match="SonicAndKnuckles3-Genesis-v0 has no contest.json"):
        contest_scenario("SonicAndKnuckles3-Genesis-v0")
    assert contest_scenario("Airstriker-Genesis-v0") is None


def test_environment_has_the_contest_spaces_and_no_window(closing):
    env = closing(make_contest_env(AIRSTRIKER, seed=0))
    assert env.unwrapped.render_mode is None
    assert env.action_space.n == 12  # MultiBinary(12): B A MODE START UP DOWN LEFT RIGHT C Y X Z
    assert env.observation_space.shape == (224, 320, 3)
    assert env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert obs.shape == (224, 320, 3)


def test_each_step_runs_four_frames_and_sums_their_rewards(closing):
    """Replaying the per-frame button masks the emulator received on a fresh emulator gives the
    same per-frame rewards, whose sums per agent step are what the contest env returned."""
    env = closing(make_contest_env(AIRSTRIKER, seed=3))
    rec = record(env)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    step_rewards = []
    for _ in range(300):
        _, r, term, trunc, _ = env.step(rng.integers(0, 2, 12).astype(np.int8))
        step_rewards.append(r)
        if term or trunc:
            break
    masks = list(rec.frames)
    env.close()
    del rec  # the recorder holds the emulator: drop it so a new one may be made
    # the reset's own frame, then 4 per step (the last step may end early)
    n = len(step_rewards)
    assert len(masks) == 1 + 4 * n or (term and 4 * n - 3 < len(masks) <= 4 * n)

    raw = closing(make_retro_env(AIRSTRIKER))
    raw.reset()
    frame_rewards = []
    for m in masks[1:]:  # frame 0 is reset's own blank frame
        _, r, *_ = raw.step(np.frombuffer(m, dtype=np.uint8))
        frame_rewards.append(r)
    sums = [sum(frame_rewards[4 * i : 4 * i + 4]) for i in range(len(step_rewards))]
    assert sums == pytest.approx(step_rewards)
    assert sum(step_rewards) > 0  # random play scores in Airstriker


def test_previous_action_sticks_on_first_frame_with_probability_quarter(closing):
    env = closing(make_contest_env(AIRSTRIKER, seed=11, max_episode_steps=10**6))
    rec = record(env)
    a, b = two_actions(12)
    env.reset(seed=11)
    n_steps, sticks, first_steps = 0, 0, 0
    for episode in range(40):
        if episode:
            env.reset()
        start = len(rec.frames)
        prev = None
        for t in range(100):
            act = a if t % 2 == 0 else b
            _, _, term, trunc, _ = env.step(act)
            frames = rec.frames[start + 4 * t : start + 4 * t + 4]
            # frames 2..4 of every step always carry the new action
            assert all(f == act.astype(np.uint8).tobytes() for f in frames[1:])
            if prev is None:
                first_steps += 1
                assert frames[0] == act.astype(np.uint8).tobytes(), "stuck after reset"
            else:
                n_steps += 1
                sticks += frames[0] == prev.astype(np.uint8).tobytes()
            prev = act
            if term or trunc:
                break
    rate = sticks / n_steps
    assert first_steps == 40
    assert n_steps > 1500
    # binomial(n, 0.25): 4 standard deviations is about 0.04 at n ≈ 2000
    assert abs(rate - 0.25) < 0.04, rate


def test_stickiness_is_reproducible_from_the_seed(closing):
    def pattern(seed: int) -> list[bytes]:
        env = make_contest_env(AIRSTRIKER, seed=seed)
        try:
            rec = record(env)
            a, b = two_actions(12)
            env.reset(seed=seed)
            for t in range(60):
                _, _, term, trunc, _ = env.step(a if t % 2 == 0 else b)
                if term or trunc:
                    break
            return list(rec.frames)
        finally:
            env.close()

    assert pattern(5) == pattern(5)
    assert pattern(5) != pattern(6)


def test_episode_is_cut_at_4500_steps(atari_roms, closing):
    # Breakout never serves the ball without FIRE, so standing still never ends the game.
    env = closing(make_contest_env(BREAKOUT, seed=0))
    env.reset(seed=0)
    noop = np.zeros(env.action_space.n, np.int8)
    steps = 0
    truncated = False
    while not truncated and steps <= EPISODE_STEPS:
        _, _, terminated, truncated, _ = env.step(noop)
        assert not terminated
        steps += 1
    assert steps == EPISODE_STEPS and truncated
    assert frame_skip_of(env).frames_emulated == 4 * EPISODE_STEPS


def test_level_whose_game_is_not_imported_is_a_one_line_error():
    with pytest.raises(UserError, match="not imported.*roms_setup import"):
        make_contest_env("SonicTheHedgehog-Genesis-v0:GreenHillZone.Act1")
    with pytest.raises(UserError, match="no state"):
        make_contest_env("Airstriker-Genesis-v0:Level9")
    with pytest.raises(UserError, match="Game:State"):
        make_contest_env("Airstriker-Genesis-v0")
