"""The linear feature baseline (rllab/garage/pytorch-maml-rl) and the advantages built on it.

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


def features(obs: Tensor) -> Tensor:
    """(T, K, *obs_shape) → (T, K, F) float64."""
    horizon, count = obs.shape[:2]
    flat = obs.reshape(horizon, count, -1).double()
    t = torch.arange(horizon, dtype=torch.float64).div(100.0)
    t = t[:, None, None].expand(horizon, count, 1)
    parts = []
    if flat.shape[-1] <= MAX_OBS_FEATURES:
        parts += [flat.clamp(-10.0, 10.0), flat.pow(2)]
    parts += [t, t.pow(2), t.pow(3), torch.ones_like(t)]
    return torch.cat(parts, dim=-1)


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """(T, K) rewards → (T, K) reward-to-go, discounted."""
    out = torch.zeros_like(rewards, dtype=torch.float64)
    running = torch.zeros(rewards.shape[1], dtype=torch.float64)
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t].double() + gamma * running
        out[t] = running
    return out


def fit_linear_baseline(obs: Tensor, returns: Tensor, ridge: float = 1e-5) -> Tensor:
    """Baseline values (T, K) float64 from a ridge fit of `returns` on the features of `obs`."""
    feats = features(obs)
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


def gae(rewards: Tensor, values: Tensor, gamma: float, lam: float) -> Tensor:
    """GAE over fixed-horizon trajectories (T, K); V after the last step is 0."""
    rewards, values = rewards.double(), values.double()
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[1], dtype=torch.float64)
    next_v = torch.zeros_like(last)
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
        next_v = values[t]
    return adv


def advantages(obs: Tensor, rewards: Tensor, gamma: float = 0.99, lam: float = 1.0,
               ridge: float = 1e-5, normalize: bool = True) -> Tensor:
    """Normalized GAE advantages (T, K) float32, with the linear feature baseline."""
    values = fit_linear_baseline(obs, discounted_returns(rewards, gamma), ridge)
    adv = gae(rewards, values, gamma, lam)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return adv.float()
