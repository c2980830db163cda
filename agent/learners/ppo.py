"""PPO as openai/baselines' PPO2 did it, written to be read top to bottom (like CleanRL).

    collect nsteps × nenvs transitions with the current policy (observations stored as uint8)
    GAE(γ, λ) advantages, bootstrapping truncated episodes (agent/learners/rollout.py)
    for each of noptepochs epochs, for each of nminibatches shuffled minibatches:
        normalize the minibatch's advantages
        loss = clipped surrogate − ent_coef · entropy + vf_coef · clipped value loss
        Adam step (eps 1e-5) after clipping the gradient norm to max_grad_norm

`PPO` holds the network and optimizer and does updates; `RolloutCollector` steps a Gymnasium
vector environment (autoreset mode SAME_STEP); `learn` ties both to logging and checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from agent.learners.rollout import Batch, RolloutBuffer
from agent.policies import ActorCritic
from agent.train_log import EpisodeTracker, TrainLogger
from sonic_common.devices import torch_threads_at_most
from sonic_common.errors import UserError

ConfigT = TypeVar("ConfigT")  # a learner's hyperparameters (PPOConfig, RainbowConfig)


@dataclass
class PPOConfig:
    """The learner's hyperparameters, the one source of their defaults: the 2018 Retro Contest
    baseline's (openai/retro-baselines `ppo2_agent.py` on openai/baselines PPO2; the YAML
    configs in agent/configs/ list only changes)."""

    # --- rollouts
    nsteps: int = 4096  # steps per environment per rollout: one update sees nsteps × workers
    # --- optimization
    nminibatches: int = 8  # minibatches per epoch: 4096 × 1 / 8 = 512 samples each
    noptepochs: int = 3  # passes over each rollout
    lr: float = 2e-4  # Adam learning rate
    lr_schedule: str = "constant"  # constant (the baseline), linear (to 0 over schedule_timesteps)
    # length of a linear schedule: the contest budget per level; `agent.train` uses its
    # --timesteps instead
    schedule_timesteps: int = 1_000_000
    adam_eps: float = 1e-5  # Adam epsilon, as baselines PPO2
    max_grad_norm: float | None = 0.5  # clip the global gradient norm to this (None: no clipping)
    # --- PPO objective
    cliprange: float = 0.1  # ε of the clipped surrogate min(r·A, clip(r, 1−ε, 1+ε)·A)
    # baselines' clipped value loss 0.5·max((v−R)², (v_old+clip(v−v_old, ±ε)−R)²)
    clip_value: bool = True
    ent_coef: float = 0.01  # weight of the entropy bonus
    vf_coef: float = 0.5  # weight of the value loss
    normalize_advantages: bool = True  # (A − mean) / (std + 1e-8) per minibatch, as baselines
    # --- returns
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE λ

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> PPOConfig:
        """Take the PPO keys of a config dict (others, like wrapper settings, are ignored)."""
        kwargs = {f.name: cfg[f.name] for f in fields(cls) if f.name in cfg}
        out = cls(**kwargs)
        for name in ("nsteps", "nminibatches", "noptepochs", "schedule_timesteps"):
            setattr(out, name, int(getattr(out, name)))
        for name in ("lr", "adam_eps", "cliprange", "ent_coef", "vf_coef", "gamma", "gae_lambda"):
            setattr(out, name, float(getattr(out, name)))
        if out.lr_schedule not in ("constant", "linear"):
            raise UserError(f"lr_schedule must be constant or linear, not {out.lr_schedule!r}")
        small = [f"{n}={getattr(out, n)}" for n in ("nsteps", "nminibatches", "noptepochs")]
        if min(out.nsteps, out.nminibatches, out.noptepochs) < 1:
            raise UserError(f"{', '.join(small)}: each must be at least 1")
        return out


def clipped_surrogate(ratio: Tensor, advantages: Tensor, clip: float | None) -> Tensor:
    """The per-sample surrogate objective (to maximize) of every policy-gradient loss here:
    r·A, or with `clip` = ε PPO's min(r·A, clip(r, 1−ε, 1+ε)·A). `ppo_loss` takes its mean;
    the meta-objectives (meta_train.meta_learner, meta_train.stacked, meta_train.chunked)
    their mean or chunk sums."""
    objective = ratio * advantages
    if clip is not None:
        objective = torch.min(objective, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)
    return objective


def ppo_loss(
    new_logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    new_values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    entropy: Tensor,
    cliprange: float,
    vf_coef: float,
    ent_coef: float,
    clip_value: bool = True,
) -> dict[str, Tensor]:
    """baselines PPO2's loss on one minibatch (advantages already normalized if wanted).

    pg_loss = −mean(min(A·r, A·clip(r, 1−ε, 1+ε))),  r = exp(logπ − logπ_old)
    vf_loss = 0.5 · mean(max((v − R)², (v_old + clip(v − v_old, −ε, ε) − R)²))
    loss    = pg_loss − ent_coef · mean(entropy) + vf_coef · vf_loss
    """
    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    pg_loss = -clipped_surrogate(ratio, advantages, cliprange).mean()
    vf_losses = (new_values - returns).pow(2)
    if clip_value:
        clipped = old_values + (new_values - old_values).clamp(-cliprange, cliprange)
        vf_losses = torch.max(vf_losses, (clipped - returns).pow(2))
    vf_loss = 0.5 * vf_losses.mean()
    ent = entropy.mean()
    loss = pg_loss - ent_coef * ent + vf_coef * vf_loss
    with torch.no_grad():
        approx_kl = 0.5 * log_ratio.pow(2).mean()  # baselines' approxkl
        clipfrac = ((ratio - 1.0).abs() > cliprange).float().mean()
    return {
        "loss": loss,
        "pg_loss": pg_loss,
        "vf_loss": vf_loss,
        "entropy": ent,
        "approx_kl": approx_kl,
        "clipfrac": clipfrac,
    }


def make_adam(policy: nn.Module, lr: float, eps: float) -> torch.optim.Adam:
    """Adam; the fused kernel where this torch has it for the device (same update rule)."""
    try:
        return torch.optim.Adam(policy.parameters(), lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(policy.parameters(), lr=lr, eps=eps)


def explained_variance(pred: Tensor, target: Tensor) -> float:
    var = target.var()
    return math.nan if var.item() == 0 else float(1.0 - (target - pred).var() / var)


class Learner(Generic[ConfigT]):
    """What PPO and Rainbow hold besides their networks and optimizers: the config, the device,
    and the counters a resume needs (checkpoints save them, agent.runtime.learn_until_budget
    reports them)."""

    def __init__(self, config: ConfigT, device: torch.device | str) -> None:
        self.config = config
        self.device = torch.device(device)
        self.timesteps = 0  # environment steps
        self.updates = 0
        self.episodes = 0  # finished episodes


class PPO(Learner[PPOConfig]):
    """The network, its Adam optimizer and the counters a resume needs."""

    def __init__(
        self, policy: ActorCritic, config: PPOConfig, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__(config, device)
        self.policy = policy.to(self.device)
        use_channels_last = getattr(self.policy.body, "use_channels_last", None)
        if use_channels_last is not None:
            use_channels_last(True)
        self.optimizer = make_adam(self.policy, config.lr, config.adam_eps)

    def current_lr(self, total_timesteps: int | None = None) -> float:
        cfg = self.config
        if cfg.lr_schedule == "constant":
            return cfg.lr
        horizon = total_timesteps or cfg.schedule_timesteps
        return cfg.lr * max(0.0, 1.0 - self.timesteps / max(1, horizon))

    def update(
        self, batch: Batch, lr: float | None = None, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """noptepochs passes of nminibatches shuffled minibatches; mean statistics."""
        cfg = self.config
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        n = len(batch)
        mb_size = n // cfg.nminibatches
        if mb_size < 1:
            raise ValueError(f"{n} samples cannot make {cfg.nminibatches} minibatches")
        sums: dict[str, float] = {}
        count = 0
        self.policy.train()
        for _ in range(cfg.noptepochs):
            perm = torch.randperm(n, generator=generator).to(self.device)
            for start in range(0, mb_size * cfg.nminibatches, mb_size):
                mb = batch.index(perm[start : start + mb_size])
                stats = self._minibatch_step(mb)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
        self.updates += 1
        out = {k: v / count for k, v in sums.items()}
        out["explained_var"] = explained_variance(batch.values, batch.returns)
        out["lr"] = self.optimizer.param_groups[0]["lr"]
        return out

    def _minibatch_step(self, mb: Batch) -> dict[str, float]:
        cfg = self.config
        dist_params, values = self.policy(mb.obs)
        dist = self.policy.distribution(dist_params)
        advantages = mb.advantages
        if cfg.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        terms = ppo_loss(
            dist.log_prob(mb.actions),
            mb.logprobs,
            advantages,
            values,
            mb.values,
            mb.returns,
            dist.entropy(),
            cfg.cliprange,
            cfg.vf_coef,
            cfg.ent_coef,
            cfg.clip_value,
        )
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}


def finished_episodes(infos: dict[str, Any]) -> list[tuple[float, int]]:
    """(return, length) of the episodes that ended in this vector step.

    Expects gymnasium's RecordEpisodeStatistics inside each environment and autoreset mode
    SAME_STEP, where a finished episode's info is under infos["final_info"].
    """
    final = infos.get("final_info")
    if not final:
        return []
    episode = final.get("episode")
    if episode is None:
        return []
    mask = final.get("_episode", np.ones(len(episode["r"]), dtype=bool))
    return [(float(episode["r"][i]), int(episode["l"][i])) for i in np.flatnonzero(mask)]


class RolloutCollector:
    """Steps a vector environment with the policy and fills a RolloutBuffer."""

    def __init__(self, envs: Any, ppo: PPO, rollout_threads: int = 1) -> None:
        self.envs = envs
        self.ppo = ppo
        # torch threads while stepping: inference on nenvs observations gains nothing from
        # more, and extra OpenMP threads fight the environment workers for the cores
        # (measured on 2 cores: batch-2 Nature CNN 1.1 ms with 1 thread, 4.5 ms with 2)
        self.rollout_threads = rollout_threads
        self.nenvs = int(envs.num_envs)
        obs_space = envs.single_observation_space
        act_space = envs.single_action_space
        obs_dtype = torch.from_numpy(np.zeros(0, dtype=obs_space.dtype)).dtype
        is_discrete = ppo.policy.action_type == "discrete"
        self.buffer = RolloutBuffer(
            ppo.config.nsteps,
            self.nenvs,
            obs_space.shape,
            obs_dtype,
            () if is_discrete else act_space.shape,
            torch.long if is_discrete else torch.float32,
        )
        self.tracker = EpisodeTracker()
        self.next_obs: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self.envs.reset(seed=seed)
        self.next_obs = obs
        return obs

    def _obs_tensor(self, obs: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(obs)).to(self.ppo.device, non_blocking=True)

    def collect(self) -> Batch:
        """One rollout of nsteps × nenvs transitions, with advantages and returns."""
        with torch_threads_at_most(self.rollout_threads, self.ppo.device):
            return self._collect()

    @torch.no_grad()
    def _collect(self) -> Batch:
        obs = self.next_obs if self.next_obs is not None else self.reset()
        policy, buf, device = self.ppo.policy, self.buffer, self.ppo.device
        policy.eval()
        while not buf.full:
            action, logprob, value = policy.act(self._obs_tensor(obs))
            action_cpu = action.cpu()
            # copy the observation before stepping: a vector env may reuse its memory
            next_obs, reward, terminated, truncated, infos = self.envs.step(action_cpu.numpy())
            buf.add(obs, action_cpu, logprob.cpu(), value.cpu(), reward, terminated, truncated)
            self.ppo.timesteps += self.nenvs
            truncated_only = np.flatnonzero(np.asarray(truncated) & ~np.asarray(terminated))
            if len(truncated_only):
                final_obs = np.stack([infos["final_obs"][i] for i in truncated_only])
                _, final_values = policy(self._obs_tensor(final_obs))
                buf.final_values[buf.step - 1, torch.from_numpy(truncated_only)] = (
                    final_values.cpu()
                )
            for ret, length in finished_episodes(infos):
                self.tracker.add(ret, length, self.ppo.timesteps)
                self.ppo.episodes += 1
            obs = self.next_obs = next_obs
        _, last_values = policy(self._obs_tensor(obs))
        cfg = self.ppo.config
        return buf.finish(last_values, cfg.gamma, cfg.gae_lambda, device)


def learn(
    ppo: PPO,
    envs: Any,
    *,
    total_timesteps: int | None,
    logger: TrainLogger | None = None,
    log_interval: int = 1,
    on_update: Callable[[PPO], None] | None = None,
    seed: int | None = None,
    rollout_threads: int = 1,
) -> RolloutCollector:
    """Alternate rollouts and updates until `total_timesteps` (None: until an exception, e.g.
    the contest's BudgetExhausted). `on_update(ppo)` runs after each update (checkpoints)."""
    collector = RolloutCollector(envs, ppo, rollout_threads)
    collector.reset(seed=seed)
    last_time, last_steps = time.monotonic(), ppo.timesteps
    while total_timesteps is None or ppo.timesteps < total_timesteps:
        batch = collector.collect()
        stats = ppo.update(batch, lr=ppo.current_lr(total_timesteps))
        now = time.monotonic()
        fps = (ppo.timesteps - last_steps) / max(now - last_time, 1e-9)
        last_time, last_steps = now, ppo.timesteps
        tracker = collector.tracker
        if logger is not None:
            logger.advance(
                ppo.timesteps, {"ret": f"{tracker.mean_return:.1f}", "fps": f"{fps:.0f}"}
            )
            if ppo.updates % max(1, log_interval) == 0:
                logger.log_episodes(tracker.take_unlogged())
                logger.log(
                    {
                        "timesteps": ppo.timesteps,
                        "updates": ppo.updates,
                        "episodes": ppo.episodes,
                        "mean_return": tracker.mean_return,
                        "mean_length": tracker.mean_length,
                        "fps": fps,
                        **stats,
                    }
                )
        if on_update is not None:
            on_update(ppo)
    return collector
