"""meta_train around the core: HalfCheetah task rewards, the sampler's reproducibility and
storage, the linear feature baseline, checkpoints and an exact seeded resume (tiny scale)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.checkpoint import load_checkpoint, load_policy
from agent.config import load_config
from agent.learners.linear_baseline import (
    advantages,
    discounted_returns,
    features,
    fit_linear_baseline,
)
from meta_train.configs import CONFIG_DIR, DEFAULTS
from meta_train.loop import policy_spec, train
from meta_train.sampler import rollout
from meta_train.tasks import (
    CTRL_COST_WEIGHT,
    TaskDistribution,
    make_env,
)


@pytest.mark.parametrize(
    "task",
    [
        {"kind": "halfcheetah-dir", "horizon": 5, "direction": -1.0},
        {"kind": "halfcheetah-dir", "horizon": 5, "direction": 1.0},
        {"kind": "halfcheetah-vel", "horizon": 5, "goal": 1.3},
    ],
)
def test_task_rewards_match_formulas(task: dict) -> None:
    env = make_env(task)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        for t in range(5):
            a = rng.uniform(-1, 1, size=6)
            _, r, terminated, truncated, info = env.step(a)
            v = info["x_velocity"]
            cost = CTRL_COST_WEIGHT * float(np.sum(a**2))
            expected = (
                task["direction"] * v - cost
                if task["kind"] == "halfcheetah-dir"
                else -abs(v - task["goal"]) - cost
            )
            assert r == pytest.approx(expected, abs=1e-9)
            assert not terminated
            assert truncated == (t == 4)  # the horizon
    finally:
        env.close()


def test_task_distributions() -> None:
    rng = np.random.default_rng(0)
    dirs = TaskDistribution("halfcheetah-dir", 100).sample(200, rng)
    assert {t["direction"] for t in dirs} == {-1.0, 1.0}
    assert 60 < sum(t["direction"] > 0 for t in dirs) < 140
    vels = TaskDistribution("halfcheetah-vel", 100).sample(200, rng)
    goals = np.array([t["goal"] for t in vels])
    assert goals.min() >= 0 and goals.max() <= 2 and 0.8 < goals.mean() < 1.2
    with pytest.raises(ValueError):
        TaskDistribution("halfcheetah-sideways")


def tiny_cfg(**changes: object) -> dict:
    cfg = load_config(
        CONFIG_DIR / "halfcheetah-dir.yaml",
        ["task.horizon=8", "meta_batch=2", "trajectories=2", "iterations=2", "tensorboard=false"],
        defaults=DEFAULTS,
    )
    cfg.update(changes)
    return cfg


def test_sampler_is_seeded_and_compact() -> None:
    from agent.policies import build_policy

    torch.manual_seed(0)
    policy = build_policy(policy_spec(tiny_cfg()))
    params = {k: v.detach() for k, v in policy.named_parameters()}
    task = {"kind": "halfcheetah-vel", "horizon": 8, "goal": 0.5}
    a = rollout(policy, params, task, 3, seed=42)
    b = rollout(policy, params, task, 3, seed=42)
    c = rollout(policy, params, task, 3, seed=43)
    assert a.obs.shape == (8, 3, 17) and a.obs.dtype == np.float32
    assert a.actions.shape == (8, 3, 6) and a.rewards.shape == (8, 3)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    assert not np.array_equal(a.actions, c.actions)
    assert not np.array_equal(a.actions[:, 0], a.actions[:, 1])  # K different trajectories


def test_linear_baseline_fits_features_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(10, 3, 4, generator=g)
    feats = features(obs)
    assert feats.shape == (10, 3, 4 + 4 + 4)
    coef = torch.randn(feats.shape[-1], generator=g, dtype=torch.float64)
    target = feats @ coef
    torch.testing.assert_close(
        fit_linear_baseline(obs, target, ridge=1e-10), target, rtol=1e-5, atol=1e-5
    )
    images = torch.zeros(5, 2, 4, 84, 84, dtype=torch.uint8)
    assert features(images).shape[-1] == 4  # time features only for images
    rewards = torch.ones(3, 1)
    torch.testing.assert_close(
        discounted_returns(rewards, 0.5), torch.tensor([[1.75], [1.5], [1.0]], dtype=torch.float64)
    )
    adv = advantages(obs, torch.randn(10, 3, generator=g))
    assert abs(float(adv.mean())) < 1e-5 and abs(float(adv.std()) - 1) < 1e-4


def test_advantages_do_not_cross_an_episode_end() -> None:
    from agent.learners.linear_baseline import episode_steps, gae

    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(6, 2, generator=g)
    values = torch.randn(6, 2, generator=g, dtype=torch.float64)
    dones = torch.zeros(6, 2, dtype=torch.bool)
    dones[2, 0] = True  # trajectory 0: an episode ends at step 2, a new one starts at 3
    later = rewards.clone()
    later[3:, 0] += 100.0  # what comes after the episode end
    for gamma, lam in ((0.99, 1.0), (0.9, 0.95)):
        a = gae(rewards, values, gamma, lam, dones)
        b = gae(later, values, gamma, lam, dones)
        torch.testing.assert_close(a[:3, 0], b[:3, 0])  # steps 0..2 do not see it
        assert not torch.allclose(a[3:, 0], b[3:, 0])
        # step 2 ends its episode: its advantage is r − V, no bootstrap from step 3
        assert float(a[2, 0]) == pytest.approx(float(rewards[2, 0] - values[2, 0]))
        assert not torch.allclose(gae(later, values, gamma, lam)[:3, 0], a[:3, 0])
    ret = discounted_returns(later, 0.5, dones)
    torch.testing.assert_close(ret[:3, 0], discounted_returns(rewards, 0.5, dones)[:3, 0])
    assert float(ret[2, 0]) == pytest.approx(float(rewards[2, 0]))
    torch.testing.assert_close(
        episode_steps(dones)[:, 0], torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.float64)
    )
    torch.testing.assert_close(episode_steps(dones)[:, 1], torch.arange(6, dtype=torch.float64))
    obs = torch.randn(6, 2, 3, generator=g)
    adv = advantages(obs, rewards, dones=dones)  # the baseline's time feature restarts too
    assert adv.shape == (6, 2) and torch.isfinite(adv).all()
    assert not torch.allclose(adv, advantages(obs, rewards))


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.pop("sampling_s")
        r.pop("learning_s")
    return rows


@pytest.mark.parametrize("optimizer", ["trpo", "ppo"])
def test_checkpoint_and_seeded_resume_continue_identically(tmp_path: Path, optimizer: str) -> None:
    cfg = tiny_cfg(meta_optimizer=optimizer, learn_inner_lr=optimizer == "ppo")
    straight = train(cfg, tmp_path / "straight", progress=False)
    train({**cfg, "iterations": 1}, tmp_path / "resumed", progress=False)
    resumed = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert _metrics(tmp_path / "straight" / "metrics.csv") == _metrics(
        tmp_path / "resumed" / "metrics.csv"
    )
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a["iteration"] == b["iteration"] == 2
    for k, v in a["policy_state"].items():
        assert torch.equal(v, b["policy_state"][k]), k
    for k, v in a["step_sizes"]["per_parameter"].items():
        assert torch.equal(v, b["step_sizes"]["per_parameter"][k]), k
    # an agent rebuilds the network from the file alone (agent/checkpoint.py's convention)
    policy = load_policy(straight)
    obs = torch.zeros(1, 17)
    assert policy(obs)[0].shape == (1, 12)
    assert a["policy_spec"]["action"]["type"] == "gaussian"


def test_joint_training_has_no_adaptation(tmp_path: Path) -> None:
    ckpt = train(tiny_cfg(iterations=1), tmp_path / "joint", joint=True, progress=False)
    data = load_checkpoint(ckpt)
    assert data["joint"] is True and data["adapt_steps"] == 0
    header = (tmp_path / "joint" / "metrics.csv").read_text().splitlines()[0]
    assert "return_0" in header and "return_1" not in header


def test_cli_train_evaluate_and_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meta_train.cli import main

    tiny = [
        "--set",
        "task.horizon=5",
        "--set",
        "meta_batch=2",
        "--set",
        "trajectories=2",
        "--set",
        "tensorboard=false",
        "--no-progress",
    ]
    assert (
        main(
            [
                "--config",
                str(CONFIG_DIR / "halfcheetah-vel.yaml"),
                "--out",
                str(tmp_path / "m"),
                "--iterations",
                "1",
                "--meta-optimizer",
                "vpg",
                *tiny,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "--config",
                str(CONFIG_DIR / "halfcheetah-vel.yaml"),
                "--out",
                str(tmp_path / "j"),
                "--iterations",
                "1",
                "--joint",
                *tiny,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "m" / "checkpoint.pt"),
                "--tasks",
                "2",
                "--adapt-steps",
                "2",
                "--pretrained",
                str(tmp_path / "j" / "checkpoint.pt"),
                "--inner-lr",
                "0.1,0.05",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "maml" in out and "random" in out and "pretrained" in out and "2 steps" in out
    rows = (tmp_path / "m" / "evaluate.csv").read_text().splitlines()
    assert rows[0].startswith("policy,return_0,return_1,return_2") and len(rows) == 4
    from meta_train.evaluate import evaluate

    one = evaluate(tmp_path / "m" / "checkpoint.pt", tasks=2, adapt_steps=1)
    two = evaluate(tmp_path / "m" / "checkpoint.pt", tasks=2, adapt_steps=2)
    assert one["maml"] == two["maml"][:2] and one["random"] == two["random"][:2]
    capsys.readouterr()  # the evaluations' progress lines
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "x"), "--set", "no_such_key=1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'no_such_key'") and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "k"), "--set", "ppo.target_kl=0"])
    assert e.value.code == 2 and not (tmp_path / "k").exists()
    err = capsys.readouterr().err
    assert err.startswith("error: ppo.target_kl must be above 0") and err.count("\n") == 1


def test_a_resume_changes_a_setting_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run started with --set trpo.max_kl=0.05, resumed with its config file but without that
    --set, would silently go on at the file's 0.01: a one-line error instead, and the run is left
    as it was. With the --set again, or without --config (the run's own config), it goes on."""
    from meta_train.cli import main

    out = tmp_path / "run"
    start = ["--config", str(CONFIG_DIR / "halfcheetah-dir.yaml"), "--out", str(out)]
    tiny = ["--set", "task.horizon=5", "--set", "meta_batch=2", "--set", "trajectories=2"]
    tiny += ["--set", "tensorboard=false", "--no-progress"]
    changed = ["--set", "trpo.max_kl=0.05"]
    assert main([*start, "--iterations", "1", *tiny, *changed]) == 0
    with pytest.raises(SystemExit) as e:
        main([*start, "--resume", "--iterations", "2", *tiny])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume {out}: trpo.max_kl is 0.05 in the run and 0.01 here")
    assert err.count("\n") == 1
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 1
    assert main([*start, "--resume", "--iterations", "2", *tiny, *changed]) == 0
    own = ["--out", str(out), "--resume", "--iterations", "3", "--no-progress"]
    assert main(own) == 0
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["iteration"] == 3 and saved["config"]["trpo"]["max_kl"] == 0.05
    # a mistyped --out with --resume and no --config: refused, not a fresh run of the defaults
    typo = tmp_path / "rnu"
    with pytest.raises(SystemExit) as e:
        main(["--out", str(typo), "--resume", "--no-progress"])
    assert e.value.code == 2 and "--resume: " in capsys.readouterr().err
    assert not typo.exists()


