"""A meta-batch's tasks as one stacked computation (vector observations: HalfCheetah).

The per-task objective of `MetaLearner.task_objective`, for all B tasks at once: θ is expanded
to B copies Θ (B, ...), each task's inner steps run on its own copy, and every forward is one
`torch.func.vmap` over the tasks (batched matmuls instead of B small ones):

    L_inner(Θ) = Σ_b −mean_n(log π_Θb(a_bn|s_bn) · Â_bn)      ∂/∂Θ_b: task b's own inner gradient
    Θ'         = Θ − α ⊙ ∇_Θ L_inner(Θ)                        (create_graph: second order)
    L_outer(θ) = mean_b −mean_n(π_Θ'b / π_old · Â),  KL = mean_b mean_n KL(π_old ‖ π_Θ'b)

equal to the mean over tasks of `task_objective` (tests/test_maml.py checks it). It holds all
tasks' graphs at once, which is small for the MLP (≈ 0.3 GB at 40 tasks × 2000 samples) and the
reason image policies keep the task-by-task path (`grad_chunk`, one task's graph at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence
from torch.func import functional_call, vmap

from agent.learners.adaptation import AdvantageBatch, Params

if TYPE_CHECKING:
    from meta_train.meta_learner import MetaLearner, TaskBatch


@dataclass
class StackedBatch:
    """obs (B, N, ...), actions (B, N[, dim]), advantages (B, N) per inner step and for D_S."""

    train: list[tuple[Tensor, Tensor, Tensor]]
    valid: tuple[Tensor, Tensor, Tensor]
    old_logp: Tensor
    old_dist_params: Tensor


def stack_batches(batches: Sequence[TaskBatch]) -> StackedBatch | None:
    """The tasks stacked, or None where they cannot be (image observations, unequal sizes)."""
    first = batches[0]
    if first.valid.obs.dtype == torch.uint8:
        return None
    sizes = {tuple(tuple(p.obs.shape) for p in [*b.train, b.valid]) for b in batches}
    if len(sizes) != 1:
        return None

    def stack(parts: Sequence[AdvantageBatch]) -> tuple[Tensor, Tensor, Tensor]:
        return (
            torch.stack([p.obs for p in parts]),
            torch.stack([p.actions for p in parts]),
            torch.stack([p.advantages for p in parts]),
        )

    train = [stack([b.train[j] for b in batches]) for j in range(len(first.train))]
    return StackedBatch(
        train,
        stack([b.valid for b in batches]),
        torch.stack([b.old_logp for b in batches]),
        torch.stack([b.old_dist_params for b in batches]),
    )


def stacked_distribution(
    learner: MetaLearner, params: Params, obs: Tensor
) -> tuple[Tensor, Distribution]:
    """Each task's policy on its observations: params (B, ...), obs (B, N, ...)."""
    policy = learner.policy

    def one(p: Params, o: Tensor) -> Tensor:
        return functional_call(policy, p, (o,))[0]

    dist_params = vmap(one)(params, obs)
    return dist_params, policy.distribution(dist_params)


def stacked_adapt(
    learner: MetaLearner, theta: Params, data: StackedBatch, create_graph: bool
) -> Params:
    """Θ_S: every task's inner steps from θ, stacked (B, ...)."""
    count = data.valid[2].shape[0]
    params = {n: p.unsqueeze(0).expand(count, *p.shape) for n, p in theta.items()}
    for obs, actions, adv in data.train:
        with torch.enable_grad():
            _, dist = stacked_distribution(learner, params, obs)
            logp = dist.log_prob(actions)
            loss = -(logp * adv.to(logp.dtype)).mean(dim=1).sum()
            names = list(params)
            grads = torch.autograd.grad(
                loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True
            )
        params = {
            n: params[n] if g is None else params[n] - learner.step_size(n) * g
            for n, g in zip(names, grads, strict=True)
        }
    return params


def stacked_objective(
    learner: MetaLearner,
    data: StackedBatch,
    clip: float | None = None,
    create_graph: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """(mean over tasks of the post-update surrogate, mean KL(old ‖ new)), differentiable in θ
    (and α); `clip`: PPO's clipped surrogate."""
    if create_graph is None:
        create_graph = not learner.first_order
    adapted = stacked_adapt(learner, learner.params, data, create_graph)
    obs, actions, adv = data.valid
    dist_params, dist = stacked_distribution(learner, adapted, obs)
    logp = dist.log_prob(actions)
    ratio = (logp - data.old_logp.to(logp.dtype)).exp()
    adv = adv.to(logp.dtype)
    objective = ratio * adv
    if clip is not None:
        objective = torch.min(objective, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    old = learner.policy.distribution(data.old_dist_params.to(dist_params.dtype))
    return -objective.mean(), kl_divergence(old, dist).mean()


def kl_metric(action_type: str, dist_params: Tensor) -> Callable[[Tensor], Tensor]:
    """w ↦ M·w, M the Hessian of mean KL(π_old ‖ π) w.r.t. the distribution parameters where
    π = π_old: Gaussian [μ, log σ]: 1/σ² on μ, 2 on log σ; categorical logits: diag(p) − ppᵀ;
    divided by the number of samples (the KL is a mean)."""
    count = dist_params[..., 0].numel()
    dp = dist_params.detach()
    if action_type == "discrete":
        p = torch.softmax(dp, dim=-1)
        return lambda w: (p * w - p * (p * w).sum(-1, keepdim=True)) / count
    mean, log_std = dp.chunk(2, dim=-1)
    weight = torch.cat([(-2 * log_std).exp(), torch.full_like(log_std, 2.0)], dim=-1) / count
    return lambda w: weight * w


def gauss_newton_kl_hvp(learner: MetaLearner, data: StackedBatch) -> Callable[[Tensor], Tensor]:
    """v ↦ Jᵀ M J v: the Hessian of the mean KL at the sampling θ (where the KL and its gradient
    are 0, so the Hessian's second-derivative-of-J term vanishes), J = ∂(post-update distribution
    parameters)/∂(θ, α) through the inner steps. The same H·v as differentiating the KL's
    gradient, at about half the cost: J v by the double-backward trick and Jᵀ w by one backward,
    both on graphs built once."""
    params = learner.meta_parameters()
    adapted = stacked_adapt(learner, learner.params, data, create_graph=True)
    out, _ = stacked_distribution(learner, adapted, data.valid[0])
    metric = kl_metric(str(getattr(learner.policy, "action_type", "gaussian")), out)
    probe = torch.zeros_like(out, requires_grad=True)
    jt_probe = torch.autograd.grad(out, params, probe, create_graph=True, allow_unused=True)
    live = [(g, p) for g, p in zip(jt_probe, params, strict=True) if g is not None]

    def hvp(v: Tensor) -> Tensor:
        parts = list(torch.split(v, [p.numel() for p in params]))
        vs = [parts[i].view_as(p) for i, p in enumerate(params) if jt_probe[i] is not None]
        jv = torch.autograd.grad([g for g, _ in live], probe, vs, retain_graph=True)[0]
        jt = torch.autograd.grad(out, params, metric(jv), retain_graph=True, allow_unused=True)
        return torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                for g, p in zip(jt, params, strict=True)
            ]
        ).detach()

    return hvp
