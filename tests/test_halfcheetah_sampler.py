"""The fast HalfCheetah sampler: MuJoCo's own API against Gymnasium's HalfCheetah-v5, a job's
trajectories independent of what it is batched with and of the number of workers, the action
scale, and the stacked meta-batch computations against the task-by-task ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_maml import make_problem
from torch.func import functional_call

from agent.policies import build_policy
from meta_train.halfcheetah_sim import HalfCheetahSims
from meta_train.meta_learner import MetaLearner, TaskBatch
from meta_train.sampler import Sampler, job_seeds, rollout, rollout_jobs, sample_actions
from meta_train.tasks import make_env, task_rewards

SPEC = {
    "body": "mlp",
    "obs_shape": [17],
    "hidden": [16, 16],
    "activation": "relu",
    "action": {"type": "gaussian", "dim": 6, "init_std": 1.0},
}


def policy_and_params() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    policy = build_policy(SPEC)
    return policy, {k: v.detach() for k, v in policy.named_parameters() if not k.startswith("vf.")}


def test_sims_equal_gymnasium_halfcheetah_v5_bit_for_bit() -> None:
    seeds = [3, 7, 11]
    sims = HalfCheetahSims()
    envs = [make_env({"kind": "halfcheetah-dir", "horizon": 50, "direction": 1.0}) for _ in seeds]
    reference = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)])
    np.testing.assert_array_equal(sims.reset(seeds), reference)
    rng = np.random.default_rng(0)
    for _ in range(50):
        torques = np.clip(rng.normal(size=(3, 6)), -1, 1)
        obs, x_velocity = sims.step(torques)
        for k, env in enumerate(envs):
            ref_obs, _, _, _, info = env.step(torques[k])
            np.testing.assert_array_equal(obs[k], ref_obs)
            assert x_velocity[k] == info["x_velocity"]


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_rollout_equals_the_gymnasium_reference_loop(scale: float) -> None:
    """The sampler's trajectories are those of K Gymnasium environments stepped one by one,
    with the policy's actions divided by the task's action scale."""
    policy, params = policy_and_params()
    task = {"kind": "halfcheetah-vel", "horizon": 12, "goal": 0.7, "action_scale": scale}
    traj = rollout(policy, params, task, 3, seed=42)
    resets, noise = job_seeds(42, 3)
    gen = torch.Generator().manual_seed(noise)
    envs = [make_env(task) for _ in range(3)]
    obs = np.stack([e.reset(seed=s)[0] for e, s in zip(envs, resets, strict=True)])
    for t in range(12):
        np.testing.assert_array_equal(traj.obs[t], obs.astype(np.float32))
        with torch.no_grad():
            dist, _ = functional_call(policy, params, (torch.tensor(obs, dtype=torch.float32),))
        actions = sample_actions(policy, dist, gen).numpy()
        np.testing.assert_array_equal(traj.actions[t], actions)
        steps = [env.step(actions[k]) for k, env in enumerate(envs)]
        np.testing.assert_allclose(traj.rewards[t], [s[1] for s in steps], rtol=1e-6)
        obs = np.stack([s[0] for s in steps])


def test_action_scale_divides_the_torque_and_its_cost() -> None:
    tasks = [
        {"kind": "halfcheetah-dir", "direction": -1.0},
        {"kind": "halfcheetah-vel", "goal": 1.5},
    ]
    torques = np.array([[0.5] * 6, [-1.0] * 6])
    r = task_rewards(tasks, np.array([2.0, 1.0]), torques)
    np.testing.assert_allclose(r, [-2.0 - 0.05 * 1.5, -0.5 - 0.05 * 6.0])
    policy, params = policy_and_params()
    with torch.no_grad():
        params["log_std"] = torch.full((6,), np.log(5.0))  # wide: raw actions often beyond ±1
    raw = rollout(
        policy,
        params,
        {"kind": "halfcheetah-dir", "horizon": 5, "direction": 1.0, "action_scale": 1.0},
        4,
        seed=1,
    )
    scaled = rollout(
        policy,
        params,
        {"kind": "halfcheetah-dir", "horizon": 5, "direction": 1.0, "action_scale": 10.0},
        4,
        seed=1,
    )
    np.testing.assert_array_equal(raw.actions[0], scaled.actions[0])  # same first draw
    # the control cost of the first step: torques clipped raw actions vs actions / 10
    np.testing.assert_array_equal(raw.obs[0], scaled.obs[0])
    first_raw = np.clip(raw.actions[0], -1, 1)
    first_scaled = np.clip(scaled.actions[0] / 10, -1, 1)
    assert (np.square(first_scaled).sum(1) < np.square(first_raw).sum(1)).all()


def test_a_jobs_trajectories_do_not_depend_on_its_batch_or_the_workers() -> None:
    policy, params = policy_and_params()
    other = {k: v + 0.01 for k, v in params.items()}
    jobs = [
        (
            params if i % 2 else other,
            {"kind": "halfcheetah-dir", "horizon": 6, "direction": float(1 - 2 * (i % 2))},
            100 + i,
        )
        for i in range(5)
    ]
    alone = [rollout(policy, p, task, 2, seed) for p, task, seed in jobs]
    together = rollout_jobs(policy, jobs, 2)
    with Sampler(policy, workers=2) as workers:
        chunks = workers.submit(jobs, 2)
        assert len(chunks) > 1  # chunked: the trainer works on some while others are sampled
        spread = workers.sample(jobs, 2)
    for a, b, c in zip(alone, together, spread, strict=True):
        for x, y in ((a, b), (a, c)):
            np.testing.assert_array_equal(x.obs, y.obs)
            np.testing.assert_array_equal(x.actions, y.actions)
            np.testing.assert_array_equal(x.rewards, y.rewards)


def _batches(kind: str, steps: int, learn_lr: bool) -> tuple[MetaLearner, list[TaskBatch]]:
    learner, first = make_problem(kind, steps=steps, learn_inner_lr=learn_lr)
    batches = [first] + [
        make_problem(kind, steps=steps, learn_inner_lr=learn_lr, seed=s)[1] for s in (5, 9)
    ]
    return learner, batches


def _per_task(
    learner: MetaLearner, batches: list[TaskBatch], clip: float | None
) -> tuple[float, list[torch.Tensor]]:
    params = learner.meta_parameters()
    losses = [learner.task_objective(b, clip=clip)[0] for b in batches]
    total = sum(losses) / len(losses)
    return float(total.detach()), list(torch.autograd.grad(total, params, allow_unused=True))


@pytest.mark.parametrize(
    "kind,steps,learn_lr,clip",
    [("gaussian", 1, False, None), ("discrete", 2, True, None), ("gaussian", 2, True, 0.2)],
)
def test_stacked_meta_batch_equals_task_by_task(
    kind: str, steps: int, learn_lr: bool, clip: float | None
) -> None:
    learner, batches = _batches(kind, steps, learn_lr)
    assert learner.stacked(batches) is not None
    loss, grads = learner.meta_gradient(batches, clip)
    ref_loss, ref_grads = _per_task(learner, batches, clip)
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r if r is not None else torch.zeros_like(g))
    loss_e, kl_e = learner.evaluate(batches)
    per = [learner.task_objective(b, create_graph=False) for b in batches]
    assert loss_e == pytest.approx(sum(float(x[0].detach()) for x in per) / 3, rel=1e-10)
    assert kl_e == pytest.approx(sum(float(x[1].detach()) for x in per) / 3, rel=1e-10)
    v = torch.randn(sum(p.numel() for p in learner.meta_parameters()), dtype=torch.float64)
    stacked_hv = learner.kl_hvp(batches)(v)
    learner.grad_chunk = 1  # forces the task-by-task path
    assert learner.stacked(batches) is None
    torch.testing.assert_close(stacked_hv, learner.kl_hvp(batches)(v))


@pytest.mark.parametrize(
    "kind,steps,learn_lr", [("gaussian", 1, False), ("discrete", 2, False), ("gaussian", 2, True)]
)
def test_gauss_newton_hvp_equals_the_kl_hessian_at_the_sampling_point(
    kind: str, steps: int, learn_lr: bool
) -> None:
    learner, batches = _batches(kind, steps, learn_lr)
    for b in batches:  # π_old = the post-update policy of the current θ, as after sampling
        adapted = learner.detached()
        for data in b.train:
            adapted = learner.adapted_detached(adapted, data)
        with torch.no_grad():
            b.old_logp, b.old_dist_params = learner.log_prob(adapted, b.valid)
    v = torch.randn(sum(p.numel() for p in learner.meta_parameters()), dtype=torch.float64)
    exact = learner.kl_hvp(batches)(v)
    assert exact.abs().max() > 1e-3
    torch.testing.assert_close(learner.kl_hvp(batches, at_sampling=True)(v), exact)


def test_a_fixed_task_is_the_only_task_and_oracle_returns_interpolate() -> None:
    from meta_train.oracle import oracle_return
    from meta_train.tasks import TaskDistribution

    rng = np.random.default_rng(0)
    assert {
        t["direction"] for t in TaskDistribution("halfcheetah-dir", fixed=-1).sample(20, rng)
    } == {-1.0}
    assert {t["goal"] for t in TaskDistribution("halfcheetah-vel", fixed=0.6).sample(5, rng)} == {
        0.6
    }
    assert len({t["goal"] for t in TaskDistribution("halfcheetah-vel").sample(5, rng)}) == 5
    dir_summary = {
        "kind": "halfcheetah-dir",
        "tasks": [{"value": 1.0, "return": 400.0}, {"value": -1.0, "return": 200.0}],
    }
    tasks = [{"direction": 1.0}] * 3 + [{"direction": -1.0}]
    assert oracle_return(dir_summary, tasks) == pytest.approx(350.0)
    vel_summary = {
        "kind": "halfcheetah-vel",
        "tasks": [{"value": 1.0, "return": -20.0}, {"value": 0.2, "return": -10.0}],
    }
    assert oracle_return(vel_summary, [{"goal": 0.6}, {"goal": 1.5}]) == pytest.approx(-17.5)


def test_oracles_train_each_fixed_task_and_resume_without_retraining(tmp_path) -> None:
    import json

    from agent.checkpoint import load_checkpoint
    from agent.config import load_config
    from meta_train.configs import CONFIG_DIR, DEFAULTS
    from meta_train.oracle import train_oracles

    cfg = load_config(
        CONFIG_DIR / "halfcheetah-dir.yaml",
        ["task.horizon=6", "trajectories=3", "tensorboard=false"],
        defaults=DEFAULTS,
    )
    summary = train_oracles(
        cfg, tmp_path, iterations=2, meta_batch=1, eval_trajectories=4, progress=False
    )
    assert [r["task"] for r in summary["tasks"]] == ["dir+1", "dir-1"]
    assert json.loads((tmp_path / "oracle.json").read_text()) == summary
    for row in summary["tasks"]:
        saved = load_checkpoint(tmp_path / row["task"] / "checkpoint.pt")
        assert saved["config"]["task"]["direction"] == row["value"]
        assert saved["config"]["adapt_steps"] == 0 and row["env_steps"] == 2 * 3 * 6
    stamp = (tmp_path / "dir+1" / "checkpoint.pt").stat().st_mtime_ns
    assert (
        train_oracles(
            cfg, tmp_path, iterations=2, meta_batch=1, eval_trajectories=4, progress=False
        )
        == summary
    )
    assert (tmp_path / "dir+1" / "checkpoint.pt").stat().st_mtime_ns == stamp