def test_a_resume_compares_the_level_task_keys_only_in_a_level_run() -> None:
    """HalfCheetah ignores the level keys, so a change of their defaults (task.backtracking went
    from true to auto) does not stop its runs' resume; a level run's does, naming the key."""
    from meta_train.configs import resume_conflicts

    then = {"kind": "halfcheetah-dir", "horizon": 100, "backtracking": True}
    now = {**then, "backtracking": "auto"}
    assert resume_conflicts({"task": then}, {"task": now}, set()) == []
    assert resume_conflicts({"task": then}, {"task": {**now, "horizon": 200}}, set()) == [
        "task.horizon is 100 in the run and 200 here"
    ]
    level_then, level_now = {**then, "kind": "levels"}, {**now, "kind": "levels"}
    assert resume_conflicts({"task": level_then}, {"task": level_now}, set()) == [
        "task.backtracking is True in the run and 'auto' here"
    ]


def test_worker_sampling_equals_in_process() -> None:
    from agent.policies import build_policy
    from meta_train.sampler import Sampler

    torch.manual_seed(0)
    policy = build_policy(policy_spec(tiny_cfg()))
    params = {k: v.detach() for k, v in policy.named_parameters() if not k.startswith("vf.")}
    jobs = [
        (params, {"kind": "halfcheetah-dir", "horizon": 6, "direction": d}, s)
        for d, s in ((1.0, 5), (-1.0, 6))
    ]
    with Sampler(policy, workers=0) as local, Sampler(policy, workers=2) as remote:
        for a, b in zip(local.sample(jobs, 2), remote.sample(jobs, 2), strict=True):
            np.testing.assert_array_equal(a.obs, b.obs)
            np.testing.assert_array_equal(a.actions, b.actions)
            np.testing.assert_array_equal(a.rewards, b.rewards)


