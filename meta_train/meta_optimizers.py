"""Meta-optimizers: VPG (Adam), TRPO and PPO on the post-update objective of a meta-batch, and
Reptile (first order, no post-update objective at all).

VPG, TRPO and PPO take the meta-gradient from `MetaLearner.meta_gradient` (stacked, task by
task or in chunks: its choice, not theirs) and TRPO's Hessian-vector products of the mean KL from
`MetaLearner.kl_hvp`. VPG is PPO with one epoch and no clip.

Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms"), here on
the MAML data of a meta-iteration: for each task i, start from θ, take the task's S inner steps
on D_0..D_{S−1} (the same REINFORCE steps with step size α that `MetaLearner.collect` took to
sample), then `inner_epochs` more SGD steps of the same inner loss on D_S, giving φ_i; then

    θ ← θ + ε · mean_i(φ_i − θ)                       ε: reptile.lr

No second-order graph and no post-update surrogate: each task needs only first-order inner
gradients (in chunks of `grad_chunk` samples when set), one task at a time, so peak memory is
one inner step's graph. With ε = 1 and one task this is plain sequential SGD on that task; a
smaller ε moves θ toward the tasks' adapted parameters. α stays fixed (Reptile cannot learn it).
The metrics: loss_before is the post-update surrogate at the old θ (its ratio is 1, so it is
−mean(Â) ≈ 0, as for the other optimizers); loss_after and kl are the post-update surrogate and
mean KL(old post-update ‖ new post-update) after the step, as VPG reports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from meta_train.configs import META_OPTIMIZERS
from meta_train.meta_learner import MetaLearner, TaskBatch


def flat(tensors: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    return torch.cat(
        [
            (t if t is not None else torch.zeros_like(p)).reshape(-1)
            for t, p in zip(tensors, like, strict=True)
        ]
    )


def assign_flat(params: Sequence[Tensor], vector: Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vector[offset : offset + n].view_as(p))
            offset += n


def conjugate_gradient(
    hvp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, tol: float = 1e-10
) -> Tensor:
    """Solve H x = b for symmetric positive-definite H given only products H·v."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        hp = hvp(p)
        alpha = rr / p.dot(hp)
        x += alpha * p
        r -= alpha * hp
        rr_new = r.dot(r)
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def adam_step(
    optimizer: torch.optim.Optimizer,
    learner: MetaLearner,
    batches: Sequence[TaskBatch],
    clip: float | None = None,
) -> float:
    """One optimizer step on the meta-gradient of the mean post-update loss; returns the loss."""
    loss, grads = learner.meta_gradient(batches, clip)
    for p, g in zip(learner.meta_parameters(), grads, strict=True):
        p.grad = g
    optimizer.step()
    return loss


class MetaPPO:
    """The surrogate (PPO's clipped one with `clip`) on the post-update trajectories, `epochs`
    Adam steps over the whole meta-batch; every epoch re-runs the differentiable inner steps
    from the current θ. With `target_kl`, the epochs stop once the post-update policies' mean
    KL to the sampling ones passes 1.5 × target_kl (CleanRL's early stop)."""

    name = "ppo"

    def __init__(
        self,
        learner: MetaLearner,
        lr: float = 3e-4,
        epochs: int = 5,
        clip: float | None = 0.2,
        target_kl: float | None = None,
    ) -> None:
        self.learner = learner
        self.epochs = int(epochs)
        self.clip = None if clip is None else float(clip)
        self.target_kl = None if target_kl is None else float(target_kl)
        self.optimizer = torch.optim.Adam(learner.meta_parameters(), lr=lr)

    def step(self, batches: Sequence[TaskBatch]) -> dict[str, float]:
        first, done = math.nan, 0
        for epoch in range(self.epochs):
            loss = adam_step(self.optimizer, self.learner, batches, self.clip)
            first, done = (loss if epoch == 0 else first), epoch + 1
            if self.target_kl is not None and done < self.epochs:
                if self.learner.evaluate(batches)[1] > 1.5 * self.target_kl:
                    break
        loss_after, kl = self.learner.evaluate(batches)
        return {"loss_before": first, "loss_after": loss_after, "kl": kl, "epochs": done}

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


class VPG(MetaPPO):
    """Adam on the gradient of the post-update surrogate (garage's MAML-VPG): PPO with one
    epoch and no clip."""

    name = "vpg"

    def __init__(self, learner: MetaLearner, lr: float = 1e-3) -> None:
        super().__init__(learner, lr=lr, epochs=1, clip=None)


