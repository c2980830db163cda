"""MAML for RL: the differentiable inner adaptation and the per-task post-update objective.

Parameters θ are the policy module's own parameters (the value head `vf.*` is left out: the
linear feature baseline replaces it). An adapted set is a plain dict `{name: tensor}` run through
the same module with `torch.func.functional_call`.

Inner step on a task, with trajectories D_j sampled by θ_j:

    L_inner(θ_j) = −mean(log π_θj(a|s) · Â)                  Â: normalized GAE(0.99, 1.0) advantages
    θ_{j+1}     = θ_j − α ⊙ ∇ L_inner(θ_j)                    α: fixed, or learned per parameter
                                                               element (Meta-SGD)

Second order keeps the graph of ∇ L_inner (`create_graph=True`), so the meta-gradient flows
through the inner gradient; first order treats ∇ L_inner as a constant (the meta-gradient is the
post-update gradient at θ_S, passed straight back to θ).

The outer objective of a task is the post-update surrogate on trajectories D_S sampled by θ_S:

    L_outer(θ) = −mean(π_θS(a|s) / π_old(a|s) · Â),   KL = mean KL(π_old ‖ π_θS)

where π_old is θ_S at sampling time (`clip`: PPO's clipped surrogate,
agent.learners.ppo.clipped_surrogate).
Everything per task is recomputed from θ on demand (`task_objective`), so the meta-gradient can
be built one task's graph at a time and added up (and TRPO's Hessian-vector products) task by
task: peak memory is one task's graph, not S·N. `meta_gradient` is the one entry point for the
meta-optimizers: it picks stacked tasks (meta_train.stacked), task by task, or, with
`grad_chunk > 0`, task by task in chunks of samples (meta_train.chunked: never more than one
chunk's second-order graph). Sampling the data is meta_train.collect's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence
from torch.func import functional_call

from agent.learners.adaptation import (
    AdvantageBatch,
    Params,
    Trajectories,
    detached_step,
    inner_loss,
    inner_step,
    policy_parameters,
)
from agent.learners.ppo import clipped_surrogate
from agent.policies import ActorCritic
from meta_train.chunked import chunked_meta_gradient
from meta_train.stacked import (
    StackedBatch,
    gauss_newton_kl_hvp,
    stack_batches,
    stacked_objective,
)
from meta_train.tasks import Task

__all__ = ["MetaLearner", "Params", "AdvantageBatch", "TaskBatch", "iteration_seeds"]


@dataclass
class TaskBatch:
    """A task's data for one meta-iteration: D_0..D_{S−1} (inner steps) and D_S (outer)."""

    task: Task
    train: list[AdvantageBatch]
    valid: AdvantageBatch
    old_logp: Tensor
    old_dist_params: Tensor

    @property
    def step_returns(self) -> list[float]:
        return [p.mean_return for p in self.train] + [self.valid.mean_return]


