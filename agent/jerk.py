"""`python -m agent.jerk [--config PATH] [--set KEY=VALUE]...`: the contest's JERK baseline.

"Just Enough Retained Knowledge" (openai/retro-baselines agents/jerk_agent.py): at the start of
each episode, with probability `exploit_bias + t / total_timesteps` (t = timesteps taken so far)
replay the best action sequence found so far; otherwise explore: hold RIGHT for 100 steps,
starting a jump (jump button held 4 steps) with probability 1/10 on each step not already in a
jump; if that run gained nothing (reward sum <= 0), hold LEFT for 70 steps the same way; repeat
until the episode ends, then keep the episode's prefix up to its best cumulative reward as a new
solution. Solutions are ranked by the mean of their recorded returns; each replay appends one.

The agent only uses buttons 0 (jump: B on Genesis, BUTTON on the Atari 2600), 6 (LEFT) and
7 (RIGHT), so it plays any MultiBinary(12) Genesis or MultiBinary(8) Atari 2600 remote env.
Hyperparameters: JerkConfig (the baseline's values). Random numbers: our own
`random.Random(AGENT_SEED)` (the seed is taken from the clock when AGENT_SEED is unset, and
printed). Exits 0 when the server says the budget is spent (whenever that happens, mid-replay
included), 1 if the connection ends otherwise.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agent.config import TypedDefaults, add_set_option
from agent.config import load_config as shared_load_config
from agent.connection import agent_seed, make_env
from agent.runtime import play_until_budget
from agent.wrappers import AllowBacktracking
from sonic_common.errors import exit_on_user_error

CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "jerk.yaml"
JUMP, LEFT, RIGHT = 0, 6, 7  # the same indices for Genesis (B, LEFT, RIGHT) and Atari 2600

Action = np.ndarray  # MultiBinary buttons, int8


@dataclass(frozen=True)
class JerkConfig:
    """The baseline's hyperparameters, its own values (openai/retro-baselines jerk_agent.py): the
    one source of JERK's defaults; a YAML file (`--config`, e.g. agent/configs/jerk.yaml) or
    `--set` changes them."""

    # At the start of an episode, replay the best action sequence found so far with probability
    # exploit_bias + timesteps_taken / total_timesteps (no cap: from (1 − exploit_bias) ·
    # total_timesteps = 750k steps on it always replays).
    exploit_bias: float = 0.25
    total_timesteps: int = 1_000_000  # the contest's budget per level; only used just above
    # Exploration: hold RIGHT for right_steps steps; if that run gained nothing (reward sum
    # <= 0) and the episode goes on, hold LEFT for left_steps steps; repeat until it ends.
    right_steps: int = 100
    left_steps: int = 70
    # On each step not already part of a jump, start one with this probability, and hold the
    # jump button (index 0: B on Genesis, BUTTON on the Atari 2600) this many steps, the
    # starting one included (a jump is cut short when its run of steps ends).
    jump_prob: float = 0.1
    jump_repeat: int = 4
    # Put AllowBacktracking (reward = new progress only) under the tracker. jerk_agent.py did
    # not: its tracker saw the raw reward. True makes "gained nothing" mean "no new ground".
    allow_backtracking: bool = False


def load_config(path: Path | None = None, overrides: Sequence[str] = ()) -> JerkConfig:
    """JerkConfig's defaults, updated by the file `path` (any subset of its keys) and by
    `key=value` overrides (agent.config's rules); an unknown key is a UserError."""
    defaults = TypedDefaults(JerkConfig, CONFIG_PATH.parent)
    return JerkConfig(**shared_load_config(path, overrides, defaults=defaults))


# --- pure logic -------------------------------------------------------------------------------


def best_sequence(actions: Sequence[Action], cumulative: Sequence[float]) -> list[Action]:
    """The prefix of `actions` up to and including the step where `cumulative` (the running sum
    of rewards after each step) peaks. Ties go to the EARLIEST peak: the shortest prefix that
    reaches the best cumulative reward (as the baseline). Empty input gives an empty prefix."""
    if len(actions) != len(cumulative):
        raise ValueError(f"{len(actions)} actions but {len(cumulative)} rewards")
    if not cumulative:
        return []
    peak = int(np.argmax(np.asarray(cumulative, dtype=np.float64)))  # first maximum
    return list(actions[: peak + 1])


def exploit_probability(total_steps: int, config: JerkConfig) -> float:
    """`exploit_bias + total_steps / total_timesteps`, not capped: >= 1 means always replay."""
    return config.exploit_bias + total_steps / config.total_timesteps


@dataclass
class Solution:
    """An action sequence and the returns of the episodes that played it (first: the episode
    it was found in, then one per replay)."""

    returns: list[float]
    actions: list[Action] = field(repr=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))


def choose_solution(solutions: list[Solution]) -> Solution:
    """The solution with the best mean return. Like the baseline, this sorts `solutions` in
    place (stable, ascending) and takes the last: among equal means, the last in the list."""
    solutions.sort(key=lambda s: s.mean)
    return solutions[-1]


def button_count(space: gym.Space) -> int:
    """The number of buttons of a MultiBinary action space with at least LEFT and RIGHT."""
    if (
        not isinstance(space, spaces.MultiBinary)
        or len(space.shape) != 1
        or space.shape[0] <= RIGHT
    ):
        raise ValueError(f"JERK needs MultiBinary(12) or MultiBinary(8) actions, got {space}")
    return int(space.shape[0])


def noop(n: int) -> Action:
    return np.zeros(n, dtype=np.int8)


# --- the tracker and the moves -------------------------------------------------------------------


