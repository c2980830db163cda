"""`python -m agent.maml`: MAML fast adaptation on the remote level, then PPO (or just acting).

    python -m agent.maml [--checkpoint FILE] [--config FILE] [--set key=value ...]
                         [--adapt-steps N] [--trajectories K] [--horizon H] [--inner-lr A]

The checkpoint (`--checkpoint`, else $AGENT_CHECKPOINT, which agent images built with
`python -m evaluation build --agent maml --checkpoint FILE` set) is one that `python -m meta_train`
wrote: a policy checkpoint (agent/checkpoint.py) with the extra keys

    adaptation   {adapt_steps, trajectories, horizon, inner_lr, gamma, gae_lambda,
                  baseline_ridge, discretizer, backtracking, reward_scale}
    step_sizes   {learned, value, per_parameter: {name: tensor}}   (optional; Meta-SGD's α)
    maml_format  "maml/1"                                          (optional)

It is read and checked before connecting; one without `adaptation` is a one-line error (exit 2).

1. Connect (agent.connection) and put the agent-side wrappers in front of the level with the
   checkpoint's discretizer, backtracking and reward scale: the agent sees the level as
   meta-training saw its levels.
2. Adaptation: N = adapt_steps inner steps. Each collects K = trajectories trajectories of
   H = horizon steps, one after the other on the one connection, sampling actions from the
   current adapted parameters θ_i (no gradient), then takes the inner step of meta-training
   (agent.learners.adaptation, on normalized GAE advantages of the linear feature baseline,
   agent.learners.linear_baseline, with the checkpoint's γ, λ and ridge, and the episode ends
   marked):

       θ_{i+1} = θ_i − α ⊙ ∇ −mean(log π_θ_i(a|s) · Â)

   α is the checkpoint's learned per-parameter step sizes when it has them, else its step size;
   `inner_lr` (config or --inner-lr) replaces either with one number. The gradient is summed
   over chunks of at most `grad_chunk` frames (same step up to rounding, bounded memory).
   Rewards are the wrapped, scaled ones meta-training learned from.
   Where a trajectory starts: meta-training starts every trajectory at the level start, but the
   contest forbids a reset before the episode is done (ResetError). So a trajectory starts with
   a reset only when the last episode ended; otherwise it goes on with the running episode. An
   episode that ends within a trajectory is reset and the trajectory goes on (a `done` marks
   it, so no return or advantage crosses it).
   Progress: one line per inner step on stdout and one row in $AGENT_OUTPUT_DIR/adaptation.csv
   (`step`, `mean_return`: the mean over the K trajectories of their summed contest reward,
   unscaled and without backtracking; `steps`: timesteps used so far, resets included, as the
   server counts them; `param_change`: ‖θ_{i+1} − θ_i‖₂; `seconds`: this step's wall time).
3. After adaptation (`after_adaptation` in agent/configs/maml.yaml): the adapted θ goes into the
   network (the value head, which MAML does not train, keeps its weights) and then
   `ppo`: PPO (agent/learners/ppo.py) keeps learning from there, as agent.ppo2 does, with the
   PPO keys of maml.yaml (learning.csv as ppo2); or `act`: the adapted policy keeps acting
   (sampling), with no learning, until the budget ends.

The run ends when the server says the budget is spent, in any phase: the agent then saves the
network to $AGENT_OUTPUT_DIR/checkpoint.pt (when that is set; during adaptation: the θ adapted
so far), prints one line naming the phase, and exits 0. A closed connection exits 1. The same
file is also written when adaptation ends and every `save_interval` PPO updates. It is a plain
policy checkpoint (`agent.ppo2 --init` can fine-tune it) whose `timesteps` are the server's
(resets included), with the extra keys `adapted_from` (the MAML checkpoint's path) and
`adapt_steps_done`.

Runs in the small agent image: imports torch, numpy, gymnasium, opencv and pyyaml, never
stable-retro or meta_train.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import RecordEpisodeStatistics
from torch import Tensor
from torch.func import functional_call

from agent.checkpoint import CHECKPOINT_NAME, load_checkpoint, policy_for_spaces, save_checkpoint
from agent.config import load_config
from agent.configs import MAML
from agent.connection import make_env, output_dir
from agent.learners.adaptation import (
    AdvantageBatch,
    Params,
    Trajectories,
    detached_step,
    policy_parameters,
)
from agent.learners.ppo import PPO, PPOConfig, learn
from agent.policies import ActorCritic
from agent.runtime import (
    CHECKPOINT_ENV,
    agent_parser,
    checkpoint_path,
    make_single_vec_env,
    play_until_budget,
    start,
)
from agent.train_log import TrainLogger
from agent.wrappers import WrapperConfig, wrap_agent_env
from sonic_common.devices import torch_threads_at_most
from sonic_common.errors import UserError, exit_on_user_error

ADAPTATION_CSV = "adaptation.csv"
ADAPTATION_FIELDS = ("step", "mean_return", "steps", "param_change", "seconds")
MAML_FORMATS = ("maml/1",)
# the checkpoint's `adaptation` keys this agent reads (meta_train.loop.adaptation_settings)
ADAPTATION_KEYS = (
    "adapt_steps",
    "trajectories",
    "horizon",
    "inner_lr",
    "gamma",
    "gae_lambda",
    "baseline_ridge",
    "discretizer",
    "backtracking",
    "reward_scale",
)
AFTER_ADAPTATION = ("ppo", "act")
COLLECT_THREADS = 1  # torch threads for batch-1 inference while stepping (as agent/learners/ppo.py)


# --- the checkpoint and the settings ----------------------------------------------------------


def read_maml_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; a one-line UserError unless it carries MAML adaptation settings."""
    data = load_checkpoint(path)
    fix = (
        "give a checkpoint written by `python -m meta_train`, or fine-tune this one with "
        f"`python -m agent.ppo2 --init {path}`"
    )
    adaptation = data.get("adaptation")
    if not isinstance(adaptation, dict):
        raise UserError(f"{path} has no MAML adaptation settings (no `adaptation` key): {fix}")
    missing = [k for k in ADAPTATION_KEYS if k not in adaptation]
    if missing:
        raise UserError(f"{path}: the `adaptation` settings lack {', '.join(missing)}: {fix}")
    fmt = data.get("maml_format")
    if fmt is not None and fmt not in MAML_FORMATS:
        raise UserError(
            f"{path} has MAML format {fmt!r}, this agent reads "
            f"{', '.join(MAML_FORMATS)}: use the agent of the meta_train that wrote it"
        )
    return data


