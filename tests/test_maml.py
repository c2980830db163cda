"""MAML core: the inner step, meta-gradients (second vs first order, finite differences), TRPO's
KL bound. Tiny linear policies on fixed synthetic trajectories, double precision where compared
with finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from meta_train.chunked import chunked_meta_gradient
from meta_train.meta_learner import AdvantageBatch, MetaLearner, TaskBatch
from meta_train.meta_optimizers import TRPO, VPG, conjugate_gradient


class LinearPolicy(nn.Module):
    """π(a|o): a linear Gaussian (mean W·o + b, state-independent log-std) or linear softmax;
    computes in the dtype of its parameters."""

    def __init__(self, obs_dim: int, act: int, kind: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.action_type = kind
        self.pi = nn.Linear(obs_dim, act).to(dtype)
        if kind == "gaussian":
            self.log_std = nn.Parameter(torch.full((act,), -0.3, dtype=dtype))
        self.vf = nn.Linear(obs_dim, 1).to(dtype)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        x = obs.to(self.pi.weight.dtype)
        out = self.pi(x)
        if self.action_type == "gaussian":
            out = torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return out, self.vf(x).squeeze(-1)

    def distribution(self, dist_params: Tensor) -> Distribution:
        if self.action_type == "discrete":
            return Categorical(logits=dist_params)
        mean, log_std = dist_params.chunk(2, dim=-1)
        return Independent(Normal(mean, log_std.exp()), 1)


def make_data(
    kind: str, n: int, obs_dim: int, act: int, seed: int, dtype: torch.dtype = torch.float64
) -> AdvantageBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, obs_dim, generator=g, dtype=dtype)
    if kind == "gaussian":
        actions = torch.randn(n, act, generator=g, dtype=dtype)
    else:
        actions = torch.randint(0, act, (n,), generator=g)
    adv = torch.randn(n, generator=g, dtype=dtype)
    return AdvantageBatch(obs, actions, adv, 0.0)


def make_problem(
    kind: str,
    steps: int = 1,
    first_order: bool = False,
    learn_inner_lr: bool = False,
    lr: float = 0.5,
    seed: int = 0,
) -> tuple[MetaLearner, TaskBatch]:
    torch.manual_seed(seed)
    act = 2 if kind == "gaussian" else 3
    policy = LinearPolicy(3, act, kind, torch.float64)
    learner = MetaLearner(
        policy,
        adapt_steps=steps,
        inner_lr=lr,
        first_order=first_order,
        learn_inner_lr=learn_inner_lr,
    )
    train = [make_data(kind, 8, 3, act, seed + 1 + j) for j in range(steps)]
    valid = make_data(kind, 8, 3, act, seed + 100)
    # "old" = a nearby policy, so the ratio is not identically 1
    old = {k: v.detach() + 0.05 for k, v in learner.params.items()}
    with torch.no_grad():
        logp, dist_params = learner.log_prob(old, valid)
    return learner, TaskBatch({"kind": "test"}, train, valid, logp, dist_params)


def test_inner_step_gaussian_matches_hand_computation() -> None:
    learner, batch = make_problem("gaussian")
    data = batch.train[0]
    W = learner.params["pi.weight"].detach()
    b = learner.params["pi.bias"].detach()
    log_std = learner.params["log_std"].detach()
    var = (2 * log_std).exp()
    mu = data.obs @ W.T + b
    z = (data.actions - mu) / var  # ∂ log π / ∂μ
    A, n = data.advantages, len(data.advantages)
    grad_W = -(A[:, None, None] * z[:, :, None] * data.obs[:, None, :]).sum(0) / n
    grad_b = -(A[:, None] * z).sum(0) / n
    # ∂ log π / ∂ log σ = ((a − μ)/σ)² − 1
    grad_ls = -(A[:, None] * ((data.actions - mu) ** 2 / var - 1)).sum(0) / n
    new = learner.adapted_detached(learner.detached(), data)
    torch.testing.assert_close(new["pi.weight"], W - 0.5 * grad_W)
    torch.testing.assert_close(new["pi.bias"], b - 0.5 * grad_b)
    torch.testing.assert_close(new["log_std"], log_std - 0.5 * grad_ls)
    assert "vf.weight" not in new  # the value head is not adapted


def test_inner_step_categorical_matches_hand_computation() -> None:
    learner, batch = make_problem("discrete")
    data = batch.train[0]
    W = learner.params["pi.weight"].detach()
    b = learner.params["pi.bias"].detach()
    probs = torch.softmax(data.obs @ W.T + b, dim=-1)
    dlogits = nn.functional.one_hot(data.actions, 3).double() - probs
    A, n = data.advantages, len(data.advantages)
    grad_W = -(A[:, None, None] * dlogits[:, :, None] * data.obs[:, None, :]).sum(0) / n
    grad_b = -(A[:, None] * dlogits).sum(0) / n
    new = learner.adapted_detached(learner.detached(), data)
    torch.testing.assert_close(new["pi.weight"], W - 0.5 * grad_W)
    torch.testing.assert_close(new["pi.bias"], b - 0.5 * grad_b)


def _meta_grad(learner: MetaLearner, batch: TaskBatch) -> list[Tensor]:
    loss, _ = learner.task_objective(batch)
    return list(torch.autograd.grad(loss, learner.meta_parameters()))


def _finite_difference(learner: MetaLearner, batch: TaskBatch, eps: float = 1e-6) -> list[Tensor]:
    out = []
    for p in learner.meta_parameters():
        g = torch.zeros_like(p)
        flat_p, flat_g = p.data.view(-1), g.view(-1)
        for i in range(p.numel()):
            orig = float(flat_p[i])
            flat_p[i] = orig + eps
            up = float(learner.task_objective(batch, create_graph=False)[0].detach())
            flat_p[i] = orig - eps
            down = float(learner.task_objective(batch, create_graph=False)[0].detach())
            flat_p[i] = orig
            flat_g[i] = (up - down) / (2 * eps)
        out.append(g)
    return out


@pytest.mark.parametrize(
    "kind,steps,learn_lr", [("gaussian", 1, False), ("discrete", 2, False), ("gaussian", 2, True)]
)
def test_second_order_meta_gradient_matches_finite_differences(
    kind: str, steps: int, learn_lr: bool
) -> None:
    learner, batch = make_problem(kind, steps=steps, learn_inner_lr=learn_lr)
    analytic = _meta_grad(learner, batch)
    numeric = _finite_difference(learner, batch)
    for a, f in zip(analytic, numeric, strict=True):
        torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-7)


def test_first_order_drops_the_second_order_term() -> None:
    second, batch = make_problem("gaussian")
    first, _ = make_problem("gaussian", first_order=True)
    g2, g1 = _meta_grad(second, batch), _meta_grad(first, batch)
    assert max(float((a - b).abs().max()) for a, b in zip(g1, g2, strict=True)) > 1e-4
    # first order = ∇ of the post-update loss at θ' with θ' taken as a constant
    adapted = first.adapted_detached(first.detached(), batch.train[0])
    leaves = {k: v.clone().requires_grad_(True) for k, v in adapted.items()}
    loss, _ = _post_loss(first, batch, leaves)
    expected = torch.autograd.grad(loss, list(leaves.values()))
    for a, b in zip(g1, expected, strict=True):
        torch.testing.assert_close(a, b)


def _post_loss(
    learner: MetaLearner, batch: TaskBatch, adapted: dict[str, Tensor]
) -> tuple[Tensor, None]:
    logp, _ = learner.log_prob(adapted, batch.valid)
    ratio = (logp - batch.old_logp).exp()
    return -(ratio * batch.valid.advantages).mean(), None


def test_task_by_task_accumulation_equals_joint_gradient() -> None:
    learner, b1 = make_problem("gaussian", seed=0)
    _, b2 = make_problem("gaussian", seed=7)
    opt = VPG(learner, lr=0.0)
    opt.optimizer.zero_grad()
    for b in (b1, b2):
        (learner.task_objective(b)[0] / 2).backward()
    accumulated = [p.grad.clone() for p in learner.meta_parameters()]  # type: ignore[union-attr]
    joint = (learner.task_objective(b1)[0] + learner.task_objective(b2)[0]) / 2
    for a, g in zip(
        accumulated, torch.autograd.grad(joint, learner.meta_parameters()), strict=True
    ):
        torch.testing.assert_close(a, g)


def test_conjugate_gradient_solves_spd_system() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 5, generator=g, dtype=torch.float64)
    h = m @ m.T + 5 * torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: h @ v, b, iters=10)
    torch.testing.assert_close(h @ x, b)


def test_trpo_hvp_matches_finite_differences_of_kl_gradient() -> None:
    learner, batch = make_problem("gaussian")
    trpo = TRPO(learner, cg_damping=0.0)
    params = learner.meta_parameters()
    v = torch.randn(
        sum(p.numel() for p in params),
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(3),
    )
    hv = trpo.hvp([batch], v)

    def kl_grad() -> Tensor:
        kl = learner.task_objective(batch)[1]
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, params)])

    from meta_train.meta_optimizers import assign_flat, flat

    base = flat([p.detach() for p in params], params).clone()
    eps = 1e-6
    assign_flat(params, base + eps * v)
    up = kl_grad()
    assign_flat(params, base - eps * v)
    down = kl_grad()
    assign_flat(params, base)
    torch.testing.assert_close(hv, (up - down) / (2 * eps), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", ["gaussian", "discrete"])
def test_trpo_step_respects_kl_bound(kind: str) -> None:
    learner, batch = make_problem(kind)
    # make π_old the current θ_S (as at sampling time), so KL starts at 0
    adapted = learner.adapted_detached(learner.detached(), batch.train[0])
    with torch.no_grad():
        batch.old_logp, batch.old_dist_params = learner.log_prob(adapted, batch.valid)
    max_kl = 1e-3
    trpo = TRPO(learner, max_kl=max_kl)
    before = [p.detach().clone() for p in learner.meta_parameters()]
    info = trpo.step([batch])
    loss, kl = learner.evaluate([batch])
    assert kl <= max_kl + 1e-12
    assert math.isclose(kl, info["kl"], rel_tol=1e-9, abs_tol=1e-12)
    moved = any(
        not torch.equal(a, p) for a, p in zip(before, learner.meta_parameters(), strict=True)
    )
    assert info["ls_steps"] >= 0, info  # a step was taken (a TRPO that never moves fails here)
    assert moved and loss < info["loss_before"]
    assert kl > 0.1 * max_kl  # the step is scaled to the bound, not timid
    # a line search that finds no step within its tries leaves θ where it was: from the same
    # θ, allowed only the full step, which the search above rejected (its KL over the bound:
    # 3.9e-3 gaussian, 1.02e-3 discrete, a thin margin that other CG settings could flip)
    assert info["ls_steps"] >= 1
    with torch.no_grad():
        for p, b in zip(learner.meta_parameters(), before, strict=True):
            p.copy_(b)
    assert TRPO(learner, max_kl=max_kl, ls_max_steps=1).step([batch])["ls_steps"] == -1
    assert all(torch.equal(a, p) for a, p in zip(before, learner.meta_parameters(), strict=True))


@pytest.mark.parametrize("target_kl,epochs", [(None, 5), (1e3, 5), (1e-12, 1)])
def test_meta_ppo_stops_its_epochs_past_the_target_kl(target_kl: float | None, epochs: int) -> None:
    """With target_kl, the Adam epochs stop once the post-update KL passes 1.5 × target_kl:
    after the first epoch for a tiny target, never for a huge one or none."""
    from meta_train.meta_optimizers import MetaPPO

    learner, batch = make_problem("gaussian")
    adapted = learner.adapted_detached(learner.detached(), batch.train[0])
    with torch.no_grad():  # π_old = the current θ_S, so the KL starts at 0 and grows
        batch.old_logp, batch.old_dist_params = learner.log_prob(adapted, batch.valid)
    ppo = MetaPPO(learner, lr=1e-2, epochs=5, target_kl=target_kl)
    info = ppo.step([batch])
    assert info["epochs"] == epochs and info["kl"] > 0
    adam_steps = {int(v["step"]) for v in ppo.optimizer.state_dict()["state"].values()}
    assert adam_steps == {epochs}


@pytest.mark.parametrize(
    "kind,steps,first_order,learn_lr,clip",
    [
        ("gaussian", 1, False, False, None),
        ("discrete", 2, False, True, None),
        ("gaussian", 2, False, True, 0.2),
        ("gaussian", 2, True, True, None),
    ],
)
def test_chunked_meta_gradient_equals_autograd(
    kind: str, steps: int, first_order: bool, learn_lr: bool, clip: float | None
) -> None:
    learner, batch = make_problem(
        kind, steps=steps, first_order=first_order, learn_inner_lr=learn_lr
    )
    loss, _ = learner.task_objective(batch, clip=clip)
    expected = torch.autograd.grad(loss, learner.meta_parameters(), allow_unused=True)
    learner.grad_chunk = 3  # 8 samples: chunks of 3, 3, 2
    value, grads = chunked_meta_gradient(learner, batch, clip=clip)
    assert value == pytest.approx(float(loss.detach()), rel=1e-12)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e if e is not None else torch.zeros_like(g))


@pytest.mark.parametrize(
    "kind,steps,learn_lr", [("gaussian", 1, False), ("discrete", 2, True), ("gaussian", 2, True)]
)
def test_chunked_evaluate_equals_the_objective_it_stands_for(
    kind: str, steps: int, learn_lr: bool
) -> None:
    """The task-by-task `evaluate` (TRPO's line search, PPO's KL check) gives
    `task_objective`'s values from detached inner steps and D_S in chunks, without the whole
    task's graph."""
    learner, batch = make_problem(kind, steps=steps, learn_inner_lr=learn_lr)
    loss, kl = learner.task_objective(batch)
    learner.grad_chunk = 3  # 8 samples: chunks of 3, 3, 2; no stacking
    sizes: list[int] = []
    learner.policy.register_forward_hook(lambda m, args, out: sizes.append(len(args[0])))
    assert learner.evaluate([batch, batch]) == (
        pytest.approx(float(loss.detach()), rel=1e-12),
        pytest.approx(float(kl.detach()), rel=1e-10),
    )
    assert sizes and max(sizes) == 3, sizes  # never a whole task's 8 samples at once


