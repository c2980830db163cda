"""A level's environment exactly as the 2018 contest made it.

`stable_retro.make(game, state, scenario='contest', use_restricted_actions=FILTERED)`, no
rendering window, the stochastic frame skip (4 frames, stick probability 0.25, the first step
after a reset never sticks) and the 4500-step episode limit.

Games without a `contest.json` scenario (Airstriker, the Atari 2600 games) keep their default
`scenario.json`: the reward is the change in the game's score and done is the game's own
game-over condition. Only the Sonic games have the contest's horizontal-progress reward.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import stable_retro
from gymnasium.wrappers import TimeLimit

from evaluation.contest.rules import EPISODE_STEPS, FRAMES_PER_STEP, STICK_PROB
from roms_setup.installed import ALL_INTEGRATIONS, has_file, require_playable
from roms_setup.levels import Level, is_contest_game
from sonic_common.errors import UserError


class StochasticFrameSkip(gym.Wrapper):
    """Repeat each action for `n` frames, summing rewards; the previous action may stick.

    At the first frame of a step the previous action is kept with probability `stickprob`
    (the new one applies from the second frame on); on the first step after a reset the new
    action applies at once. This follows retro-baselines' `StochasticFrameSkip`, drawing
    from a seedable generator (`seed` here, or `reset(seed=...)`).

    On a stable-retro environment the frames whose picture is dropped skip the screen copy,
    which keeps the contest environment as fast as stepping the emulator itself.
    """

    def __init__(
        self,
        env: gym.Env,
        n: int = FRAMES_PER_STEP,
        stickprob: float = STICK_PROB,
        seed: int | None = None,
    ) -> None:
        super().__init__(env)
        self.n = n
        self.stickprob = stickprob
        self.rng = np.random.default_rng(seed)
        self.curac: object | None = None
        self.frames_emulated = 0  # emulator frames run since construction
        retro = env.unwrapped
        self._retro = retro if isinstance(retro, stable_retro.RetroEnv) else None
        self._masks: dict[bytes, list[np.ndarray]] = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.curac = None
        return self.env.reset(seed=seed, options=options)

    def _frame_without_picture(self, ac: object) -> tuple[float, bool, dict]:
        """RetroEnv.step minus the screen copy: buttons, emulate, read RAM, reward/done."""
        retro = self._retro
        assert retro is not None  # only called for a RetroEnv
        key = np.asarray(ac).tobytes()
        masks = self._masks.get(key)
        if masks is None:
            masks = self._masks[key] = retro.action_to_array(ac)
        for p, mask in enumerate(masks):
            if retro.movie:
                for i in range(retro.num_buttons):
                    retro.movie.set_key(i, mask[i], p)
            retro.em.set_button_mask(mask, p)
        if retro.movie:
            retro.movie.step()
        retro.em.step()
        retro.data.update_ram()
        rew, done, info = retro.compute_step()
        return float(rew), bool(done), dict(info)

    def step(self, ac):
        total = 0.0
        terminated = truncated = False
        ob = None
        info: dict = {}
        for i in range(self.n):
            if self.curac is None:
                self.curac = ac  # first step after reset: the new action applies at once
            elif i == 0:
                if self.rng.random() > self.stickprob:
                    self.curac = ac
            elif i == 1:
                self.curac = ac
            if self._retro is not None and i < self.n - 1:
                rew, terminated, info = self._frame_without_picture(self.curac)
            else:
                ob, rew, terminated, truncated, info = self.env.step(self.curac)
            total += rew
            self.frames_emulated += 1
            if terminated or truncated:
                break
        if ob is None:  # the episode ended on a frame whose picture was skipped
            ob = self._retro._update_obs()
        return ob, total, terminated, truncated, info


def contest_scenario(game: str) -> str | None:
    """'contest' where the game ships a contest scenario, else None (the game's default). A
    contest game without one is an error: its default scenario's reward is the score and its
    episode ends at game over, not at a life lost, so its runs would not be the contest's."""
    if has_file(game, "contest.json"):
        return "contest"
    if is_contest_game(game):
        raise UserError(
            f"{game} has no contest.json in stable-retro's data, so its levels would not play "
            "by the contest's rules: reinstall stable-retro (`bash scripts/setup.sh`)"
        )
    return None


def make_retro_env(level: Level | str, record_dir: str | None = None) -> stable_retro.RetroEnv:
    """The bare emulator of a level with the contest's scenario and filtered actions."""
    level = Level.parse(level) if isinstance(level, str) else level
    require_playable(level)
    return stable_retro.make(
        level.game,
        state=level.state,
        scenario=contest_scenario(level.game),
        use_restricted_actions=stable_retro.Actions.FILTERED,
        inttype=ALL_INTEGRATIONS,
        render_mode=None,  # stable-retro's default, "human", opens a window every step
        record=record_dir if record_dir else False,
    )


def make_contest_env(
    level: Level | str,
    seed: int | None = None,
    record_dir: str | None = None,
    max_episode_steps: int = EPISODE_STEPS,
) -> gym.Env:
    """A level's environment with the contest's rules. One per process (stable-retro's rule)."""
    env = make_retro_env(level, record_dir=record_dir)
    env = StochasticFrameSkip(env, n=FRAMES_PER_STEP, stickprob=STICK_PROB, seed=seed)
    return TimeLimit(env, max_episode_steps=max_episode_steps)