@dataclass
class AdaptationConfig:
    """What one adaptation needs: the checkpoint's settings with the config's overrides."""

    adapt_steps: int
    trajectories: int
    horizon: int
    gamma: float
    gae_lambda: float
    ridge: float
    lr: float
    step_sizes: dict[str, Tensor] | None  # per-parameter α (Meta-SGD), else None: lr for all
    grad_chunk: int = 2048

    @classmethod
    def from_checkpoint(
        cls, data: dict[str, Any], cfg: dict[str, Any], device: torch.device | str = "cpu"
    ) -> AdaptationConfig:
        a = data["adaptation"]

        def pick(key: str) -> Any:
            return a[key] if cfg.get(key) is None else cfg[key]

        step_sizes: dict[str, Tensor] | None = None
        if cfg.get("inner_lr") is not None:
            lr = float(cfg["inner_lr"])
        else:
            sizes = data.get("step_sizes") or {}
            lr = float(sizes.get("value", a["inner_lr"]))
            per_parameter = sizes.get("per_parameter") or {}
            if sizes.get("learned") and per_parameter:
                step_sizes = {n: t.to(device) for n, t in per_parameter.items()}
        out = cls(
            adapt_steps=int(pick("adapt_steps")),
            trajectories=int(pick("trajectories")),
            horizon=int(pick("horizon")),
            gamma=float(a["gamma"]),
            gae_lambda=float(a["gae_lambda"]),
            ridge=float(a["baseline_ridge"]),
            lr=lr,
            step_sizes=step_sizes,
            grad_chunk=int(cfg.get("grad_chunk") or 0),
        )
        if out.adapt_steps < 0:
            raise UserError(f"adapt_steps must be ≥ 0, got {out.adapt_steps}")
        for key in ("trajectories", "horizon"):
            if getattr(out, key) < 1:
                raise UserError(f"{key} must be ≥ 1, got {getattr(out, key)}")
        if not math.isfinite(out.lr):
            raise UserError(f"inner_lr must be a finite number, got {out.lr}")
        return out


