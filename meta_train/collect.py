"""Collecting a meta-iteration's data: for each task, D_0 sampled with θ, one inner step, D_1
sampled with θ_1, ... D_S with θ_S (the post-update trajectories), as `TaskBatch`es.

A sampler is anything with `submit(jobs, count)`: jobs `(params, task, seed)` in, a list of
(indices of the jobs in a chunk, future of their `Trajectories`) out (meta_train.sampler's
`Sampler` and meta_train.level_sampler's `LevelSampler`). A chunk that is back is prepared and
adapted, and its next step sent out, while the workers sample the others; the result does not
depend on the order in which chunks come back (each job carries its own seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Protocol

import torch

from agent.learners.adaptation import AdvantageBatch, Params, Trajectories
from meta_train.meta_learner import MetaLearner, TaskBatch
from meta_train.sampler import Job
from meta_train.tasks import Task

Chunks = list[tuple[list[int], "Future[list[Trajectories]]"]]


class SubmitsJobs(Protocol):
    def submit(self, jobs: Sequence[Job], count: int) -> Chunks: ...


def collect(
    learner: MetaLearner,
    sampler: SubmitsJobs,
    tasks: Sequence[Task],
    count: int,
    seeds: Sequence[Sequence[int]],
) -> list[TaskBatch]:
    """`count` trajectories per task and step; seeds[i][j]: the rollout seed of task i, step j."""
    steps = learner.adapt_steps
    current = [learner.detached() for _ in tasks]
    train: list[list[AdvantageBatch]] = [[] for _ in tasks]
    valid: list[AdvantageBatch | None] = [None] * len(tasks)

    def send(idx: Sequence[int], step: int) -> dict[Future, tuple[list[int], int]]:
        chunks = sampler.submit([(current[i], tasks[i], int(seeds[i][step])) for i in idx], count)
        return {fut: ([idx[k] for k in part], step) for part, fut in chunks}

    pending = send(range(len(tasks)), 0)
    while pending:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for fut in done:
            idx, step = pending.pop(fut)
            for i, traj in zip(idx, fut.result(), strict=True):
                data = learner.prepare(traj)
                if step < steps:
                    train[i].append(data)
                    current[i] = learner.adapted_detached(current[i], data)
                else:
                    valid[i] = data
            if step < steps:
                pending.update(send(idx, step + 1))
    return [
        task_batch(learner, task, train[i], valid[i], current[i]) for i, task in enumerate(tasks)
    ]


def task_batch(
    learner: MetaLearner,
    task: Task,
    train: list[AdvantageBatch],
    valid: AdvantageBatch | None,
    adapted: Params,
) -> TaskBatch:
    """The task's batch, with π_old: the adapted policy's log-probabilities and distribution
    parameters on D_S at sampling time."""
    assert valid is not None
    with torch.no_grad():
        logp, dist_params = learner.log_prob(adapted, valid)
    return TaskBatch(task, train, valid, logp, dist_params)
