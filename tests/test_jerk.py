"""JERK (`python -m agent.jerk`): its pure logic on a tiny deterministic env, then one real run."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from agent.connection import BudgetExhausted, RemoteEnvClosed
from agent.jerk import (
    CONFIG_PATH,
    JUMP,
    LEFT,
    RIGHT,
    Jerk,
    JerkConfig,
    Solution,
    TrackedEnv,
    best_sequence,
    choose_solution,
    exploit_probability,
    load_config,
    move,
    play,
)
from evaluation.contest.records import read_monitor
from evaluation.contest.runner import RunSpec, run_one
from roms_setup.levels import Level
from sonic_common.errors import UserError
from tests.support import AIRSTRIKER


class Corridor(gym.Env):
    """A line: RIGHT moves +1 (not past `wall`), LEFT −1; reward = the move (like the contest's
    horizontal progress); done after `horizon` steps. Records every action it receives. After
    `budget` steps in all, the next step raises `ending` (like the server's close)."""

    def __init__(
        self,
        horizon: int = 20,
        wall: int = 10**9,
        buttons: int = 12,
        budget: int | None = None,
        ending: type[RemoteEnvClosed] = BudgetExhausted,
    ) -> None:
        self.horizon, self.wall, self.budget, self.ending = horizon, wall, budget, ending
        self.action_space = spaces.MultiBinary(buttons)
        self.observation_space = spaces.Box(0, 255, (1,), np.uint8)
        self.received: list[np.ndarray] = []  # every action, all episodes
        self.episode_starts: list[int] = []  # index into `received` of each reset
        self.x = self.t = 0

    def reset(self, *, seed=None, options=None):
        self.x = self.t = 0
        self.episode_starts.append(len(self.received))
        return np.zeros(1, np.uint8), {}

    def step(self, action):
        if self.budget is not None and len(self.received) >= self.budget:
            raise self.ending("timesteps", 1)
        action = np.array(action, copy=True)
        self.received.append(action)
        old = self.x
        if action[RIGHT] and not action[LEFT]:
            self.x = min(self.x + 1, self.wall)
        elif action[LEFT] and not action[RIGHT]:
            self.x -= 1
        self.t += 1
        return np.zeros(1, np.uint8), float(self.x - old), self.t >= self.horizon, False, {}


class FixedRandom(random.Random):
    """random() returns the given values in order (then 0.5); counts the draws."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = list(values)
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return self.values.pop(0) if self.values else 0.5


def column(actions: list[np.ndarray], index: int) -> list[int]:
    return [int(a[index]) for a in actions]


def actions_of(*rows: list[int], n: int = 12) -> list[np.ndarray]:
    out = []
    for row in rows:
        a = np.zeros(n, np.int8)
        a[row] = 1
        out.append(a)
    return out


# --- pure logic ---------------------------------------------------------------------------------


def test_best_sequence_truncates_at_the_earliest_peak() -> None:
    acts = actions_of([0], [1], [2], [3], [4], [5])
    rewards = [1.0, 2.0, -1.0, 3.0, 0.0, -5.0]
    cumulative = list(np.cumsum(rewards))  # 1 3 2 5 5 0: the peak 5 first at index 3
    best = best_sequence(acts, cumulative)
    assert len(best) == 4 and all(b is a for b, a in zip(best, acts, strict=False))
    assert best_sequence(acts[:2], [-1.0, -2.0]) == acts[:1]  # all negative: the first step
    assert best_sequence([], []) == []
    with pytest.raises(ValueError):
        best_sequence(acts, cumulative[:3])


def test_tracker_records_actions_and_cumulative_rewards() -> None:
    env = TrackedEnv(Corridor(horizon=6, wall=2))
    env.reset()
    for a in actions_of([RIGHT], [RIGHT], [RIGHT], [LEFT], [RIGHT], [LEFT]):
        env.step(a)
    assert env.reward_history == [1.0, 2.0, 2.0, 1.0, 2.0, 1.0]
    assert [int(a[RIGHT]) for a in env.best_sequence()] == [1, 1]  # peak 2 first at step 1
    env.reset()
    assert env.action_history == [] and env.total_reward == 0 and env.total_steps_ever == 6


def test_exploit_probability_grows_with_steps() -> None:
    cfg = JerkConfig()
    assert exploit_probability(0, cfg) == pytest.approx(0.25)
    assert exploit_probability(500_000, cfg) == pytest.approx(0.75)
    assert exploit_probability(750_000, cfg) == pytest.approx(1.0)
    assert exploit_probability(2_000_000, cfg) > 1.0  # not capped

    jerk = Jerk(Corridor(), cfg, FixedRandom([0.3, 0.2]))
    assert not jerk.should_exploit() and jerk.rng.draws == 0  # no solution: no draw, explore
    jerk.solutions.append(Solution([1.0], actions_of([RIGHT])))
    assert not jerk.should_exploit()  # 0.3 >= 0.25
    assert jerk.should_exploit()  # 0.2 < 0.25
    jerk.env.total_steps_ever = 750_000
    jerk.rng = FixedRandom([0.999999] * 3)
    assert all(jerk.should_exploit() for _ in range(3))  # p >= 1: always replays


def test_choose_solution_by_mean_return_ties_to_the_last() -> None:
    a, b, c = Solution([5.0], []), Solution([1.0, 9.0], []), Solution([4.0, 4.0], [])
    sols = [a, b, c]
    assert choose_solution(sols) is b  # means 5, 5, 4: b is the later of the tie
    assert sols == [c, a, b]  # sorted in place, ascending and stable, like the baseline


@pytest.mark.parametrize("backtracking,expected", [(False, 1.0), (True, 2.0)])
def test_replay_plays_the_stored_actions_then_noops(backtracking: bool, expected: float) -> None:
    env = Corridor(horizon=10)
    jerk = Jerk(env, JerkConfig(allow_backtracking=backtracking), FixedRandom([0.0]))
    seq = actions_of([RIGHT], [RIGHT, JUMP], [LEFT], [JUMP, 4, 5])
    other = Solution([1.0], actions_of([LEFT]))
    best = Solution([3.0], seq)
    jerk.solutions = [best, other]
    assert jerk.play_episode() == "replay"
    assert len(env.received) == 10 and env.episode_starts == [0]
    for got, want in zip(env.received[:4], seq, strict=True):
        np.testing.assert_array_equal(got, want)
    assert all(not a.any() for a in env.received[4:])  # padded with no-ops until done
    # the replay's return is recorded: right, right, left is 1 in raw reward (the original
    # baseline's), 2 as best progress with backtracking
    assert best.returns == [3.0, expected] and other.returns == [1.0]
    assert jerk.episodes == 1 and jerk.replays == 1 and jerk.total_steps == 10


def test_move_jumps_hold_the_button_for_jump_repeat_steps() -> None:
    env = Corridor(horizon=100)
    env.reset()
    rng = FixedRandom([0.5, 0.05, 0.05, 0.09])  # no; jump (3 steps free); jump; jump (cut)
    gained, done = move(env, 10, rng, JerkConfig(), 12)
    assert (gained, done) == (10.0, False)
    assert column(env.received, JUMP) == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert column(env.received, RIGHT) == [1] * 10 and column(env.received, LEFT) == [0] * 10
    assert rng.draws == 4  # no draw while a jump is held
    rng.values = [0.5, 0.5, 0.5]
    move(env, 3, rng, JerkConfig(), 12, left=True)  # a jump does not carry into the next move
    assert column(env.received[10:], JUMP) == [0, 0, 0]
    assert column(env.received[10:], LEFT) == [1, 1, 1]
    assert column(env.received[10:], RIGHT) == [0, 0, 0]


def test_move_stops_when_the_episode_ends() -> None:
    env = Corridor(horizon=7)
    env.reset()
    assert move(env, 100, random.Random(0), JerkConfig(), 12) == (7.0, True)
    assert len(env.received) == 7


@pytest.mark.parametrize("backtracking", [True, False])
def test_explore_goes_left_only_after_a_run_that_gained_nothing(backtracking: bool) -> None:
    # wall at 50: the 1st right run gains 50, the 2nd nothing, so 70 steps left to x = -20;
    # the 3rd right run walks back to 50: no new progress with backtracking (so left again),
    # +70 with the raw reward (so right on until the episode ends).
    env = Corridor(horizon=450, wall=50)
    cfg = JerkConfig(jump_prob=0.0, allow_backtracking=backtracking)
    jerk = Jerk(env, cfg, random.Random(0))
    assert jerk.play_episode() == "explore"
    left = column(env.received, LEFT)
    right = column(env.received, RIGHT)
    assert len(left) == 450 and all(a + b == 1 for a, b in zip(left, right, strict=True))
    if backtracking:
        expected = [0] * 200 + [1] * 70 + [0] * 100 + [1] * 70 + [0] * 10
    else:
        expected = [0] * 200 + [1] * 70 + [0] * 180
    assert left == expected
    [solution] = jerk.solutions
    assert solution.returns == [50.0]
    assert len(solution.actions) == 50  # the first step where progress reached 50
    assert all(a[RIGHT] == 1 for a in solution.actions)


def test_explore_presses_right_while_it_gains_and_jumps_sometimes() -> None:
    env = Corridor(horizon=300)
    jerk = Jerk(env, JerkConfig(), random.Random(1))
    jerk.play_episode()
    assert column(env.received, RIGHT) == [1] * 300 and not any(column(env.received, LEFT))
    jumps = column(env.received, JUMP)
    assert 0 < sum(jumps) < 300
    assert len(jerk.solutions[0].actions) == 300  # progress peaks at the last step


def test_atari_buttons_and_bad_spaces() -> None:
    env = Corridor(horizon=30, buttons=8)
    Jerk(env, JerkConfig(), random.Random(0)).play_episode()
    assert all(a.shape == (8,) and a[RIGHT] == 1 for a in env.received)
    with pytest.raises(ValueError, match="MultiBinary"):
        Jerk(Corridor(buttons=4), JerkConfig(), random.Random(0))


def test_same_seed_same_actions() -> None:
    def actions(seed: int) -> list[list[int]]:
        env = Corridor(horizon=120, wall=60)
        Jerk(env, JerkConfig(exploit_bias=0.5), random.Random(seed)).run(episodes=6)
        return [a.tolist() for a in env.received]

    assert actions(3) == actions(3)
    assert actions(3) != actions(4)


def test_budget_spent_mid_replay_ends_cleanly() -> None:
    cfg = JerkConfig(exploit_bias=1.0)  # replay from the second episode on
    env = Corridor(horizon=20, budget=23)  # the server closes at the 4th step of the replay
    assert play(env, cfg, seed=0, log=False) == 0
    assert env.episode_starts == [0, 20] and len(env.received) == 23
    lost = Corridor(horizon=20, budget=5, ending=RemoteEnvClosed)
    assert play(lost, cfg, seed=0, log=False) == 1


def test_config_file_matches_the_baseline() -> None:
    assert load_config() == load_config(CONFIG_PATH) == JerkConfig()
    cfg = load_config(CONFIG_PATH)
    assert (
        cfg.exploit_bias,
        cfg.total_timesteps,
        cfg.right_steps,
        cfg.left_steps,
        cfg.jump_prob,
        cfg.jump_repeat,
    ) == (0.25, 1_000_000, 100, 70, 0.1, 4)


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "jerk.yaml"
    path.write_text("exploit_bias: 0.5\nright_step: 10\n")
    with pytest.raises(UserError, match="right_step"):
        load_config(path)
    path.write_text("exploit_bias: 0.5\n")
    cfg = load_config(path, ["left_steps=3", "allow_backtracking=false"])
    assert (cfg.exploit_bias, cfg.left_steps, cfg.right_steps) == (0.5, 3, 100)
    assert cfg.allow_backtracking is False
    with pytest.raises(UserError, match="jump"):
        load_config(None, ["jump=2"])


def test_config_without_the_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as in an agent image built from a wheel without agent/configs/
    monkeypatch.setattr("agent.jerk.CONFIG_PATH", tmp_path / "missing.yaml")
    assert load_config() == JerkConfig()
    path = tmp_path / "mine.yaml"
    path.write_text("right_steps: 50\n")
    assert load_config(path, ["jump_repeat=2"]) == JerkConfig(right_steps=50, jump_repeat=2)
    with pytest.raises(UserError, match="jump"):
        load_config(None, ["jump=2"])


# --- through the real server ----------------------------------------------------------------------


@pytest.fixture
def results_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="jerk-"))
    yield base / "results"
    shutil.rmtree(base, ignore_errors=True)


def test_jerk_on_airstriker_until_the_budget(results_dir: Path) -> None:
    spec = RunSpec(
        agent="jerk",
        level=Level.parse(AIRSTRIKER),
        seed=0,
        budget=1500,
        results_dir=results_dir,
        wallclock_s=120.0,
    )
    results = run_one(spec)
    assert results["status"] == "budget", results.get("error")
    assert results["agent_exit_code"] == 0 and results["timesteps"] == 1500
    _, rows = read_monitor(results_dir / "monitor.csv")
    assert rows and not rows[0].cut  # a whole episode, then the one the budget cut
    assert results["episodes"] == sum(not row.cut for row in rows) >= 1
    log = (results_dir / "agent.log").read_text()
    assert "jerk agent: seed 0" in log and "budget spent after" in log
    assert "explore return" in log