# --- the environment --------------------------------------------------------------------------


class ContestCounter(gym.Wrapper):
    """Innermost wrapper: counts the requests the server serves (resets and steps: the budget's
    timesteps) and keeps the contest's own reward of the last step (before backtracking and
    scaling)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.timesteps = 0
        self.last_reward = 0.0

    def reset(self, **kwargs: Any):
        out = self.env.reset(**kwargs)
        self.timesteps += 1
        self.last_reward = 0.0
        return out

    def step(self, action: Any):
        out = self.env.step(action)
        self.timesteps += 1
        self.last_reward = float(out[1])
        return out


class ResumeEpisode(gym.Wrapper):
    """Outermost wrapper: `reset()` starts a new episode only when the last one ended; while an
    episode runs it returns the current observation and sends nothing (the contest server
    answers a reset before the episode is done with ResetError). So any phase may begin with a
    reset, PPO's included."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.done = True
        self._obs: Any = None

    def reset(self, **kwargs: Any):
        if not self.done:
            return np.array(self._obs, copy=True), {}
        obs, info = self.env.reset(**kwargs)
        self.done = False
        self._obs = obs
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.done = bool(terminated or truncated)
        self._obs = obs
        return obs, reward, terminated, truncated, info


def agent_env(env: gym.Env, adaptation: dict[str, Any]) -> tuple[gym.Env, ContestCounter]:
    """The agent's view of a contest environment, wrapped as the checkpoint's meta-training
    wrapped its levels, and the counter at the bottom of it."""
    counter = ContestCounter(env)
    wrapped = wrap_agent_env(RecordEpisodeStatistics(counter), WrapperConfig.from_dict(adaptation))
    return ResumeEpisode(wrapped), counter


# --- adaptation -------------------------------------------------------------------------------


def sample_action(
    policy: ActorCritic, params: Params, obs: np.ndarray, device: torch.device
) -> int:
    with torch.no_grad():
        dist_params, _ = functional_call(policy, params, (torch.from_numpy(obs[None]).to(device),))
        return int(policy.distribution(dist_params).sample()[0])


def collect(
    env: gym.Env,
    counter: ContestCounter,
    policy: ActorCritic,
    params: Params,
    count: int,
    horizon: int,
    device: torch.device,
) -> Trajectories:
    """`count` trajectories of `horizon` steps, one after the other on `env` (see the module
    docstring for where each starts), actions sampled from the policy at `params`."""
    shape = env.observation_space.shape
    if shape is None:
        raise ValueError(f"the MAML agent needs array observations, got {env.observation_space}")
    obs_buf = np.zeros((horizon, count, *shape), dtype=np.uint8)
    act_buf = np.zeros((horizon, count), dtype=np.int64)
    rew_buf = np.zeros((horizon, count), dtype=np.float32)
    done_buf = np.zeros((horizon, count), dtype=bool)
    returns = np.zeros(count, dtype=np.float64)
    with torch_threads_at_most(COLLECT_THREADS, device):
        for k in range(count):
            obs, _ = env.reset()
            for t in range(horizon):
                obs_buf[t, k] = obs
                action = sample_action(policy, params, obs_buf[t, k], device)
                act_buf[t, k] = action
                obs, reward, terminated, truncated, _ = env.step(action)
                rew_buf[t, k] = reward
                returns[k] += counter.last_reward
                if terminated or truncated:
                    done_buf[t, k] = True
                    if t + 1 < horizon:
                        obs, _ = env.reset()
    return Trajectories(obs_buf, act_buf, rew_buf, done_buf, returns)


def inner_update(
    policy: ActorCritic, params: Params, traj: Trajectories, settings: AdaptationConfig
) -> Params:
    """θ' from θ = `params` on the trajectories: agent.learners.adaptation's inner step
    (detached)."""
    data = AdvantageBatch.from_trajectories(
        traj, settings.gamma, settings.gae_lambda, settings.ridge
    )
    return detached_step(
        policy, params, data, settings.step_sizes, settings.lr, settings.grad_chunk
    )