class TrackedEnv(gym.Wrapper):
    """Records the current episode's actions and cumulative rewards, and all timesteps taken."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_history: list[Action] = []
        self.reward_history: list[float] = []  # cumulative reward after each step
        self.total_reward = 0.0
        self.total_steps_ever = 0

    def reset(self, **kwargs: Any):
        self.action_history = []
        self.reward_history = []
        self.total_reward = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Action):
        self.total_steps_ever += 1
        self.action_history.append(np.array(action, copy=True))
        obs, rew, terminated, truncated, info = self.env.step(action)
        self.total_reward += float(rew)
        self.reward_history.append(self.total_reward)
        return obs, rew, terminated, truncated, info

    def best_sequence(self) -> list[Action]:
        return best_sequence(self.action_history, self.reward_history)


def move(
    env: gym.Env, num_steps: int, rng: random.Random, config: JerkConfig, n: int, left: bool = False
) -> tuple[float, bool]:
    """Hold LEFT or RIGHT for up to `num_steps` steps, jumping now and then.

    On each step not inside a jump, a jump starts with probability `jump_prob` (one rng draw);
    a jump holds the jump button `jump_repeat` steps, the starting one included, and ends with
    this call. Returns (sum of rewards, episode done)."""
    total = 0.0
    jump_left = 0
    for _ in range(num_steps):
        action = noop(n)
        action[LEFT if left else RIGHT] = 1
        if jump_left > 0:
            action[JUMP] = 1
            jump_left -= 1
        elif rng.random() < config.jump_prob:
            action[JUMP] = 1
            jump_left = config.jump_repeat - 1
        _, rew, terminated, truncated, _ = env.step(action)
        total += float(rew)
        if terminated or truncated:
            return total, True
    return total, False


def replay(env: TrackedEnv, actions: Sequence[Action], n: int) -> float:
    """Reset, play `actions`, then no-ops once they run out, until done. Returns the episode's
    total (tracked) reward."""
    env.reset()
    t = 0
    while True:
        action = actions[t] if t < len(actions) else noop(n)
        _, _, terminated, truncated, _ = env.step(action)
        t += 1
        if terminated or truncated:
            return env.total_reward


# --- the agent -----------------------------------------------------------------------------------


class Jerk:
    """The JERK loop over one environment (remote or local), one whole episode at a time."""

    def __init__(self, env: gym.Env, config: JerkConfig, rng: random.Random) -> None:
        self.n = button_count(env.action_space)
        self.config = config
        self.rng = rng
        self.env = TrackedEnv(AllowBacktracking(env) if config.allow_backtracking else env)
        self.solutions: list[Solution] = []
        self.episodes = 0
        self.replays = 0

    @property
    def total_steps(self) -> int:
        return self.env.total_steps_ever

    def should_exploit(self) -> bool:
        """Replay? Draws from the rng only when there is a solution (as the baseline)."""
        return bool(self.solutions) and (
            self.rng.random() < exploit_probability(self.total_steps, self.config)
        )

    def explore(self) -> Solution:
        """One exploring episode; its best prefix becomes a new solution."""
        self.env.reset()
        done = False
        while not done:
            gained, done = move(self.env, self.config.right_steps, self.rng, self.config, self.n)
            if not done and gained <= 0:
                _, done = move(
                    self.env, self.config.left_steps, self.rng, self.config, self.n, left=True
                )
        solution = Solution([max(self.env.reward_history)], self.env.best_sequence())
        self.solutions.append(solution)
        return solution

    def exploit(self) -> Solution:
        """Replay the best solution; its list of returns gets this episode's total reward."""
        best = choose_solution(self.solutions)
        best.returns.append(replay(self.env, best.actions, self.n))
        return best

    def play_episode(self) -> str:
        """Play one whole episode; returns "replay" or "explore"."""
        if self.should_exploit():
            self.exploit()
            kind = "replay"
            self.replays += 1
        else:
            self.explore()
            kind = "explore"
        self.episodes += 1
        return kind

    def run(self, episodes: int | None = None, log: bool = False) -> None:
        """Play `episodes` episodes, or until the connection ends (BudgetExhausted...)."""
        while episodes is None or self.episodes < episodes:
            kind = self.play_episode()
            if log:
                best = max(self.solutions, key=lambda s: s.mean)
                print(
                    f"jerk: episode {self.episodes} {kind} return {self.env.total_reward:.1f} "
                    f"steps {self.total_steps} solutions {len(self.solutions)} "
                    f"best mean {best.mean:.1f}",
                    flush=True,
                )


def play(env: gym.Env, config: JerkConfig, seed: int, log: bool = True) -> int:
    """Run JERK on `env` until the server ends the run; the process exit code."""
    jerk = Jerk(env, config, random.Random(seed))
    return play_until_budget(
        "jerk",
        lambda: jerk.run(log=log),
        summary=lambda: (
            f"after {jerk.total_steps} steps, {jerk.episodes} episodes "
            f"({jerk.replays} replays, {len(jerk.solutions)} solutions)"
        ),
    )


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.jerk", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML file with the keys to change from JerkConfig's (the "
        f"baseline's); e.g. {CONFIG_PATH.name}, which changes none",
    )
    add_set_option(parser, help="override one setting, e.g. --set left_steps=50")
    parser.add_argument("--quiet", action="store_true", help="no line per episode")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    seed = agent_seed(None)
    if seed is None:
        seed = time.time_ns() % 2**32
    print(f"jerk agent: seed {seed}, {config}", flush=True)
    env = make_env(copy_obs=False)  # JERK never looks at the observation
    try:
        return play(env, config, seed, log=not args.quiet)
    finally:
        env.close()


if __name__ == "__main__":
    raise SystemExit(main())