class MetaLearner:
    """θ, the inner step size(s) α and the MAML computations on them."""

    def __init__(
        self,
        policy: ActorCritic,
        *,
        adapt_steps: int = 1,
        inner_lr: float = 0.1,
        learn_inner_lr: bool = False,
        first_order: bool = False,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ridge: float = 1e-5,
        grad_chunk: int = 0,
    ) -> None:
        self.policy = policy
        self.grad_chunk = int(grad_chunk)
        self.adapt_steps = int(adapt_steps)
        self.first_order = bool(first_order)
        self.gamma, self.gae_lambda, self.ridge = float(gamma), float(gae_lambda), float(ridge)
        self.params: Params = policy_parameters(policy)
        self._stack_cache: tuple[tuple[int, ...], list[TaskBatch], StackedBatch | None] | None = (
            None
        )
        self.learn_inner_lr = bool(learn_inner_lr)
        self.inner_lr = float(inner_lr)
        self.step_sizes: dict[str, nn.Parameter] = {}
        if self.learn_inner_lr:
            self.step_sizes = {
                n: nn.Parameter(torch.full_like(p.detach(), self.inner_lr))
                for n, p in self.params.items()
            }

    # --- parameters ---------------------------------------------------------------------------

    def meta_parameters(self) -> list[Tensor]:
        """What the meta-optimizer updates: θ, then α when it is learned."""
        return list(self.params.values()) + list(self.step_sizes.values())

    def detached(self) -> Params:
        return {n: p.detach() for n, p in self.params.items()}

    def step_size_state(self) -> dict[str, Any]:
        return {
            "learned": self.learn_inner_lr,
            "value": self.inner_lr,
            "per_parameter": {n: a.detach().clone() for n, a in self.step_sizes.items()},
        }

    def load_step_size_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for n, a in state.get("per_parameter", {}).items():
                if n in self.step_sizes:
                    self.step_sizes[n].copy_(a)

    # --- policy evaluation --------------------------------------------------------------------

    def forward(self, params: Params, obs: Tensor) -> tuple[Tensor, Distribution]:
        dist_params, _ = functional_call(self.policy, params, (obs,))
        return dist_params, self.policy.distribution(dist_params)

    def log_prob(self, params: Params, data: AdvantageBatch) -> tuple[Tensor, Tensor]:
        dist_params, dist = self.forward(params, data.obs)
        return dist.log_prob(data.actions), dist_params

    def inner_loss(self, params: Params, data: AdvantageBatch) -> Tensor:
        return inner_loss(self.policy, params, data.obs, data.actions, data.advantages)

    # --- adaptation ---------------------------------------------------------------------------

    def adapt_step(
        self, params: Params, data: AdvantageBatch, create_graph: bool, lr: float | None = None
    ) -> Params:
        """θ' = θ − α ⊙ ∇ L_inner(θ); `lr` overrides α (test-time schedules)."""
        if lr is not None:
            return inner_step(
                self.policy, params, data.obs, data.actions, data.advantages, None, lr, create_graph
            )
        return inner_step(
            self.policy,
            params,
            data.obs,
            data.actions,
            data.advantages,
            self.step_sizes,
            self.inner_lr,
            create_graph,
        )

    def adapt(self, params: Params, train: Sequence[AdvantageBatch], create_graph: bool) -> Params:
        for data in train:
            params = self.adapt_step(params, data, create_graph)
        return params

    def adapted_detached(
        self, params: Params, data: AdvantageBatch, lr: float | None = None
    ) -> Params:
        """One inner step for sampling (agent.learners.adaptation.detached_step): no graph
        kept, result detached; the gradient summed in chunks of `grad_chunk` samples when set
        (the same step, one chunk's graph in memory: image policies). `lr` overrides α."""
        if lr is not None:
            return detached_step(self.policy, params, data, None, lr, self.grad_chunk)
        step_sizes = {n: a.detach() for n, a in self.step_sizes.items()}
        return detached_step(self.policy, params, data, step_sizes, self.inner_lr, self.grad_chunk)

    # --- data ---------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def prepare(self, traj: Trajectories) -> AdvantageBatch:
        """Advantages on the CPU (float64 baseline fit), then the batch on θ's device."""
        data = AdvantageBatch.from_trajectories(traj, self.gamma, self.gae_lambda, self.ridge)
        return data.to(self.device)

    # --- outer objective ----------------------------------------------------------------------

    def task_objective(
        self,
        batch: TaskBatch,
        params: Params | None = None,
        clip: float | None = None,
        create_graph: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(post-update surrogate loss, mean KL(old ‖ new)) of one task, differentiable in θ
        (and α). `clip`: PPO's clipped surrogate instead of the plain ratio."""
        if params is None:
            params = self.params
        if create_graph is None:
            create_graph = not self.first_order
        adapted = self.adapt(params, batch.train, create_graph=create_graph)
        dist_params, dist = self.forward(adapted, batch.valid.obs)
        logp = dist.log_prob(batch.valid.actions)
        ratio = (logp - batch.old_logp.to(logp.dtype)).exp()
        loss = -clipped_surrogate(ratio, batch.valid.advantages.to(logp.dtype), clip).mean()
        old = self.policy.distribution(batch.old_dist_params.to(dist_params.dtype))
        kl = kl_divergence(old, dist).mean()
        return loss, kl

    def step_size(self, name: str) -> Tensor | float:
        """α of a parameter: its learned tensor (differentiable), or the fixed inner_lr."""
        return self.step_sizes.get(name, self.inner_lr)

    def fixed_step_size(self, name: str) -> Tensor | float:
        """α of a parameter as a constant (detached)."""
        a = self.step_sizes.get(name)
        return a.detach() if a is not None else self.inner_lr

    # --- the whole meta-batch: stacked where the tasks allow it, else task by task ------------

    def stacked(self, batches: Sequence[TaskBatch]) -> StackedBatch | None:
        """The meta-batch stacked (cached for the batches of the current meta-step), or None:
        image observations and `grad_chunk` keep one task's graph at a time."""
        key = (self.grad_chunk, *(id(b) for b in batches))
        if self._stack_cache is None or self._stack_cache[0] != key:
            data = None if self.grad_chunk > 0 else stack_batches(batches)
            self._stack_cache = (key, list(batches), data)
        return self._stack_cache[2]

    def meta_gradient(
        self, batches: Sequence[TaskBatch], clip: float | None = None
    ) -> tuple[float, list[Tensor]]:
        """The mean over tasks of the post-update loss and its gradient w.r.t.
        `meta_parameters()`, by whichever of the three equal ways fits: stacked tasks, task by
        task, or task by task in chunks of `grad_chunk` samples."""
        params = self.meta_parameters()
        data = self.stacked(batches)
        if data is not None:
            loss, _ = stacked_objective(self, data, clip)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            return float(loss.detach()), [
                g if g is not None else torch.zeros_like(p)
                for g, p in zip(grads, params, strict=True)
            ]
        n = len(batches)
        total = [torch.zeros_like(p) for p in params]
        value = 0.0
        task_grads: Sequence[Tensor | None]
        for b in batches:
            if self.grad_chunk > 0:
                loss_b, task_grads = chunked_meta_gradient(self, b, clip)
            else:
                loss, _ = self.task_objective(b, clip=clip)
                loss_b = float(loss.detach())
                task_grads = torch.autograd.grad(loss, params, allow_unused=True)
            value += loss_b / n
            for acc, g in zip(total, task_grads, strict=True):
                if g is not None:
                    acc += g / n
        return value, total

    def kl_hvp(
        self, batches: Sequence[TaskBatch], at_sampling: bool = False
    ) -> Callable[[Tensor], Tensor]:
        """v ↦ H·v, H the Hessian w.r.t. the flat meta-parameters of the mean-over-tasks KL
        between the sampling and the new post-update policies, exact through the inner steps.
        Stacked: the graphs are built once and every product reuses them; `at_sampling` (θ is
        still the θ that sampled the batches, as in a TRPO step) uses the cheaper Gauss-Newton
        form, equal there. Else each product recomputes the KL task by task (one task's graph
        in memory)."""
        params = self.meta_parameters()

        def flat(grads: Sequence[Tensor | None]) -> Tensor:
            return torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            )

        data = self.stacked(batches)
        if data is not None and at_sampling:
            return gauss_newton_kl_hvp(self, data)
        if data is not None:
            _, kl = stacked_objective(self, data, create_graph=True)
            kl_grad = flat(torch.autograd.grad(kl, params, create_graph=True, allow_unused=True))
            return lambda v: flat(
                torch.autograd.grad(kl_grad, params, v, retain_graph=True, allow_unused=True)
            ).detach()

        def per_task(v: Tensor) -> Tensor:
            out = torch.zeros_like(v)
            for b in batches:
                _, kl = self.task_objective(b, create_graph=True)
                grads = torch.autograd.grad(
                    kl / len(batches), params, create_graph=True, allow_unused=True
                )
                out += flat(
                    torch.autograd.grad(flat(grads).dot(v), params, allow_unused=True)
                ).detach()
            return out

        return per_task

    def evaluate(self, batches: Sequence[TaskBatch]) -> tuple[float, float]:
        """Mean surrogate loss and mean KL over tasks at the current θ, no graph kept."""
        data = self.stacked(batches)
        if data is not None:
            loss, kl = stacked_objective(self, data, create_graph=False)
            return float(loss.detach()), float(kl.detach())
        values = [self._evaluate_task(b) for b in batches]
        n = max(1, len(values))
        return sum(v[0] for v in values) / n, sum(v[1] for v in values) / n

    def _evaluate_task(self, b: TaskBatch) -> tuple[float, float]:
        """`task_objective`'s values without its graph: θ_S by the detached inner steps, D_S in
        chunks of `grad_chunk` samples (image policies: one chunk's activations in memory, as
        in `meta_gradient`)."""
        params = {name: p.detach() for name, p in self.params.items()}
        for data in b.train:
            params = self.adapted_detached(params, data)
        valid, n = b.valid, int(b.valid.advantages.shape[0])
        if n == 0:
            return math.nan, math.nan
        size = self.grad_chunk if self.grad_chunk > 0 else n
        loss_sum, kl_sum = 0.0, 0.0
        with torch.no_grad():
            for start in range(0, n, size):
                part = slice(start, start + size)
                dist_params, dist = self.forward(params, valid.obs[part].to(self.device))
                logp = dist.log_prob(valid.actions[part].to(self.device))
                ratio = (logp - b.old_logp[part].to(logp)).exp()
                adv = valid.advantages[part].to(logp)
                loss_sum -= float(clipped_surrogate(ratio, adv, None).sum())
                old = self.policy.distribution(b.old_dist_params[part].to(dist_params))
                kl_sum += float(kl_divergence(old, dist).sum())
        return loss_sum / n, kl_sum / n


def iteration_seeds(
    seed: int, iteration: int, tasks: int, steps: int
) -> tuple[np.random.Generator, list[list[int]]]:
    """The task-sampling generator and the rollout seeds [task][step] of one meta-iteration:
    functions of (seed, iteration) only, so a resumed run samples exactly what a straight run
    would."""
    ss = np.random.SeedSequence([int(seed), int(iteration)])
    task_ss, roll_ss = ss.spawn(2)
    flat = roll_ss.generate_state(tasks * (steps + 1), dtype=np.uint32)
    seeds = [[int(flat[i * (steps + 1) + j]) for j in range(steps + 1)] for i in range(tasks)]
    return np.random.default_rng(task_ss), seeds