def adaptation_step(
    env: gym.Env,
    counter: ContestCounter,
    policy: ActorCritic,
    params: Params,
    settings: AdaptationConfig,
    device: torch.device,
) -> tuple[Params, Trajectories]:
    """One inner step: collect K trajectories with θ_i, return θ_{i+1} and the data."""
    traj = collect(env, counter, policy, params, settings.trajectories, settings.horizon, device)
    return inner_update(policy, params, traj, settings), traj


def param_distance(a: Params, b: Params) -> float:
    return math.sqrt(sum(float((a[n] - b[n]).double().pow(2).sum()) for n in a))


class Adapter:
    """Runs the adaptation phase; `params` and `done_steps` stay readable when the budget ends
    midway."""

    def __init__(
        self,
        env: gym.Env,
        counter: ContestCounter,
        policy: ActorCritic,
        settings: AdaptationConfig,
        device: torch.device,
        out: Path | None,
    ) -> None:
        self.env, self.counter, self.policy = env, counter, policy
        self.settings, self.device = settings, device
        self.params: Params = {n: p.detach().clone() for n, p in policy_parameters(policy).items()}
        self.done_steps = 0
        self.csv_path = out / ADAPTATION_CSV if out is not None else None

    def _write_row(self, row: dict[str, Any], header: bool) -> None:
        if self.csv_path is None:
            return
        with open(self.csv_path, "w" if header else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=ADAPTATION_FIELDS)
            if header:
                writer.writeheader()
            else:
                writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def run(self) -> Params:
        s = self.settings
        self._write_row({}, header=True)
        for i in range(s.adapt_steps):
            t0 = time.monotonic()
            new, traj = adaptation_step(
                self.env, self.counter, self.policy, self.params, s, self.device
            )
            change = param_distance(new, self.params)
            self.params = new
            self.done_steps = i + 1
            seconds = time.monotonic() - t0
            assert traj.contest_returns is not None  # collect records them
            mean_return = float(traj.contest_returns.mean())
            self._write_row(
                {
                    "step": i + 1,
                    "mean_return": f"{mean_return:.6g}",
                    "steps": self.counter.timesteps,
                    "param_change": f"{change:.6g}",
                    "seconds": f"{seconds:.3f}",
                },
                header=False,
            )
            print(
                f"maml agent: inner step {i + 1}/{s.adapt_steps}: mean return "
                f"{mean_return:.1f} over {s.trajectories}×{s.horizon} steps, "
                f"|Δθ| {change:.4g}, {self.counter.timesteps} timesteps used, {seconds:.1f} s",
                flush=True,
            )
        return self.params


def load_params(policy: ActorCritic, params: Params) -> None:
    """Copy θ into the network's parameters of the same names (the rest, `vf.*`, stay)."""
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if name in params:
                p.copy_(params[name])


def act_forever(env: gym.Env, policy: ActorCritic, device: torch.device) -> None:
    """Sample actions from the policy until an exception (the budget) ends it."""
    policy.eval()
    # device None: at most COLLECT_THREADS whatever the device (collect's limit: on a CPU only)
    with torch_threads_at_most(COLLECT_THREADS, None):
        obs, _ = env.reset()
        while True:
            with torch.no_grad():
                action, _, _ = policy.act(torch.from_numpy(obs[None]).to(device))
            obs, _, terminated, truncated, _ = env.step(int(action[0]))
            if terminated or truncated:
                obs, _ = env.reset()