def _hand_inner_loss(kind: str, p: dict[str, Tensor], data: AdvantageBatch) -> Tensor:
    """−mean(log π(a|o) · Â) written out for the linear policies (no module, no functional_call)."""
    out = data.obs @ p["pi.weight"].T + p["pi.bias"]
    if kind == "discrete":
        logp = torch.log_softmax(out, dim=-1).gather(1, data.actions[:, None]).squeeze(1)
    else:
        log_std = p["log_std"]
        z = (data.actions - out) / log_std.exp()
        logp = (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    return -(logp * data.advantages).mean()


def _hand_sgd(
    kind: str, p: dict[str, Tensor], data: AdvantageBatch, lr: float
) -> dict[str, Tensor]:
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
    grads = torch.autograd.grad(_hand_inner_loss(kind, leaves, data), list(leaves.values()))
    return {k: v.detach() - lr * g for (k, v), g in zip(leaves.items(), grads, strict=True)}


@pytest.mark.parametrize(
    "kind,steps,inner_epochs,grad_chunk",
    [("gaussian", 1, 1, 0), ("discrete", 2, 2, 3), ("discrete", 1, 0, 0)],
)
def test_reptile_update_is_theta_plus_eps_mean_of_phi_minus_theta(
    kind: str, steps: int, inner_epochs: int, grad_chunk: int
) -> None:
    from meta_train.meta_optimizers import Reptile

    alpha, eps = 0.3, 0.7
    learner, b1 = make_problem(kind, steps=steps, lr=alpha, seed=0)
    _, b2 = make_problem(kind, steps=steps, lr=alpha, seed=11)  # a second task's data
    learner.grad_chunk = grad_chunk  # chunked inner gradients: the same steps
    theta = {k: v.detach().clone() for k, v in learner.params.items()}
    phis = []
    for b in (b1, b2):
        phi = theta
        for data in b.train:  # the inner steps collect took on D_0..D_{S-1}
            phi = _hand_sgd(kind, phi, data, alpha)
        for _ in range(inner_epochs):  # and the extra SGD steps on D_S
            phi = _hand_sgd(kind, phi, b.valid, alpha)
        phis.append(phi)
    info = Reptile(learner, lr=eps, inner_epochs=inner_epochs).step([b1, b2])
    for k, v in learner.params.items():
        expected = theta[k] + eps * ((phis[0][k] - theta[k]) + (phis[1][k] - theta[k])) / 2
        torch.testing.assert_close(v.detach(), expected, rtol=1e-10, atol=1e-12)
    assert math.isfinite(info["loss_after"]) and info["kl"] >= 0
    assert "vf.weight" not in learner.params  # the value head is not meta-learned


def test_reptile_refuses_a_learned_step_size() -> None:
    from meta_train.meta_optimizers import Reptile

    learner, _ = make_problem("gaussian", learn_inner_lr=True)
    with pytest.raises(ValueError, match="learn_inner_lr"):
        Reptile(learner)