class TRPO:
    """Natural-gradient step on the post-update surrogate under a mean-KL bound (Finn's MAML).

    g = ∇ L_outer summed task by task; H·v = ∇(∇KL · v) + damping·v summed task by task, exact
    (through the inner steps); x = CG(H, g, 10 iterations); the full step −x·sqrt(2·max_kl /
    xᵀHx) is backtracked by 0.8 up to 15 times and taken only if the loss improves and the mean
    KL stays within max_kl; otherwise θ is left unchanged.
    """

    name = "trpo"

    def __init__(
        self,
        learner: MetaLearner,
        max_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        ls_ratio: float = 0.8,
        ls_max_steps: int = 15,
    ) -> None:
        self.learner = learner
        self.max_kl, self.cg_iters = float(max_kl), int(cg_iters)
        self.cg_damping = float(cg_damping)
        self.ls_ratio, self.ls_max_steps = float(ls_ratio), int(ls_max_steps)

    def gradient(self, batches: Sequence[TaskBatch]) -> tuple[Tensor, float]:
        params = self.learner.meta_parameters()
        loss, grads = self.learner.meta_gradient(batches)
        return flat(grads, params), loss

    def hvp(self, batches: Sequence[TaskBatch], v: Tensor) -> Tensor:
        """(H + damping·I)·v, H the Hessian of the mean-over-tasks KL (exact at any θ)."""
        return self.learner.kl_hvp(batches)(v) + self.cg_damping * v

    def step(self, batches: Sequence[TaskBatch]) -> dict[str, float]:
        params = self.learner.meta_parameters()
        g, loss_before = self.gradient(batches)
        kl_hvp = self.learner.kl_hvp(batches, at_sampling=True)  # built once, used by all

        def hvp(v: Tensor) -> Tensor:
            return kl_hvp(v) + self.cg_damping * v

        x = conjugate_gradient(hvp, g, self.cg_iters)
        shs = 0.5 * x.dot(hvp(x))
        old = flat([p.detach() for p in params], params).clone()
        info = {"loss_before": loss_before, "loss_after": loss_before, "kl": 0.0, "ls_steps": -1.0}
        if not torch.isfinite(shs) or shs <= 0:
            return info
        full_step = -x * torch.sqrt(self.max_kl / shs)
        for i in range(self.ls_max_steps):
            assign_flat(params, old + self.ls_ratio**i * full_step)
            loss, kl = self.learner.evaluate(batches)
            if loss < loss_before and kl <= self.max_kl:
                info.update(loss_after=loss, kl=kl, ls_steps=float(i))
                return info
        assign_flat(params, old)
        return info

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Reptile:
    """θ ← θ + ε · mean_tasks(φ − θ), φ: θ after the task's inner steps on D_0..D_{S−1} and
    `inner_epochs` more on D_S (see the module docstring)."""

    name = "reptile"

    def __init__(self, learner: MetaLearner, lr: float = 0.1, inner_epochs: int = 1) -> None:
        if learner.learn_inner_lr:
            raise ValueError("reptile does not learn the inner step size: set learn_inner_lr=false")
        if inner_epochs < 0:
            raise ValueError(f"reptile.inner_epochs must be ≥ 0, got {inner_epochs}")
        self.learner = learner
        self.lr, self.inner_epochs = float(lr), int(inner_epochs)

    def adapted(self, batch: TaskBatch) -> dict[str, Tensor]:
        """φ of one task, detached."""
        phi = self.learner.detached()
        for data in batch.train:
            phi = self.learner.adapted_detached(phi, data)
        for _ in range(self.inner_epochs):
            phi = self.learner.adapted_detached(phi, batch.valid)
        return phi

    def step(self, batches: Sequence[TaskBatch]) -> dict[str, float]:
        n = len(batches)
        theta = self.learner.detached()
        delta = {k: torch.zeros_like(v) for k, v in theta.items()}
        for b in batches:
            phi = self.adapted(b)
            for k in delta:
                delta[k] += (phi[k] - theta[k]) / n
        loss_before = sum(-float(b.valid.advantages.double().mean()) for b in batches) / n
        with torch.no_grad():
            for k, p in self.learner.params.items():
                p.add_(delta[k], alpha=self.lr)
        loss_after, kl = self.learner.evaluate(batches)
        squares = sum(
            ((d.double() ** 2).sum() for d in delta.values()), torch.zeros((), dtype=torch.float64)
        )
        step_norm = float(torch.sqrt(squares))
        return {
            "loss_before": loss_before,
            "loss_after": loss_after,
            "kl": kl,
            "step_norm": self.lr * step_norm,
        }

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def make_meta_optimizer(
    name: str, learner: MetaLearner, cfg: dict[str, Any]
) -> VPG | MetaPPO | TRPO | Reptile:
    if name == "vpg":
        return VPG(learner, lr=float(cfg["vpg"]["lr"]))
    if name == "ppo":
        c = cfg["ppo"]
        target_kl = c.get("target_kl")
        return MetaPPO(
            learner,
            lr=float(c["lr"]),
            epochs=int(c["epochs"]),
            clip=float(c["clip"]),
            target_kl=None if target_kl is None else float(target_kl),
        )
    if name == "trpo":
        c = cfg["trpo"]
        return TRPO(
            learner,
            max_kl=float(c["max_kl"]),
            cg_iters=int(c["cg_iters"]),
            cg_damping=float(c["cg_damping"]),
            ls_ratio=float(c["ls_ratio"]),
            ls_max_steps=int(c["ls_max_steps"]),
        )
    if name == "reptile":
        c = cfg.get("reptile", {})
        return Reptile(
            learner, lr=float(c.get("lr", 0.1)), inner_epochs=int(c.get("inner_epochs", 1))
        )
    raise ValueError(f"unknown meta-optimizer {name!r}: {', '.join(META_OPTIMIZERS)}")
