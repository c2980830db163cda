"""The meta-gradient of one task by recomputation in chunks: never more than `grad_chunk`
samples' graph in memory (image policies), equal to backpropagating
`MetaLearner.task_objective` (tests/test_maml.py checks it, first and second order, with and
without a learned α).

Forward, chunk by chunk (first order, no graph kept), with g_j = ∇ L_inner(θ_j) on D_j:

    θ_{j+1} = θ_j − α ⊙ g_j,                 j = 0 .. S−1
    G_S     = ∂L_outer/∂θ_S                  (the post-update surrogate on D_S)

then reverse mode through the inner steps, j = S−1 .. 0:

    ∂L/∂α  += −g_j ⊙ G_{j+1}                 (when α is learned, Meta-SGD)
    G_j     = G_{j+1} − H_j (α ⊙ G_{j+1})    (first order: G_j = G_{j+1})

where H_j v, the Hessian of L_inner at θ_j times v, is a sum of per-chunk Hessian-vector
products (each the gradient of ∇L_chunk · v). The result: L_outer and (G_0, ∂L/∂α), the
gradient w.r.t. `MetaLearner.meta_parameters()`. Each loss is a chunk sum divided by the
number of samples, so the chunks add up to the means of the whole batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from agent.learners.adaptation import AdvantageBatch, Params, chunk_loss
from agent.learners.ppo import clipped_surrogate

if TYPE_CHECKING:
    from meta_train.meta_learner import MetaLearner, TaskBatch


def chunks(data: AdvantageBatch, size: int) -> list[slice]:
    """The samples of `data` in slices of at most `size` (all at once when size ≤ 0)."""
    n = len(data.advantages)
    size = size if size > 0 else n
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def leaves(params: Params) -> Params:
    """Detached copies that take gradients: the start of one chunk's graph."""
    return {n: p.detach().requires_grad_(True) for n, p in params.items()}


def grad(loss: Tensor, wrt: Params, create_graph: bool = False) -> list[Tensor]:
    """∂loss/∂wrt, zeros where a parameter is unused."""
    grads = torch.autograd.grad(
        loss, list(wrt.values()), create_graph=create_graph, allow_unused=True
    )
    return [
        g if g is not None else torch.zeros_like(p)
        for g, p in zip(grads, wrt.values(), strict=True)
    ]


def chunk_inner_loss(
    learner: MetaLearner, params: Params, data: AdvantageBatch, sl: slice
) -> Tensor:
    """The chunk's share of L_inner = −mean(log π · Â) (agent.learners.adaptation.chunk_loss)."""
    return chunk_loss(
        learner.policy,
        params,
        data.obs[sl],
        data.actions[sl],
        data.advantages[sl],
        len(data.advantages),
    )


def chunk_outer_loss(
    learner: MetaLearner, params: Params, batch: TaskBatch, sl: slice, clip: float | None
) -> Tensor:
    """The chunk's share of L_outer (the surrogate on D_S, clipped when `clip` is given)."""
    data = batch.valid
    _, dist = learner.forward(params, data.obs[sl])
    logp = dist.log_prob(data.actions[sl])
    ratio = (logp - batch.old_logp[sl].to(logp.dtype)).exp()
    objective = clipped_surrogate(ratio, data.advantages[sl].to(logp.dtype), clip)
    return -objective.sum() / len(data.advantages)


def inner_gradient(learner: MetaLearner, theta: Params, data: AdvantageBatch) -> list[Tensor]:
    """g = ∇ L_inner(θ) on `data`, chunk by chunk (one chunk's graph at a time)."""
    at = leaves(theta)
    total = [torch.zeros_like(p) for p in at.values()]
    for sl in chunks(data, learner.grad_chunk):
        for acc, g in zip(total, grad(chunk_inner_loss(learner, at, data, sl), at), strict=True):
            acc += g
    return total


def hessian_vector(
    learner: MetaLearner, theta: Params, data: AdvantageBatch, v: list[Tensor]
) -> list[Tensor]:
    """H v, H the Hessian of L_inner at θ on `data`, as a sum of per-chunk products."""
    at = leaves(theta)
    total = [torch.zeros_like(p) for p in at.values()]
    for sl in chunks(data, learner.grad_chunk):
        grads = grad(chunk_inner_loss(learner, at, data, sl), at, create_graph=True)
        gv = sum((gc * vc).sum() for gc, vc in zip(grads, v, strict=True))
        for acc, h in zip(total, grad(gv, at), strict=True):  # type: ignore[arg-type]
            acc += h
    return total


def chunked_meta_gradient(
    learner: MetaLearner, batch: TaskBatch, clip: float | None = None
) -> tuple[float, list[Tensor]]:
    """The task's post-update loss and its gradient w.r.t. `learner.meta_parameters()` by the
    recurrence of the module docstring."""
    names = list(learner.params)
    thetas: list[Params] = [learner.detached()]
    inner_grads: list[list[Tensor]] = []
    for data in batch.train:
        g = inner_gradient(learner, thetas[-1], data)
        inner_grads.append(g)
        thetas.append(
            {
                n: thetas[-1][n] - learner.fixed_step_size(n) * gn
                for n, gn in zip(names, g, strict=True)
            }
        )
    at = leaves(thetas[-1])
    big_g = [torch.zeros_like(p) for p in at.values()]
    loss_value = 0.0
    for sl in chunks(batch.valid, learner.grad_chunk):
        loss = chunk_outer_loss(learner, at, batch, sl, clip)
        loss_value += float(loss.detach())
        for acc, gc in zip(big_g, grad(loss, at), strict=True):
            acc += gc
    alpha_grads = [torch.zeros_like(p) for p in learner.step_sizes.values()]
    for j in reversed(range(len(batch.train))):
        if learner.step_sizes:
            for k in range(len(names)):  # step_sizes are ordered like params
                alpha_grads[k] -= inner_grads[j][k] * big_g[k]
        if learner.first_order:
            continue
        v = [learner.fixed_step_size(n) * gk for n, gk in zip(names, big_g, strict=True)]
        hv = hessian_vector(learner, thetas[j], batch.train[j], v)
        big_g = [gk - h for gk, h in zip(big_g, hv, strict=True)]
    return loss_value, big_g + alpha_grads