# --- the command ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = agent_parser(
        "maml", __doc__, "maml.yaml", checkpoint_help="MAML checkpoint from meta_train"
    )
    parser.add_argument("--adapt-steps", type=int, help="inner steps N (config adapt_steps)")
    parser.add_argument(
        "--trajectories", type=int, help="trajectories K per inner step (config trajectories)"
    )
    parser.add_argument("--horizon", type=int, help="steps H per trajectory (config horizon)")
    parser.add_argument("--inner-lr", type=float, help="inner step size α (config inner_lr)")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(args.overrides)
    for key in ("adapt_steps", "trajectories", "horizon", "inner_lr"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{key}={value}")
    # the adaptation's keys, PPO's (PPOConfig: the contest baseline's, as agent.ppo2), the run's
    cfg = load_config(args.config, overrides, defaults=MAML)
    if cfg["after_adaptation"] not in AFTER_ADAPTATION:
        raise UserError(
            f"after_adaptation must be {' or '.join(AFTER_ADAPTATION)}, "
            f"not {cfg['after_adaptation']!r}"
        )
    return cfg


class MamlRun:
    """One run of the agent on the contest connection: adaptation, then `after_adaptation`.
    `phase` says where it is when the budget ends; `save` writes the network as it is then."""

    def __init__(
        self,
        cfg: dict[str, Any],
        ckpt_path: str,
        data: dict[str, Any],
        settings: AdaptationConfig,
        device: torch.device,
    ) -> None:
        self.cfg, self.ckpt_path, self.settings, self.device = cfg, ckpt_path, settings, device
        self.env, self.counter = agent_env(make_env(copy_obs=False), data["adaptation"])
        try:
            self.policy = policy_for_spaces(
                data, {}, self.env.observation_space, self.env.action_space, str(ckpt_path)
            ).to(device)
        except UserError:
            self.env.close()
            raise
        self.out = output_dir()
        self.mode = str(cfg["after_adaptation"])
        self.ppo: PPO | None = None
        self.logger: TrainLogger | None = None
        self.phase = "adaptation"
        self.adapter = Adapter(self.env, self.counter, self.policy, settings, device, self.out)

    def save(self) -> Path | None:
        if self.out is None:
            return None
        if self.phase == "adaptation":
            load_params(self.policy, self.adapter.params)
        ppo = self.ppo
        return save_checkpoint(
            self.out / CHECKPOINT_NAME,
            self.policy,
            config=self.cfg,
            optimizer=ppo.optimizer if ppo is not None else None,
            timesteps=self.counter.timesteps,
            updates=ppo.updates if ppo is not None else 0,
            episodes=ppo.episodes if ppo is not None else 0,
            extra={
                "adapted_from": str(self.ckpt_path),
                "adapt_steps_done": self.adapter.done_steps,
            },
        )

    def play(self, seed: int) -> None:
        """Adapt, save, then act or learn with PPO until an exception (the budget) ends it."""
        s = self.settings
        alpha = "learned per-parameter α" if s.step_sizes is not None else f"α={s.lr:g}"
        print(
            f"maml agent: adapting {self.ckpt_path} on {self.device}: {s.adapt_steps} inner "
            f"steps of {s.trajectories}×{s.horizon} steps, {alpha}; then {self.mode}",
            flush=True,
        )
        load_params(self.policy, self.adapter.run())
        self.phase = self.mode
        self.save()
        if self.mode == "act":
            act_forever(self.env, self.policy, self.device)
            return
        cfg = self.cfg
        self.ppo = PPO(self.policy, PPOConfig.from_dict(cfg), self.device)
        self.logger = TrainLogger(
            self.out, tensorboard=bool(cfg["tensorboard"]), progress_bar=False, config=cfg
        )
        save_interval = max(1, int(cfg["save_interval"]))

        def on_update(p: PPO) -> None:
            if p.updates % save_interval == 0:
                self.save()

        envs = make_single_vec_env(lambda: self.env)
        learn(
            self.ppo,
            envs,
            total_timesteps=None,
            logger=self.logger,
            log_interval=int(cfg["log_interval"]),
            on_update=on_update,
            seed=seed,
        )

    def where(self) -> str:
        return {
            "adaptation": f"during adaptation ({self.adapter.done_steps} of "
            f"{self.settings.adapt_steps} inner steps done)",
            "ppo": f"during PPO after adaptation ({self.ppo.updates if self.ppo else 0} updates)",
            "act": "while acting with the adapted policy",
        }[self.phase]

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
        self.env.close()


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = make_config(args)
    ckpt_path = checkpoint_path(args.init)
    if not ckpt_path:
        raise UserError(f"no MAML checkpoint: give --checkpoint FILE or set ${CHECKPOINT_ENV}")
    data = read_maml_checkpoint(ckpt_path)  # fail before connecting
    PPOConfig.from_dict(cfg)  # the settings of its PPO phase, checked before connecting
    seed, device = start(cfg)
    run = MamlRun(cfg, ckpt_path, data, AdaptationConfig.from_checkpoint(data, cfg, device), device)
    return play_until_budget(
        "maml",
        lambda: run.play(seed),
        summary=lambda: f"{run.where()} after {run.counter.timesteps} timesteps",
        save=run.save,
        phase=lambda: run.phase,
        close=run.close,
    )


if __name__ == "__main__":
    raise SystemExit(main())
