"""Trajectory sampling for the HalfCheetah tasks: all trajectories of several tasks stepped in
lock-step (`HalfCheetahSims`, MuJoCo's own API), with tasks spread over worker processes (one
per core) in chunks, so that the trainer can work on the chunks that are back (`submit`) while
the workers sample the others. Per time step, each task's K trajectories go through the policy
in one batched forward. The tasks are not stacked into one vmapped forward: a batched matmul's
last bits change with the batch's composition, which would make trajectories depend on the
number of workers; the per-task forwards cost ≈ 5% of a step (the physics ≈ 70%).

Reproducible by construction: a job carries its own integer seed, from which the K environments'
reset seeds and the action noise (a private `torch.Generator`) are derived. The same (policy
parameters, task, seed) give identical trajectories, in-process or in any worker, whatever the
number of workers; no global RNG is touched, which is what makes `--resume` exact.

Observations are stored compactly: uint8 images stay uint8 (4× less than float32), anything else
is float32. Gaussian actions are stored as sampled (the log-probability is of that sample) and
clipped to the action space only when handed to the environment.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from agent.learners.adaptation import Params, Trajectories
from agent.policies import clamped_log_std
from meta_train.halfcheetah_sim import ACTION_DIM, HalfCheetahSims
from meta_train.tasks import Task, task_rewards
from sonic_common.devices import set_torch_threads


def job_seeds(seed: int, count: int) -> tuple[list[int], int]:
    """Reset seeds for `count` environments and one seed for the action noise, from `seed`."""
    children = np.random.SeedSequence(seed).generate_state(count + 1, dtype=np.uint32)
    return [int(s) for s in children[:count]], int(children[count])


def sample_categorical(
    logits: Tensor, generator: torch.Generator | Sequence[torch.Generator]
) -> Tensor:
    """The samplers' categorical draw: each row of `logits` sampled from its softmax, computed
    in float64 on the CPU (the same draw whatever device the policy ran on), with one private
    generator for all rows or one per row. int64, shape logits.shape[:-1]."""
    probs = torch.softmax(logits.detach().to("cpu", torch.float64), dim=-1)
    if isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.stack(
        [torch.multinomial(probs[k], 1, generator=g)[0] for k, g in enumerate(generator)]
    )


def sample_actions(policy: nn.Module, dist_params: Tensor, gen: torch.Generator) -> Tensor:
    """A sample from the policy's distribution, drawn with the private (CPU) generator `gen`."""
    if getattr(policy, "action_type", "gaussian") == "discrete":
        return sample_categorical(dist_params, gen)
    dist_params = dist_params.cpu()
    mean, log_std = dist_params.chunk(2, dim=-1)
    noise = torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
    return mean + clamped_log_std(log_std).exp() * noise


Job = tuple[Params, Task, int]


def action_scale(task: Task) -> float:
    return float(task.get("action_scale", 1.0))


def rollout_jobs(
    policy: nn.Module, jobs: Sequence[Job], count: int, sims: HalfCheetahSims | None = None
) -> list[Trajectories]:
    """`count` trajectories of each HalfCheetah job `(params, task, seed)`, all jobs stepped in
    lock-step. A job's trajectories depend only on its own (params, task, seed): its reset seeds
    and its private noise generator, whichever jobs it is batched with."""
    horizons = {int(task["horizon"]) for _, task, _ in jobs}
    if len(horizons) != 1:
        raise ValueError(f"jobs of one batch share a horizon, got {sorted(horizons)}")
    horizon, n_jobs, n = horizons.pop(), len(jobs), len(jobs) * count
    sims = sims or HalfCheetahSims()
    seeds = [job_seeds(seed, count) for _, _, seed in jobs]
    gens = [torch.Generator().manual_seed(noise) for _, noise in seeds]
    obs = sims.reset([s for resets, _ in seeds for s in resets]).astype(np.float32)
    detached = [{k: v.detach() for k, v in p.items()} for p, _, _ in jobs]
    device = next(iter(detached[0].values())).device
    scales = np.repeat([action_scale(t) for _, t, _ in jobs], count)[:, None]
    obs_buf = np.zeros((horizon, n_jobs, count, obs.shape[1]), dtype=np.float32)
    act_buf = np.zeros((horizon, n_jobs, count, ACTION_DIM), dtype=np.float32)
    rew_buf = np.zeros((horizon, n_jobs, count), dtype=np.float32)
    tasks = [t for _, t, _ in jobs for _ in range(count)]
    for t in range(horizon):
        obs_buf[t] = obs.reshape(n_jobs, count, -1)
        with torch.no_grad():
            for j, gen in enumerate(gens):
                # a copy: BLAS results may depend on the input's alignment in memory
                obs_j = torch.tensor(obs_buf[t, j], device=device)
                dist, _ = functional_call(policy, detached[j], (obs_j,))
                act_buf[t, j] = sample_actions(policy, dist, gen).numpy()
        torques = np.clip(act_buf[t].reshape(n, -1) / scales, -1.0, 1.0)
        nxt, x_velocity = sims.step(torques)
        rew_buf[t] = task_rewards(tasks, x_velocity, torques).reshape(n_jobs, count)
        obs = nxt.astype(np.float32)
    return [
        Trajectories(obs_buf[:, j].copy(), act_buf[:, j].copy(), rew_buf[:, j].copy())
        for j in range(n_jobs)
    ]


