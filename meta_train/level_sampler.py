"""Trajectory sampling on game levels: emulators in worker processes, the policy in this one.

    with LevelSampler(policy, envs=8) as sampler:
        trajs = sampler.sample([(params, task, seed), ...], count)   # one Trajectories per job

The same interface as `meta_train.sampler.Sampler`, for tasks of kind `levels`
(meta_train.tasks). stable-retro allows one emulator per process, so:

- `envs` worker processes (forkserver: fresh interpreters that inherit nothing, least of all an
  emulator) each hold at most one level environment (`agent.training.level_envs.LevelEnv`: the
  contest environment plus the agent-side wrappers) and so at most one emulator. A worker switches
  levels by closing its emulator before opening the next level's (meta_train.level_worker).
  This process never opens an emulator: building the sampler, the policy (whose spaces come
  from the lazy LevelEnv) and sampling all leave it free to open its own.
- The policy stays here; no parameters travel. For each job the K trajectories run in
  lock-step, in chunks of `envs` trajectories (one chunk when envs ≥ K), with ONE batched policy
  forward per time step on the policy's device (CUDA when the policy is there), the frames
  moved to it as uint8. On the CPU that forward runs with `threads` intra-op threads (default
  1) whatever `torch.set_num_threads` says for learning: PyTorch's spinning OpenMP threads
  fight the emulator workers for the cores (measured on 2 cores: 600 steps of 2 trajectories in
  1.6 s with one thread, 36.7 s with two).
- Every trajectory starts with a seeded reset on the job's level (the worker reopens the
  emulator: a freshly loaded state and a freshly seeded sticky-action generator). An episode
  that ends before the horizon (game over, or the contest's 4500-step limit) is followed at once
  by a fresh one on the same level; `dones[t, k]` is True at the step that ended it.

Reproducible: trajectory k of a job `(params, task, seed)` resets with the k-th of
`job_seeds(seed, K)` and draws its actions from its own `torch.Generator` (seeded from the job's
noise seed), so a job's trajectories are the same whatever ran before on the workers and
whatever the number of workers (up to the last bits of a batched forward pass).

Stored: observations uint8 (T, K, 4, 84, 84), actions int64 (T, K), rewards float32 (T, K) as
the agent sees them (backtracking, then × reward_scale), dones bool (T, K).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from agent.wrappers import WrapperConfig
from meta_train.level_worker import Failure, worker_main
from meta_train.sampler import Params, Trajectories, done_future, job_seeds, sample_categorical
from meta_train.tasks import Task
from sonic_common.devices import torch_threads


def trajectory_generators(noise_seed: int, count: int) -> list[torch.Generator]:
    """One action-noise generator per trajectory, from a job's noise seed."""
    states = np.random.SeedSequence(int(noise_seed)).generate_state(count, dtype=np.uint64)
    return [torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF) for s in states]


def wrap_kwargs(task: Task) -> dict[str, Any]:
    """The agent-side wrapper settings of a level task."""
    return WrapperConfig.from_dict(task).as_dict()


