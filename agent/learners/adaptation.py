"""MAML's inner step, shared by meta-training (meta_train) and the MAML agent (agent.maml), so
that the agent adapts on a held-out level exactly as the initialization was meta-trained to.

    L_inner(θ) = −mean(log π_θ(a|s) · Â)    Â: normalized GAE advantages (linear_baseline)
    θ'         = θ − α ⊙ ∇ L_inner(θ)       α: a number, or a tensor per parameter (Meta-SGD)

Parameters are a plain dict `{name: tensor}` (`Params`) run through the policy module with
`torch.func.functional_call`; `create_graph=True` keeps the graph of the gradient (second-order
MAML), otherwise the result is a function of θ only through θ itself.

The data: `Trajectories` (K trajectories of T steps, as the samplers of meta_train and the MAML
agent collect them) become a `AdvantageBatch` batch (flattened, with the advantages Â) for the step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from agent.learners.linear_baseline import advantages

Params = dict[str, Tensor]
StepSizes = Mapping[str, Tensor | float]


@dataclass
class Trajectories:
    """K trajectories of T steps, time-major: obs (T, K, *obs_shape), actions (T, K[, dim]),
    rewards (T, K) (the rewards learned from), dones (T, K) (the step ended an episode and the
    trajectory went on with a fresh one; None: no episode ended). Observations uint8 for images,
    float32 otherwise. contest_returns (K,): the MAML agent's unscaled contest reward sums."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray | None = None
    contest_returns: np.ndarray | None = None

    @property
    def horizon(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def count(self) -> int:
        return int(self.rewards.shape[1])

    def returns(self) -> np.ndarray:
        """Undiscounted return of each trajectory, shape (K,)."""
        return self.rewards.astype(np.float64).sum(axis=0)


@dataclass
class AdvantageBatch:
    """One batch of trajectories flattened to (T·K, ...): observations in their stored dtype,
    the normalized GAE advantages of the linear feature baseline, the mean return."""

    obs: Tensor
    actions: Tensor
    advantages: Tensor
    mean_return: float

    @classmethod
    def from_trajectories(
        cls, traj: Trajectories, gamma: float, gae_lambda: float, ridge: float
    ) -> AdvantageBatch:
        obs = torch.from_numpy(traj.obs)
        rewards = torch.from_numpy(traj.rewards)
        dones = None if traj.dones is None else torch.from_numpy(traj.dones)
        adv = advantages(obs, rewards, gamma, gae_lambda, ridge, dones=dones)
        n = traj.horizon * traj.count
        return cls(
            obs.reshape(n, *obs.shape[2:]),
            torch.from_numpy(traj.actions).reshape(n, *traj.actions.shape[2:]),
            adv.reshape(n),
            float(traj.returns().mean()),
        )

    def to(self, device: torch.device) -> AdvantageBatch:
        if self.obs.device == device:
            return self
        return AdvantageBatch(
            self.obs.to(device),
            self.actions.to(device),
            self.advantages.to(device),
            self.mean_return,
        )


def policy_parameters(policy: nn.Module) -> Params:
    """The parameters MAML adapts: all but the value head (`vf.*`), which the linear feature
    baseline replaces."""
    return {n: p for n, p in policy.named_parameters() if not n.startswith("vf.")}


def log_prob(policy: nn.Module, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
    dist_params, _ = functional_call(policy, params, (obs,))
    return policy.distribution(dist_params).log_prob(actions)  # type: ignore[operator]


def inner_loss(
    policy: nn.Module, params: Params, obs: Tensor, actions: Tensor, advantages: Tensor
) -> Tensor:
    logp = log_prob(policy, params, obs, actions)
    return -(logp * advantages.to(logp.dtype)).mean()


def chunk_loss(
    policy: nn.Module, params: Params, obs: Tensor, actions: Tensor, advantages: Tensor, n: int
) -> Tensor:
    """A chunk's share of L_inner: −Σ_chunk log π(a|s) · Â / n, n the samples of the whole
    batch, so that the chunks' losses (and gradients) add up to L_inner's."""
    logp = log_prob(policy, params, obs, actions)
    return -(logp * advantages.to(logp.dtype)).sum() / n


def inner_step(
    policy: nn.Module,
    params: Params,
    obs: Tensor,
    actions: Tensor,
    advantages: Tensor,
    step_sizes: StepSizes | None = None,
    lr: float = 0.1,
    create_graph: bool = False,
) -> Params:
    """θ' = θ − α ⊙ ∇ L_inner(θ), α = step_sizes[name] where given, else `lr`."""
    with torch.enable_grad():
        names = list(params)
        loss = inner_loss(policy, params, obs, actions, advantages)
        grads = torch.autograd.grad(
            loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True
        )
    return apply_step(params, names, grads, step_sizes, lr)


def apply_step(
    params: Params,
    names: list[str],
    grads: Sequence[Tensor | None],
    step_sizes: StepSizes | None,
    lr: float,
) -> Params:
    """θ − α ⊙ g per parameter (a parameter without a gradient stays as it is)."""
    out: Params = {}
    for n, g in zip(names, grads, strict=True):
        if g is None:
            out[n] = params[n]
            continue
        step = step_sizes.get(n, lr) if step_sizes is not None else lr
        out[n] = params[n] - step * g
    return out


def inner_step_chunked(
    policy: nn.Module,
    params: Params,
    obs: Tensor,
    actions: Tensor,
    advantages: Tensor,
    step_sizes: StepSizes | None = None,
    lr: float = 0.1,
    chunk: int = 2048,
) -> Params:
    """`inner_step` (first order, no graph kept) with the gradient summed over chunks of at most
    `chunk` samples, so that only one chunk's activations are held at a time: the same θ' up to
    float rounding. The data may live on another device than `params` (e.g. uint8 frames on the
    CPU): each chunk is moved to the parameters' device. With `chunk` ≥ the number of samples
    (or ≤ 0) this is exactly `inner_step`."""
    device = next(iter(params.values())).device
    n = int(obs.shape[0])
    if chunk <= 0 or n <= chunk:
        return inner_step(
            policy,
            params,
            obs.to(device),
            actions.to(device),
            advantages.to(device),
            step_sizes,
            lr,
        )
    names = list(params)
    leaves = [params[name] for name in names]
    total: list[Tensor | None] = [None] * len(names)
    with torch.enable_grad():
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            loss = chunk_loss(
                policy,
                params,
                obs[part].to(device),
                actions[part].to(device),
                advantages[part].to(device),
                n,
            )
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            for i, g in enumerate(grads):
                if g is not None:
                    prev = total[i]
                    total[i] = g if prev is None else prev + g
    return apply_step(params, names, total, step_sizes, lr)


def detached_step(
    policy: nn.Module,
    params: Params,
    data: AdvantageBatch,
    step_sizes: StepSizes | None,
    lr: float,
    chunk: int,
) -> Params:
    """One inner step for sampling: θ' from θ = `params` on `data` by `inner_step_chunked`
    (first order, no graph kept), the result detached. Meta-training's
    (`MetaLearner.adapted_detached`) and the MAML agent's adaptation step."""
    leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    new = inner_step_chunked(
        policy, leaves, data.obs, data.actions, data.advantages, step_sizes, lr, chunk=chunk
    )
    return {name: p.detach() for name, p in new.items()}