def test_a_diverged_meta_step_is_a_one_line_error_and_a_collapsed_std_stays_valid(
    tmp_path: Path,
) -> None:
    import math

    import torch

    from agent.policies import LOG_STD_MIN, build_policy
    from meta_train.loop import check_finite
    from meta_train.meta_learner import MetaLearner
    from sonic_common.errors import UserError

    policy = build_policy(
        {"body": "mlp", "obs_shape": [3], "hidden": [4], "action": {"type": "gaussian", "dim": 2}}
    )
    learner = MetaLearner(policy)
    check_finite({"loss_after": 0.1, "kl": 0.01}, 5, learner, tmp_path / "c.pt")  # fine
    with pytest.raises(UserError, match=r"meta-iteration 5 diverged \(kl=nan\).*keeps iteration 4"):
        check_finite({"loss_after": 0.1, "kl": math.nan}, 5, learner, tmp_path / "c.pt")
    # a log-std driven to -1e4 (exp = 0) would make torch reject the distribution: clamped
    params = torch.cat([torch.zeros(1, 2), torch.full((1, 2), -1e4)], dim=-1)
    dist = policy.distribution(params)
    assert torch.allclose(dist.base_dist.scale, torch.full((1, 2), math.exp(LOG_STD_MIN)))
    assert torch.isfinite(dist.log_prob(torch.zeros(1, 2))).all()


def test_evaluate_prefix_keeps_dots_in_its_name(tmp_path: Path) -> None:
    from meta_train.evaluate import output_paths

    csv_path, json_path = output_paths(tmp_path / "eval" / "alpha0.05")
    assert (csv_path.name, json_path.name) == ("alpha0.05.csv", "alpha0.05.json")
    assert output_paths("runs/x.csv") == (Path("runs/x.csv"), Path("runs/x.json"))
    assert output_paths("evaluate")[1] == Path("evaluate.json")


def test_the_study_checks_every_run_before_the_first_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in the last optimizer must not cost the earlier runs' hours first."""
    from meta_train.study import main as study_main

    out = tmp_path / "study"
    for bad, said in (
        (["--optimizers", "vpg,trpo,ppoo"], "--optimizers: unknown 'ppoo'"),
        (["--families", "dirr"], "--families: unknown 'dirr'"),
        (["--steps", "1,x"], "--steps 1,x"),
    ):
        with pytest.raises(SystemExit) as e:
            study_main(["--out", str(out), "--runs", str(tmp_path / "runs"), *bad])
        assert e.value.code == 2 and said in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "runs").exists()
