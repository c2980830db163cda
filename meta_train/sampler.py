"""Trajectory sampling: the K trajectories of one task in lock-step, one batched policy forward
per time step, optionally with tasks spread over worker processes.

Reproducible by construction: a job carries its own integer seed, from which the K environments'
reset seeds and the action noise (a private `torch.Generator`) are derived. The same (policy
parameters, task, seed) give identical trajectories, in-process or in any worker, whatever the
number of workers; no global RNG is touched, which is what makes `--resume` exact.

Observations are stored compactly: uint8 images stay uint8 (4× less than float32), anything else
is float32. Gaussian actions are stored as sampled (the log-probability is of that sample) and
clipped to the action space only when handed to the environment.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from agent.policies import clamped_log_std
from meta_train.tasks import Task, make_env

Params = dict[str, Tensor]


@dataclass
class Trajectories:
    """K trajectories of T steps, time-major: obs (T, K, *obs_shape), actions (T, K[, dim]),
    rewards (T, K), dones (T, K) (the step ended an episode and the trajectory went on with a
    fresh one; None: no episode ended). Observations uint8 for images, float32 otherwise."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray | None = None

    @property
    def horizon(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def count(self) -> int:
        return int(self.rewards.shape[1])

    def returns(self) -> np.ndarray:
        """Undiscounted return of each trajectory, shape (K,)."""
        return self.rewards.astype(np.float64).sum(axis=0)

    def nbytes(self) -> int:
        return int(self.obs.nbytes + self.actions.nbytes + self.rewards.nbytes)


def storage_dtype(space: gym.Space) -> np.dtype:  # type: ignore[type-arg]
    return np.dtype(np.uint8) if np.dtype(space.dtype) == np.uint8 else np.dtype(np.float32)


def job_seeds(seed: int, count: int) -> tuple[list[int], int]:
    """Reset seeds for `count` environments and one seed for the action noise, from `seed`."""
    children = np.random.SeedSequence(seed).generate_state(count + 1, dtype=np.uint32)
    return [int(s) for s in children[:count]], int(children[count])


def sample_actions(policy: nn.Module, dist_params: Tensor, gen: torch.Generator) -> Tensor:
    """A sample from the policy's distribution, drawn with the private (CPU) generator `gen`."""
    dist_params = dist_params.cpu()
    if getattr(policy, "action_type", "gaussian") == "discrete":
        probs = torch.softmax(dist_params.double(), dim=-1)
        return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    mean, log_std = dist_params.chunk(2, dim=-1)
    noise = torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
    return mean + clamped_log_std(log_std).exp() * noise


class EnvPool:
    """Environments kept between jobs: HalfCheetah tasks differ only in the reward wrapper's
    task dict, so an environment is re-targeted instead of rebuilt (gym.make costs ~10 ms)."""

    def __init__(self) -> None:
        self._envs: dict[tuple[str, int], list[gym.Env]] = {}  # type: ignore[type-arg]

    def get(self, task: Task, count: int) -> list[gym.Env]:  # type: ignore[type-arg]
        key = (str(task["kind"]), int(task["horizon"]))
        envs = self._envs.setdefault(key, [])
        while len(envs) < count:
            envs.append(make_env(task))
        for env in envs[:count]:
            env.task = dict(task)  # type: ignore[attr-defined]
        return envs[:count]

    def close(self) -> None:
        for envs in self._envs.values():
            for env in envs:
                env.close()
        self._envs.clear()


def rollout(policy: nn.Module, params: Params, task: Task, count: int, seed: int,
            pool: EnvPool | None = None) -> Trajectories:
    """`count` trajectories of `task` with the policy at `params`, stepped together."""
    own_pool = pool is None
    pool = pool or EnvPool()
    try:
        envs = pool.get(task, count)
        reset_seeds, noise_seed = job_seeds(seed, count)
        gen = torch.Generator().manual_seed(noise_seed)
        space = envs[0].observation_space
        act_space = envs[0].action_space
        dtype = storage_dtype(space)
        horizon = int(task["horizon"])
        first = [env.reset(seed=s)[0] for env, s in zip(envs, reset_seeds, strict=True)]
        obs_buf = np.zeros((horizon, count, *space.shape), dtype=dtype)
        discrete = isinstance(act_space, gym.spaces.Discrete)
        act_buf = (np.zeros((horizon, count), dtype=np.int64) if discrete
                   else np.zeros((horizon, count, *act_space.shape), dtype=np.float32))
        rew_buf = np.zeros((horizon, count), dtype=np.float32)
        obs = np.stack(first).astype(dtype, copy=False)
        detached = {k: v.detach() for k, v in params.items()}
        device = next(iter(detached.values())).device
        for t in range(horizon):
            obs_buf[t] = obs
            with torch.no_grad():
                dist_params, _ = functional_call(policy, detached,
                                                 (torch.from_numpy(obs_buf[t]).to(device),))
                actions = sample_actions(policy, dist_params, gen)
            act_np = actions.numpy()
            act_buf[t] = act_np
            if not discrete:
                act_np = np.clip(act_np, act_space.low, act_space.high)
            nxt = []
            for k, env in enumerate(envs):
                o, r, terminated, truncated, _ = env.step(act_np[k])
                rew_buf[t, k] = r
                if terminated:  # not for HalfCheetah; keep the trajectory length fixed
                    o, _ = env.reset()
                nxt.append(o)
            obs = np.stack(nxt).astype(dtype, copy=False)
        return Trajectories(obs_buf, act_buf, rew_buf)
    finally:
        if own_pool:
            pool.close()


# --- worker processes -------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(policy_spec: dict[str, Any]) -> None:
    from agent.policies import build_policy

    torch.set_num_threads(1)
    _WORKER["policy"] = build_policy(policy_spec)
    _WORKER["pool"] = EnvPool()


def _worker_rollout(params: Params, task: Task, count: int, seed: int) -> Trajectories:
    return rollout(_WORKER["policy"], params, task, count, seed, _WORKER["pool"])


class Sampler:
    """Runs rollout jobs `(params, task, seed)`, in this process (`workers=0`) or spread over
    `workers` processes (forkserver; each builds the policy from its spec once)."""

    def __init__(self, policy: nn.Module, workers: int = 0) -> None:
        self.policy = policy
        self.workers = int(workers)
        self.pool = EnvPool()
        self._executor: ProcessPoolExecutor | None = None
        if self.workers > 0:
            spec = getattr(policy, "spec", None)
            if spec is None:
                raise ValueError("workers > 0 needs a policy built by agent.policies.build_policy")
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=mp.get_context("forkserver"),
                initializer=_worker_init, initargs=(spec,))

    def sample(self, jobs: Sequence[tuple[Params, Task, int]], count: int) -> list[Trajectories]:
        if self._executor is None:
            return [rollout(self.policy, p, task, count, seed, self.pool)
                    for p, task, seed in jobs]
        futures = [self._executor.submit(_worker_rollout,
                                         {k: v.detach().cpu().clone() for k, v in p.items()},
                                         task, count, seed) for p, task, seed in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
        self.pool.close()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
