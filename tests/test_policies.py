"""Policies: shapes, baselines' init, functional_call with other parameters, specs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.func import functional_call

from agent.policies import (
    NatureCNN,
    build_policy,
    check_policy_fits,
    spec_for_spaces,
    spec_from_config,
)

CNN_SPEC = {"body": "cnn", "obs_shape": [4, 84, 84], "action": {"type": "discrete", "n": 7}}
MLP_SPEC = {
    "body": "mlp",
    "obs_shape": [17],
    "hidden": [100, 100],
    "activation": "relu",
    "action": {"type": "gaussian", "dim": 6, "init_std": 1.0},
}


def test_nature_cnn_architecture_and_uint8_input() -> None:
    torch.manual_seed(0)
    cnn = NatureCNN((4, 84, 84))
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (8, 8), (4, 4)),
        (64, (4, 4), (2, 2)),
        (64, (3, 3), (1, 1)),
    ]
    fc = cnn.fc[0]
    assert (fc.in_features, fc.out_features) == (64 * 7 * 7, 512)
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    # scaling by 1/255 happens inside forward: uint8 and float 0..255 give the same features
    assert torch.allclose(cnn(frames), cnn(frames.float()))
    assert cnn(frames).shape == (3, 512)


def test_discrete_actor_critic_outputs_and_init() -> None:
    torch.manual_seed(0)
    policy = build_policy(CNN_SPEC)
    obs = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    logits, value = policy(obs)
    assert logits.shape == (5, 7) and value.shape == (5,)
    # orthogonal init: rows of W Wᵀ = gain² I for a wide matrix (policy head 0.01, value 1)
    w = policy.pi.weight
    assert torch.allclose(w @ w.T, 0.01**2 * torch.eye(7), atol=1e-7)
    v = policy.vf.weight
    assert torch.allclose(v @ v.T, torch.ones(1, 1), atol=1e-5)
    assert float(policy.pi.bias.detach().abs().sum()) == 0.0
    # nearly uniform initial policy (small policy-head gain)
    assert float(logits.detach().abs().max()) < 0.1
    action, logp, val = policy.act(obs)
    assert action.shape == (5,) and logp.shape == (5,) and torch.equal(val, value.detach())


def test_gaussian_head_has_state_independent_log_std() -> None:
    torch.manual_seed(0)
    policy = build_policy(MLP_SPEC)
    obs = torch.randn(4, 17)
    params, value = policy(obs)
    assert params.shape == (4, 12) and value.shape == (4,)
    dist = policy.distribution(params)
    assert torch.allclose(dist.stddev, torch.ones(4, 6))  # init std 1
    action = dist.sample()
    assert dist.log_prob(action).shape == (4,)
    body = [m for m in policy.body.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in body] == [100, 100]
    assert isinstance(policy.log_std, torch.nn.Parameter)


@pytest.mark.parametrize("spec", [CNN_SPEC, MLP_SPEC], ids=["cnn", "mlp"])
def test_functional_call_with_other_parameters(spec: dict) -> None:
    torch.manual_seed(0)
    policy = build_policy(spec)
    shape = spec["obs_shape"]
    obs = (
        torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
        if spec["body"] == "cnn"
        else torch.randn(3, *shape)
    )
    own = dict(policy.named_parameters())
    out_own = functional_call(policy, own, (obs,))
    out_fwd = policy(obs)
    assert all(torch.equal(a, b) for a, b in zip(out_own, out_fwd, strict=True))

    # an adapted parameter set (MAML's θ' = θ − α∇L) changes the outputs, and is differentiable
    dist_params, value = policy(obs)
    dist = policy.distribution(dist_params)
    loss = -(dist.log_prob(dist.sample()).mean() + value.mean())
    grads = torch.autograd.grad(loss, list(own.values()), create_graph=True)
    adapted = {k: p - 0.5 * g for (k, p), g in zip(own.items(), grads, strict=True)}
    new_params, new_value = functional_call(policy, adapted, (obs,))
    assert not torch.allclose(new_params, out_fwd[0])
    assert not torch.allclose(new_value, out_fwd[1])
    # second order: the adapted output's gradient reaches the original parameters
    meta_grad = torch.autograd.grad(new_value.sum(), list(own.values()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in meta_grad)
    # the module's own parameters are untouched
    assert all(torch.equal(a, b) for a, b in zip(policy(obs), out_fwd, strict=True))


def test_gaussian_log_std_is_a_plugged_in_parameter() -> None:
    policy = build_policy(MLP_SPEC)
    params = {k: v.detach().clone() for k, v in policy.named_parameters()}
    params["log_std"] = torch.full((6,), math.log(0.5))
    out, _ = functional_call(policy, params, (torch.randn(2, 17),))
    assert torch.allclose(policy.distribution(out).stddev, torch.full((2, 6), 0.5))


def test_specs_from_spaces_and_config() -> None:
    frames = spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
    spec = spec_from_config({"body": "auto", "features": 256}, frames, spaces.Discrete(7))
    assert spec == {
        "body": "cnn",
        "obs_shape": [4, 84, 84],
        "features": 256,
        "action": {"type": "discrete", "n": 7},
    }
    assert build_policy(spec).body.out_features == 256
    vec = spaces.Box(-np.inf, np.inf, (17,), dtype=np.float32)
    spec = spec_for_spaces(vec, spaces.Box(-1, 1, (6,), dtype=np.float32))
    assert spec["body"] == "mlp" and spec["action"]["type"] == "gaussian"
    small = spaces.Box(0, 255, (42, 42), dtype=np.uint8)
    spec = spec_from_config({"body": "auto", "hidden": [64]}, small, spaces.Discrete(3))
    assert spec["body"] == "mlp" and spec["obs_scale"] == pytest.approx(1 / 255)
    assert check_policy_fits(CNN_SPEC, frames, spaces.Discrete(7)) is None
    assert "actions" in str(check_policy_fits(CNN_SPEC, frames, spaces.Discrete(18)))
    assert "observations" in str(check_policy_fits(CNN_SPEC, small, spaces.Discrete(7)))