def rollout(
    policy: nn.Module,
    params: Params,
    task: Task,
    count: int,
    seed: int,
    sims: HalfCheetahSims | None = None,
) -> Trajectories:
    """`count` trajectories of `task` with the policy at `params`, stepped together."""
    return rollout_jobs(policy, [(params, task, seed)], count, sims)[0]


# --- worker processes -------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(policy_spec: dict[str, Any]) -> None:
    from agent.policies import build_policy

    set_torch_threads(1)
    _WORKER["policy"] = build_policy(policy_spec)
    _WORKER["sims"] = HalfCheetahSims()


def _worker_rollout(jobs: list[Job], count: int) -> list[Trajectories]:
    return rollout_jobs(_WORKER["policy"], jobs, count, _WORKER["sims"])


def chunk_indices(n: int, parts: int) -> list[list[int]]:
    """Job indices 0..n−1 in consecutive chunks of ceil(n / parts) (fewer chunks for few jobs):
    how the samplers spread a `submit` over their workers."""
    size = max(1, math.ceil(n / parts))
    return [list(range(start, min(n, start + size))) for start in range(0, n, size)]


def gather(chunks: Sequence[tuple[list[int], Future]], n: int) -> list[Trajectories]:
    """The trajectories of `submit`'s chunks (waited for), in job order: every sampler's
    `sample`."""
    results: list[Trajectories | None] = [None] * n
    for idx, fut in chunks:
        for i, traj in zip(idx, fut.result(), strict=True):
            results[i] = traj
    return [r for r in results if r is not None]


def done_future(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


class Sampler:
    """Runs HalfCheetah rollout jobs `(params, task, seed)`, in this process (`workers=0`) or
    spread over `workers` processes (forkserver; each builds the policy from its spec once and
    keeps its simulations between calls). Jobs go out in chunks of about
    jobs / (chunks_per_worker · workers), so results come back while others are still sampled."""

    def __init__(self, policy: nn.Module, workers: int = 0, chunks_per_worker: int = 2) -> None:
        self.policy = policy
        self.workers = int(workers)
        self.chunks_per_worker = max(1, int(chunks_per_worker))
        self.sims = HalfCheetahSims()
        self._executor: ProcessPoolExecutor | None = None
        if self.workers > 0:
            spec = getattr(policy, "spec", None)
            if spec is None:
                raise ValueError("workers > 0 needs a policy built by agent.policies.build_policy")
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=mp.get_context("forkserver"),
                initializer=_worker_init,
                initargs=(spec,),
            )

    def submit(self, jobs: Sequence[Job], count: int) -> list[tuple[list[int], Future]]:
        """Start the jobs; [(indices of the jobs in a chunk, future of their trajectories)]."""
        if self._executor is None:
            return [
                (
                    list(range(len(jobs))),
                    done_future(rollout_jobs(self.policy, jobs, count, self.sims)),
                )
            ]
        out = []
        for idx in chunk_indices(len(jobs), self.workers * self.chunks_per_worker):
            chunk = [
                ({k: v.detach().cpu() for k, v in jobs[i][0].items()}, jobs[i][1], jobs[i][2])
                for i in idx
            ]
            out.append((idx, self._executor.submit(_worker_rollout, chunk, count)))
        return out

    def sample(self, jobs: Sequence[Job], count: int) -> list[Trajectories]:
        return gather(self.submit(jobs, count), len(jobs))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
