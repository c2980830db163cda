"""Game levels as MAML tasks: the level task distribution, the level sampler (emulators in worker
processes, one each, switching levels by close/reopen; none in this process), its
reproducibility and episode ends, and meta-training end to end on Atari 2600 levels (the ROMs
that ship with ale-py, imported into stable-retro). Tiny scale."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.checkpoint import load_checkpoint
from agent.config import load_config
from agent.policies import build_policy
from meta_train.configs import CONFIG_DIR, DEFAULTS
from meta_train.level_sampler import LevelSampler
from meta_train.loop import check_config, policy_spec, train
from meta_train.sampler import Trajectories
from meta_train.tasks import TaskDistribution, describe, make_env
from sonic_common.errors import UserError

BREAKOUT = "Breakout-Atari2600-v0:Start"  # random play loses its 5 lives in ~120-250 steps
QBERT = "Qbert-Atari2600-v0:Start"


def level_cfg(*overrides: str) -> dict:
    return load_config(
        CONFIG_DIR / "atari-train.yaml",
        [
            "task.horizon=8",
            "meta_batch=2",
            "trajectories=2",
            "iterations=1",
            "tensorboard=false",
            "ppo.epochs=1",
            *overrides,
        ],
        defaults=DEFAULTS,
    )


def task(level: str, horizon: int = 8) -> dict:
    return {
        "kind": "levels",
        "level": level,
        "horizon": horizon,
        "discretizer": "auto",
        "backtracking": True,
        "reward_scale": 0.01,
    }


@pytest.fixture(scope="module")
def policy() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_policy(policy_spec(level_cfg()))


def params_of(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in policy.named_parameters() if not k.startswith("vf.")}


def assert_same(a: Trajectories, b: Trajectories) -> None:
    for field in ("obs", "actions", "rewards", "dones"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_level_task_distribution() -> None:
    dist = TaskDistribution.from_config(level_cfg())
    assert len(dist.levels) == 16 and all(lv.endswith("-Atari2600-v0:Start") for lv in dist.levels)
    a = dist.sample(5, np.random.default_rng(7))
    assert a == dist.sample(5, np.random.default_rng(7))  # a pure function of the generator
    assert len({t["level"] for t in a}) == 5  # without replacement
    assert a[0] == {
        "kind": "levels",
        "level": a[0]["level"],
        "horizon": 8,
        "discretizer": "auto",
        "backtracking": "auto",
        "reward_scale": 0.01,
    }
    assert describe(a[0]) == a[0]["level"]
    assert len({t["level"] for t in dist.sample(16, np.random.default_rng(1))}) == 16
    many = dist.sample(40, np.random.default_rng(0))  # more than 16: with replacement
    assert len(many) == 40 and {t["level"] for t in many} <= set(dist.levels)
    assert dist.return_scale == pytest.approx(100.0)
    env = make_env(a[0])  # lazy: spaces, no emulator
    assert env.observation_space.shape == (4, 84, 84) and env.action_space.n == 18
    env.close()
    spec = policy_spec(level_cfg())
    assert spec["body"] == "cnn" and spec["obs_shape"] == [4, 84, 84]
    assert spec["action"] == {"type": "discrete", "n": 18}
    with pytest.raises(UserError, match="neither a level set nor a level id"):
        check_config(level_cfg("task.levels=no-such-set"))
    with pytest.raises(UserError, match="action sets"):
        check_config(level_cfg(f"task.levels={BREAKOUT},Airstriker-Genesis-v0:Level1"))


def test_sonic_config_is_valid_without_roms() -> None:
    from meta_train.loop import resolve_device

    cfg = load_config(CONFIG_DIR / "sonic-train.yaml", defaults=DEFAULTS)
    check_config(cfg)  # the level set, the action set, the optimizer: no ROM needed
    dist = TaskDistribution.from_config(cfg)
    assert len(dist.levels) == 47 and dist.horizon == 500
    spec = policy_spec(cfg)  # spaces from the lazy LevelEnv
    assert spec["body"] == "cnn" and spec["action"] == {"type": "discrete", "n": 7}
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(cfg).type == want  # device: auto
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device({"device": "cuda"})


def test_unplayable_level_is_a_one_line_error(atari_roms: None, tmp_path: Path) -> None:
    cfg = level_cfg("task.levels=Breakout-Atari2600-v0:NoSuchState")
    with pytest.raises(UserError, match="has no state 'NoSuchState'") as e:
        train(cfg, tmp_path / "x", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()  # refused before writing anything or starting workers


def test_level_sampler_switches_levels_one_emulator_per_process(
    atari_roms: None, policy: torch.nn.Module
) -> None:
    from evaluation.contest.env import make_contest_env

    params = params_of(policy)
    with LevelSampler(policy, envs=2) as sampler:
        first = sampler.sample([(params, task(BREAKOUT), 1), (params, task(QBERT), 2)], 2)
        info = sampler.worker_info()
        # stable-retro refuses a second emulator in a process: level A then level B on the same
        # two workers worked, so each closed A's emulator before opening B's
        assert [i["level"] for i in info] == [QBERT, QBERT]
        assert [i["opened"] for i in info] == [2, 2]
        assert len({i["pid"] for i in info}) == 2
        again = sampler.sample([(params, task(BREAKOUT), 1)], 2)[0]
        assert_same(first[0], again)  # the same job gives the same data after other levels
        # the test process (the sampler's parent) holds no emulator: it may open one itself
        env = make_contest_env(BREAKOUT, seed=0)
        try:
            env.reset(seed=0)
            env.step(env.action_space.sample())
        finally:
            env.close()
    assert not np.array_equal(first[0].obs, first[1].obs)  # two different games


def test_level_trajectories_are_seeded_and_compact(
    atari_roms: None, policy: torch.nn.Module
) -> None:
    params = params_of(policy)
    with LevelSampler(policy, envs=3) as three, LevelSampler(policy, envs=2) as two:
        a, c = three.sample([(params, task(QBERT, 12), 5), (params, task(QBERT, 12), 6)], 3)
        b = two.sample([(params, task(QBERT, 12), 5)], 3)[0]  # chunks of 2 + 1 trajectories
    assert a.obs.shape == (12, 3, 4, 84, 84) and a.obs.dtype == np.uint8
    assert a.actions.shape == (12, 3) and a.actions.dtype == np.int64
    assert a.rewards.shape == (12, 3) and a.rewards.dtype == np.float32
    assert a.dones is not None and a.dones.shape == (12, 3) and a.dones.dtype == bool
    assert_same(a, b)  # whatever the number of workers
    assert not np.array_equal(a.actions, c.actions)  # another seed, other actions
    assert not np.array_equal(a.actions[:, 0], a.actions[:, 1])  # K different trajectories
    assert (a.obs[0] == a.obs[0, :, :1]).all()  # a reset fills the frame stack with one frame


def test_episode_end_mid_trajectory_sets_dones(atari_roms: None, policy: torch.nn.Module) -> None:
    with LevelSampler(policy, envs=2) as sampler:
        traj = sampler.sample([(params_of(policy), task(BREAKOUT, 300), 0)], 2)[0]
    assert traj.dones is not None and traj.dones.any()
    for t, k in zip(*np.nonzero(traj.dones), strict=True):
        if t + 1 < traj.horizon:  # the trajectory goes on with a fresh episode: 4 equal frames
            assert (traj.obs[t + 1, k] == traj.obs[t + 1, k, :1]).all()


@pytest.mark.parametrize("optimizer", ["ppo", "reptile"])
def test_meta_train_on_levels_end_to_end(atari_roms: None, tmp_path: Path, optimizer: str) -> None:
    from meta_train.cli import main

    out = tmp_path / optimizer
    assert (
        main(
            [
                "--config",
                str(CONFIG_DIR / "atari-train.yaml"),
                "--out",
                str(out),
                "--meta-optimizer",
                optimizer,
                "--set",
                "iterations=1",
                "--set",
                "meta_batch=2",
                "--set",
                "trajectories=2",
                "--set",
                "task.horizon=16",
                "--set",
                "ppo.epochs=1",
                "--set",
                "tensorboard=false",
                "--no-progress",
            ]
        )
        == 0
    )
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["env_steps"] == str(2 * 2 * 16 * 2)
    assert np.isfinite(float(rows[0]["return_1"])) and np.isfinite(float(rows[0]["kl"]))
    data = load_checkpoint(out / "checkpoint.pt")
    spec = data["policy_spec"]
    assert spec["body"] == "cnn" and spec["obs_shape"] == [4, 84, 84]
    assert spec["action"] == {"type": "discrete", "n": 18}
    assert data["meta_optimizer"] == optimizer and data["iteration"] == 1
    assert data["adaptation"] == {
        "adapt_steps": 1,
        "trajectories": 2,
        "horizon": 16,
        "inner_lr": pytest.approx(0.5),
        "gamma": 0.99,
        "gae_lambda": 1.0,
        "baseline_ridge": 1e-5,
        "discretizer": "auto",
        "backtracking": "auto",
        "reward_scale": 0.01,
    }
    if optimizer == "reptile":  # evaluation on a held-out level, as the CLI runs it
        assert (
            main(
                [
                    "evaluate",
                    "--checkpoint",
                    str(out / "checkpoint.pt"),
                    "--tasks",
                    "1",
                    "--adapt-steps",
                    "1",
                    "--levels",
                    BREAKOUT,
                ]
            )
            == 0
        )
        rows = (out / "evaluate.csv").read_text().splitlines()
        assert rows[0].startswith("policy,return_0,return_1") and len(rows) == 3