class LevelSampler:
    """Runs rollout jobs `(params, task, seed)` of level tasks on `envs` worker processes."""

    def __init__(self, policy: nn.Module, envs: int, threads: int = 1) -> None:
        if int(envs) < 1:
            raise ValueError(f"the level sampler needs at least one worker, got {envs}")
        if getattr(policy, "action_type", "discrete") != "discrete":
            raise ValueError("levels have discrete actions: the policy needs a categorical head")
        self.policy = policy
        self.envs = int(envs)
        self.threads = max(1, int(threads))
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        ctx = mp.get_context("forkserver")  # see the module docstring
        try:
            for _ in range(self.envs):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=worker_main, args=(child,), daemon=True, name="level-sampler-worker"
                )
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        except BaseException:
            self.close()
            raise

    # --- talking to the workers -------------------------------------------------------------

    def _recv(self, i: int) -> Any:
        try:
            reply = self._conns[i].recv()
        except (EOFError, ConnectionError, OSError):
            raise RuntimeError(
                f"level sampler worker {i} (pid {self._procs[i].pid}) died"
            ) from None
        if isinstance(reply, Failure):
            last = reply.text.strip().splitlines()[-1]
            raise RuntimeError(f"level sampler worker {i}: {last}\n{reply.text}")
        return reply

    def _call(self, workers: Sequence[int], messages: Sequence[tuple[Any, ...]]) -> list[Any]:
        for i, msg in zip(workers, messages, strict=True):
            self._conns[i].send(msg)
        return [self._recv(i) for i in workers]

    def worker_info(self) -> list[dict[str, Any]]:
        """Each worker's pid, current level and the number of emulators it opened so far."""
        return self._call(range(self.envs), [("info",)] * self.envs)

    # --- sampling -----------------------------------------------------------------------------

    def _device(self, params: Params) -> torch.device:
        for p in params.values():
            return p.device
        return next(self.policy.parameters()).device

    def rollout(self, params: Params, task: Task, count: int, seed: int) -> Trajectories:
        """`count` trajectories of the level task `task` with the policy at `params`."""
        if task.get("kind") != "levels":
            raise ValueError(f"the level sampler runs level tasks, not {task.get('kind')!r}")
        level, horizon, wrap = str(task["level"]), int(task["horizon"]), wrap_kwargs(task)
        reset_seeds, noise_seed = job_seeds(seed, count)
        gens = trajectory_generators(noise_seed, count)
        detached = {k: v.detach() for k, v in params.items()}
        device = self._device(detached)
        obs_buf: np.ndarray | None = None
        act_buf = np.zeros((horizon, count), dtype=np.int64)
        rew_buf = np.zeros((horizon, count), dtype=np.float32)
        done_buf = np.zeros((horizon, count), dtype=bool)
        for start in range(0, count, self.envs):
            ks = list(range(start, min(count, start + self.envs)))
            workers = list(range(len(ks)))
            obs = np.stack(
                self._call(workers, [("reset", level, wrap, reset_seeds[k]) for k in ks])
            )
            if obs_buf is None:
                obs_buf = np.zeros((horizon, count, *obs.shape[1:]), dtype=np.uint8)
            sl = slice(ks[0], ks[-1] + 1)
            for t in range(horizon):
                obs_buf[t, sl] = obs
                with torch.no_grad():
                    logits, _ = functional_call(
                        self.policy, detached, (torch.from_numpy(obs_buf[t, sl]).to(device),)
                    )
                actions = sample_categorical(logits, gens[sl]).numpy()
                act_buf[t, sl] = actions
                replies = self._call(workers, [("step", int(a)) for a in actions])
                obs = np.stack([r[0] for r in replies])
                rew_buf[t, sl] = [r[1] for r in replies]
                done_buf[t, sl] = [r[2] for r in replies]
        assert obs_buf is not None
        return Trajectories(obs_buf, act_buf, rew_buf, done_buf)

    def sample(self, jobs: Sequence[tuple[Params, Task, int]], count: int) -> list[Trajectories]:
        if not self._conns:
            raise RuntimeError("the level sampler is closed")
        with torch_threads(self.threads):
            return [self.rollout(p, task, count, seed) for p, task, seed in jobs]

    def submit(
        self, jobs: Sequence[tuple[Params, Task, int]], count: int
    ) -> list[tuple[list[int], Future]]:
        """`sample`, as one finished chunk (the interface of `meta_train.sampler.Sampler`)."""
        return [(list(range(len(jobs))), done_future(self.sample(jobs, count)))]

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close",))
            except (OSError, ValueError):
                pass
        for conn in self._conns:
            try:
                if conn.poll(10):
                    conn.recv()
            except (EOFError, OSError):
                pass
            conn.close()
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self._conns, self._procs = [], []

    def __enter__(self) -> LevelSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
