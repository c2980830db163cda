"""The linear feature baseline (rllab/garage/pytorch-maml-rl) and the advantages built on it.

Used by MAML's inner step, in meta-training (meta_train) and in the MAML agent (agent.maml).

Features of step t of a trajectory with observation o:

    [clip(o, −10, 10), o², t/100, (t/100)², (t/100)³, 1]

fitted to the discounted returns by ridge regression (coefficient 1e-5, multiplied by 10 while
the solution is not finite, as rllab does), solved with `torch.linalg.solve` in float64. The
baseline is refitted on every batch of a task (the K trajectories it will then score).

For image observations (more than `MAX_OBS_FEATURES` numbers per observation) the observation
features are left out: a 2·28224-wide normal matrix is neither cheap nor useful, so the baseline
is a cubic in time only.

Advantages: GAE(γ, λ) with V = the baseline and the value after the last step = 0 (fixed-horizon
trajectories end there), then normalized to zero mean and unit variance over the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_OBS_FEATURES = 1024


def episode_steps(dones: Tensor) -> Tensor:
    """(T, K) step index within its episode, given dones[t] = the episode ended at step t."""
    steps = torch.zeros(dones.shape, dtype=torch.float64)
    count = torch.zeros(dones.shape[1], dtype=torch.float64)
    for t in range(dones.shape[0]):
        steps[t] = count
        count = torch.where(dones[t], torch.zeros_like(count), count + 1)
    return steps


def features(obs: Tensor, dones: Tensor | None = None) -> Tensor:
    """(T, K, *obs_shape) → (T, K, F) float64; time restarts after each done."""
    horizon, count = obs.shape[:2]
    if dones is None:
        t = torch.arange(horizon, dtype=torch.float64)[:, None].expand(horizon, count)
    else:
        t = episode_steps(dones)
    t = t.div(100.0)[..., None]
    parts = []
    if obs[0, 0].numel() <= MAX_OBS_FEATURES:  # images: no float64 copy of the frames at all
        flat = obs.reshape(horizon, count, -1).double()
        parts += [flat.clamp(-10.0, 10.0), flat.pow(2)]
    parts += [t, t.pow(2), t.pow(3), torch.ones_like(t)]
    return torch.cat(parts, dim=-1)


def _live(dones: Tensor | None, t: int, count: int) -> Tensor:
    """1.0 where step t's episode goes on to step t+1, 0.0 where it ended at t."""
    if dones is None:
        return torch.ones(count, dtype=torch.float64)
    return 1.0 - dones[t].double()


def discounted_returns(rewards: Tensor, gamma: float, dones: Tensor | None = None) -> Tensor:
    """(T, K) rewards → (T, K) reward-to-go, discounted, not crossing episode ends."""
    out = torch.zeros_like(rewards, dtype=torch.float64)
    running = torch.zeros(rewards.shape[1], dtype=torch.float64)
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t].double() + gamma * _live(dones, t, rewards.shape[1]) * running
        out[t] = running
    return out


def fit_linear_baseline(obs: Tensor, returns: Tensor, ridge: float = 1e-5,
                        dones: Tensor | None = None) -> Tensor:
    """Baseline values (T, K) float64 from a ridge fit of `returns` on the features of `obs`."""
    feats = features(obs, dones)
    feats = feats.reshape(-1, feats.shape[-1])
    target = returns.reshape(-1).double()
    gram = feats.T @ feats
    rhs = feats.T @ target
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    reg = ridge
    coef = torch.zeros(gram.shape[0], dtype=torch.float64)
    for _ in range(5):
        coef = torch.linalg.solve(gram + reg * eye, rhs)
        if torch.isfinite(coef).all():
            break
        reg *= 10.0
    return (feats @ coef).reshape(returns.shape)


def gae(rewards: Tensor, values: Tensor, gamma: float, lam: float,
        dones: Tensor | None = None) -> Tensor:
    """GAE over fixed-horizon trajectories (T, K); V after the last step (and after a done) is
    0, and no advantage crosses an episode end."""
    rewards, values = rewards.double(), values.double()
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[1], dtype=torch.float64)
    next_v = torch.zeros_like(last)
    for t in reversed(range(rewards.shape[0])):
        live = _live(dones, t, rewards.shape[1])
        delta = rewards[t] + gamma * live * next_v - values[t]
        last = delta + gamma * lam * live * last
        adv[t] = last
        next_v = values[t]
    return adv


def advantages(obs: Tensor, rewards: Tensor, gamma: float = 0.99, lam: float = 1.0,
               ridge: float = 1e-5, normalize: bool = True,
               dones: Tensor | None = None) -> Tensor:
    """Normalized GAE advantages (T, K) float32, with the linear feature baseline. `dones`
    (T, K) bool marks steps that ended an episode (the trajectory then goes on with a new one)."""
    values = fit_linear_baseline(obs, discounted_returns(rewards, gamma, dones), ridge, dones)
    adv = gae(rewards, values, gamma, lam, dones)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return adv.float()
