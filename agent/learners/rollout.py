"""The rollout buffer (nsteps × nenvs, observations kept as uint8) and GAE(γ, λ).

Terminated and truncated steps are told apart. For step t with true next state s' (the final
observation when the episode ended there):

    δ_t = r_t + γ · (1 − terminated_t) · V(s') − V(s_t)
    A_t = δ_t + γλ · (1 − done_t) · A_{t+1},      done_t = terminated_t or truncated_t

so a truncated episode (time limit) is bootstrapped with the value of its final observation,
a terminated one is not, and no advantage leaks across an episode boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    dones: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Advantages and returns (A + V), all tensors of shape (T, N), in the rewards' dtype.

    next_values[t] is V of the true next state of step t: V(s_{t+1}) inside an episode, the
    value of the final observation on a truncated step (anything on a terminated one).
    The one GAE of the project: PPO's rollouts (below) and MAML's fixed-horizon trajectories
    (`agent.learners.linear_baseline.gae`, `discounted_returns`) both call it.
    """
    not_terminal = 1.0 - terminated.to(rewards.dtype)
    not_done = 1.0 - dones.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * not_terminal[t] * next_values[t] - values[t]
        last = delta + gamma * gae_lambda * not_done[t] * last
        advantages[t] = last
    return advantages, advantages + values


def discounted_returns(rewards: Tensor, gamma: float, dones: Tensor | None = None) -> Tensor:
    """(T, K) rewards → (T, K) float64 reward-to-go, discounted, not crossing episode ends
    (dones[t]: an episode ended at step t): GAE with V = 0 and λ = 1."""
    rewards = rewards.double()
    ends = torch.zeros(rewards.shape, dtype=torch.bool) if dones is None else dones
    zeros = torch.zeros_like(rewards)
    return compute_gae(rewards, zeros, zeros, ends, ends, gamma, 1.0)[0]


@dataclass
class Batch:
    """One flattened rollout (nsteps·nenvs samples) on the learner's device."""

    obs: Tensor
    actions: Tensor
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def index(self, idx: Tensor) -> Batch:
        return Batch(
            self.obs[idx],
            self.actions[idx],
            self.logprobs[idx],
            self.values[idx],
            self.advantages[idx],
            self.returns[idx],
        )


class RolloutBuffer:
    """Preallocated CPU tensors for one rollout; observations in their own dtype (uint8)."""

    def __init__(
        self,
        nsteps: int,
        nenvs: int,
        obs_shape: Sequence[int],
        obs_dtype: torch.dtype,
        action_shape: Sequence[int],
        action_dtype: torch.dtype,
    ) -> None:
        self.nsteps, self.nenvs = nsteps, nenvs
        self.obs = torch.zeros((nsteps, nenvs, *obs_shape), dtype=obs_dtype)
        self.actions = torch.zeros((nsteps, nenvs, *action_shape), dtype=action_dtype)
        self.logprobs = torch.zeros((nsteps, nenvs))
        self.values = torch.zeros((nsteps, nenvs))
        self.rewards = torch.zeros((nsteps, nenvs))
        self.terminated = torch.zeros((nsteps, nenvs), dtype=torch.bool)
        self.dones = torch.zeros((nsteps, nenvs), dtype=torch.bool)
        # V of the final observation where a step was truncated (time limit), else unused
        self.final_values = torch.zeros((nsteps, nenvs))
        self.step = 0

    def add(
        self,
        obs: np.ndarray,
        actions: Tensor,
        logprobs: Tensor,
        values: Tensor,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        t = self.step
        self.obs[t].copy_(torch.from_numpy(np.asarray(obs)))
        self.actions[t].copy_(actions)
        self.logprobs[t].copy_(logprobs)
        self.values[t].copy_(values)
        self.rewards[t].copy_(torch.from_numpy(np.asarray(rewards, dtype=np.float32)))
        term = torch.from_numpy(np.asarray(terminated, dtype=bool))
        self.terminated[t].copy_(term)
        self.dones[t].copy_(term | torch.from_numpy(np.asarray(truncated, dtype=bool)))
        self.final_values[t].zero_()
        self.step += 1

    @property
    def full(self) -> bool:
        return self.step >= self.nsteps

    def finish(
        self, last_values: Tensor, gamma: float, gae_lambda: float, device: torch.device
    ) -> Batch:
        """GAE over the rollout, flattened to (nsteps·nenvs, ...) on `device`. Resets the buffer.

        last_values: V of the observations that follow the last step (the next rollout's first).
        """
        next_values = torch.empty_like(self.values)
        next_values[:-1] = self.values[1:]
        next_values[-1] = last_values.cpu()
        truncated = self.dones & ~self.terminated
        next_values = torch.where(truncated, self.final_values, next_values)
        advantages, returns = compute_gae(
            self.rewards, self.values, next_values, self.terminated, self.dones, gamma, gae_lambda
        )
        self.step = 0
        n = self.nsteps * self.nenvs

        def flat(x: Tensor) -> Tensor:
            return x.reshape(n, *x.shape[2:]).to(device, non_blocking=True)

        return Batch(
            flat(self.obs),
            flat(self.actions),
            flat(self.logprobs),
            flat(self.values),
            flat(advantages),
            flat(returns),
        )
