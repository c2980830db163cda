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

from agent.learners.rollout import compute_gae, discounted_returns

__all__ = [
    "advantages",
    "discounted_returns",
    "episode_steps",
    "features",
    "fit_linear_baseline",
    "gae",
]

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


def fit_linear_baseline(
    obs: Tensor, returns: Tensor, ridge: float = 1e-5, dones: Tensor | None = None
) -> Tensor:
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


def gae(
    rewards: Tensor, values: Tensor, gamma: float, gae_lambda: float, dones: Tensor | None = None
) -> Tensor:
    """GAE (agent.learners.rollout.compute_gae) over fixed-horizon trajectories (T, K) in
    float64; V after the last step (and after a done) is 0, and no advantage crosses an
    episode end."""
    rewards, values = rewards.double(), values.double()
    ends = torch.zeros(rewards.shape, dtype=torch.bool) if dones is None else dones
    next_values = torch.zeros_like(values)
    next_values[:-1] = values[1:]
    return compute_gae(rewards, values, next_values, ends, ends, gamma, gae_lambda)[0]


def advantages(
    obs: Tensor,
    rewards: Tensor,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    ridge: float = 1e-5,
    normalize: bool = True,
    dones: Tensor | None = None,
) -> Tensor:
    """Normalized GAE advantages (T, K) float32, with the linear feature baseline. `dones`
    (T, K) bool marks steps that ended an episode (the trajectory then goes on with a new one)."""
    values = fit_linear_baseline(obs, discounted_returns(rewards, gamma, dones), ridge, dones)
    adv = gae(rewards, values, gamma, gae_lambda, dones)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return adv.float()
