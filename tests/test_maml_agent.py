"""`python -m agent.maml`: MAML fast adaptation, through the real contest server on Airstriker
(ROM-free), with a tiny MAML checkpoint made here; and its pieces on a real local emulator."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agent.checkpoint import load_checkpoint, save_checkpoint
from agent.learners.adaptation import inner_step, inner_step_chunked, policy_parameters
from agent.learners.linear_baseline import advantages
from agent.maml import (
    ADAPTATION_FIELDS,
    AdaptationConfig,
    adaptation_step,
    agent_env,
    make_config,
    parse_args,
)
from agent.policies import build_policy, spec_for_spaces
from evaluation.contest.runner import RunSpec, run_one
from roms_setup.levels import Level

ROOT = Path(__file__).resolve().parents[1]
AIRSTRIKER = "Airstriker-Genesis-v0:Level1"
LEVEL = Level.parse(AIRSTRIKER)
SMALL_PPO = [
    "--set",
    "nsteps=32",
    "--set",
    "nminibatches=2",
    "--set",
    "noptepochs=1",
    "--set",
    "tensorboard=false",
]
# Airstriker pays its first points ~40 steps in, then every 10 to 200 steps: 2 trajectories of 64
# steps give each inner step some reward (on all-zero rewards the advantages are zero: no change).
ADAPTATION = {
    "adapt_steps": 2,
    "trajectories": 2,
    "horizon": 64,
    "inner_lr": 0.5,
    "gamma": 0.99,
    "gae_lambda": 1.0,
    "baseline_ridge": 1e-5,
    "discretizer": "auto",
    "backtracking": True,
    "reward_scale": 0.01,
}
OBS = spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
ACTIONS = spaces.Discrete(7)  # Airstriker is Genesis: the 7 Sonic combos


def small_policy(seed: int = 0):
    torch.manual_seed(seed)
    return build_policy({**spec_for_spaces(OBS, ACTIONS), "features": 64})


def maml_checkpoint(path: Path, adaptation: dict[str, Any] | None = None) -> Path:
    policy = small_policy()
    lr = float((adaptation or ADAPTATION)["inner_lr"])
    return save_checkpoint(
        path,
        policy,
        config={"task": {"kind": "levels"}},
        extra={
            "maml_format": "maml/1",
            "adaptation": dict(adaptation or ADAPTATION),
            "step_sizes": {"learned": False, "value": lr, "per_parameter": {}},
        },
    )


def adaptation_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- pieces -----------------------------------------------------------------------------------


def test_maml_agent_imports_neither_stable_retro_nor_meta_train() -> None:
    code = (
        "import sys, agent.maml; "
        "print(sorted(m for m in ('stable_retro', 'meta_train', 'retro') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_inner_step_chunked_equals_inner_step() -> None:
    policy = small_policy()
    g = torch.Generator().manual_seed(1)
    obs = torch.randint(0, 256, (10, 4, 84, 84), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, 7, (10,), generator=g)
    adv = torch.randn(10, generator=g)
    params = {n: p.detach().requires_grad_(True) for n, p in policy_parameters(policy).items()}
    sizes = {n: torch.full_like(p, 0.3) for n, p in params.items() if n.startswith("pi.")}
    for step_sizes in (None, sizes):
        whole = inner_step(policy, params, obs, actions, adv, step_sizes, lr=0.7)
        parts = inner_step_chunked(policy, params, obs, actions, adv, step_sizes, lr=0.7, chunk=3)
        same = inner_step_chunked(policy, params, obs, actions, adv, step_sizes, lr=0.7, chunk=10)
        for n in params:
            assert torch.equal(same[n], whole[n]), n  # one chunk: inner_step itself
            torch.testing.assert_close(parts[n], whole[n], rtol=1e-5, atol=1e-7)
        assert any(not torch.equal(whole[n], params[n]) for n in params)


def test_settings_take_the_checkpoint_then_the_overrides(tmp_path: Path) -> None:
    data = {
        "adaptation": ADAPTATION,
        "step_sizes": {
            "learned": True,
            "value": 0.5,
            "per_parameter": {"pi.bias": torch.full((7,), 0.2)},
        },
    }
    cfg = make_config(parse_args([]))
    s = AdaptationConfig.from_checkpoint(data, cfg)
    assert (s.adapt_steps, s.trajectories, s.horizon, s.lr) == (2, 2, 64, 0.5)
    assert s.step_sizes is not None and torch.equal(s.step_sizes["pi.bias"], torch.full((7,), 0.2))
    cfg = make_config(
        parse_args(["--adapt-steps", "3", "--inner-lr", "0.05", "--set", "horizon=8"])
    )
    s = AdaptationConfig.from_checkpoint(data, cfg)
    assert (s.adapt_steps, s.trajectories, s.horizon, s.lr, s.step_sizes) == (3, 2, 8, 0.05, None)


def test_collection_and_inner_step_are_the_inner_step_on_the_recorded_data(closing) -> None:
    """The agent's adaptation step gives exactly agent.learners.adaptation.inner_step's θ' on
    the data it recorded, episode ends included (50-step episodes: two end within 3×40 steps)."""
    from evaluation.contest.env import make_contest_env

    settings = AdaptationConfig(
        adapt_steps=1,
        trajectories=3,
        horizon=40,
        gamma=0.99,
        gae_lambda=0.95,
        ridge=1e-5,
        lr=0.5,
        step_sizes=None,
    )
    raw = closing(make_contest_env(AIRSTRIKER, seed=0, max_episode_steps=50))
    env, counter = agent_env(raw, ADAPTATION)
    policy = small_policy()
    params = {n: p.detach().clone() for n, p in policy_parameters(policy).items()}
    torch.manual_seed(3)
    new, traj = adaptation_step(env, counter, policy, params, settings, torch.device("cpu"))

    assert traj.obs.shape == (40, 3, 4, 84, 84) and traj.obs.dtype == np.uint8
    assert traj.dones.sum() == 2 and traj.rewards.any()
    assert counter.timesteps == 1 + 120 + 2  # one reset per ended episode, no reset in between
    obs = torch.from_numpy(traj.obs)
    rewards = torch.from_numpy(traj.rewards)
    flat_obs = obs.reshape(120, 4, 84, 84)
    flat_actions = torch.from_numpy(traj.actions).reshape(120)

    def expected(dones: torch.Tensor | None) -> dict[str, torch.Tensor]:
        adv = advantages(obs, rewards, 0.99, 0.95, 1e-5, dones=dones).reshape(120)
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        return inner_step(policy, leaves, flat_obs, flat_actions, adv, None, lr=0.5)

    want = expected(torch.from_numpy(traj.dones))
    for n in params:
        assert torch.equal(new[n], want[n]), n
    ignoring_dones = expected(None)
    assert any(not torch.equal(new[n], ignoring_dones[n]) for n in params)
    assert any(not torch.equal(new[n], params[n]) for n in params)


def test_checkpoint_without_adaptation_is_a_one_line_error(tmp_path: Path) -> None:
    plain = save_checkpoint(tmp_path / "ppo.pt", small_policy())
    proc = subprocess.run(
        [sys.executable, "-m", "agent.maml", "--checkpoint", str(plain)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "adaptation" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# --- real contest runs ------------------------------------------------------------------------


@pytest.mark.slow
def test_maml_adapts_then_learns_with_ppo_until_the_budget(tmp_path: Path) -> None:
    ckpt = maml_checkpoint(tmp_path / "maml.pt")
    results = run_one(
        RunSpec(
            agent="maml",
            level=LEVEL,
            seed=1,
            budget=330,
            results_dir=tmp_path / "run",
            agent_args=["--checkpoint", str(ckpt), *SMALL_PPO],
        )
    )
    log = (tmp_path / "run" / "agent.log").read_text()
    assert results["status"] == "budget", log
    assert results["agent_exit_code"] == 0 and results["timesteps"] == 330, log
    assert "budget spent during PPO after adaptation" in log, log
    rows = adaptation_rows(tmp_path / "run" / "agent" / "adaptation.csv")
    assert [r["step"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == list(ADAPTATION_FIELDS)
    assert all(float(r["param_change"]) > 0 for r in rows), rows
    assert int(rows[0]["steps"]) == 1 + 128 and int(rows[1]["steps"]) == 1 + 256  # no done
    final = load_checkpoint(tmp_path / "run" / "agent" / "checkpoint.pt")
    initial = load_checkpoint(ckpt)
    assert final["adapted_from"] == str(ckpt) and final["adapt_steps_done"] == 2
    assert final["updates"] >= 1 and final["timesteps"] == 330
    changed = [
        k
        for k, v in initial["policy_state"].items()
        if not torch.equal(v, final["policy_state"][k])
    ]
    assert any(k.startswith("pi.") for k in changed) and "vf.weight" in changed
    progress = (tmp_path / "run" / "agent" / "learning.csv").read_text().splitlines()
    assert len(progress) - 1 == final["updates"]


@pytest.mark.slow
def test_maml_act_mode_acts_until_the_budget(tmp_path: Path) -> None:
    ckpt = maml_checkpoint(tmp_path / "maml.pt")
    results = run_one(
        RunSpec(
            agent="maml",
            level=LEVEL,
            seed=2,
            budget=200,
            results_dir=tmp_path / "run",
            agent_args=[
                "--checkpoint",
                str(ckpt),
                "--adapt-steps",
                "1",
                "--set",
                "after_adaptation=act",
            ],
        )
    )
    log = (tmp_path / "run" / "agent.log").read_text()
    assert results["status"] == "budget" and results["agent_exit_code"] == 0, log
    assert results["timesteps"] == 200
    assert "budget spent while acting with the adapted policy" in log, log
    assert len(adaptation_rows(tmp_path / "run" / "agent" / "adaptation.csv")) == 1
    final = load_checkpoint(tmp_path / "run" / "agent" / "checkpoint.pt")
    assert final["updates"] == 0 and final["adapt_steps_done"] == 1
    initial = load_checkpoint(ckpt)
    assert torch.equal(final["policy_state"]["vf.weight"], initial["policy_state"]["vf.weight"])


@pytest.mark.slow
def test_maml_budget_ending_during_adaptation_saves_what_was_adapted(tmp_path: Path) -> None:
    ckpt = maml_checkpoint(tmp_path / "maml.pt")
    results = run_one(
        RunSpec(
            agent="maml",
            level=LEVEL,
            seed=3,
            budget=180,
            results_dir=tmp_path / "run",
            agent_args=["--checkpoint", str(ckpt)],
        )
    )
    log = (tmp_path / "run" / "agent.log").read_text()
    assert results["status"] == "budget" and results["agent_exit_code"] == 0, log
    assert results["timesteps"] == 180
    assert "budget spent during adaptation (1 of 2 inner steps done)" in log, log
    rows = adaptation_rows(tmp_path / "run" / "agent" / "adaptation.csv")
    assert len(rows) == 1 and float(rows[0]["param_change"]) > 0
    final = load_checkpoint(tmp_path / "run" / "agent" / "checkpoint.pt")
    initial = load_checkpoint(ckpt)
    assert final["adapt_steps_done"] == 1 and final["updates"] == 0
    assert not torch.equal(final["policy_state"]["pi.weight"], initial["policy_state"]["pi.weight"])
    assert torch.equal(final["policy_state"]["vf.weight"], initial["policy_state"]["vf.weight"])
