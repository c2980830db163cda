"""Meta-training rollouts on a Ray cluster (`python -m meta_train ... --backend ray`).

One actor per node (pinned by node affinity), each owning that node's local sampler: the one
`meta_train.loop.make_sampler` builds from the same config (the level sampler with its
emulator processes, or the HalfCheetah sampler with its workers). The trainer keeps the
policy; `submit` puts each distinct parameter set in the object store once (θ once at the first
inner step, each task's adapted parameters once at the next), splits the jobs into contiguous
chunks spread over the actors, and returns one future per chunk, whose result is the chunk's
whole trajectories: the interface of `meta_train.sampler.Sampler`, so `MetaLearner.collect`
works on the chunks that are back while the others are sampled.

A job's trajectories depend only on (parameters, task, seed) (see the samplers' docstrings), so
the same seeds give the same trajectories as the local sampler, on any number of nodes.
Parameters travel as CPU tensors; the actors' policies run on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from meta_train.sampler import Job, Params, Trajectories, chunk_indices, gather
from meta_train.tasks import Task

CHUNKS_PER_ACTOR = 2  # chunks in flight per node: one sampled while the last one travels back
ACTOR_CPUS = 1.0  # the actor's own reservation (the policy forwards); its workers are its node's


def owned(fut: Future) -> Future:
    """The trajectories of `fut` in writable arrays of this process (the object store hands
    out read-only views)."""
    out: Future = Future()

    def done(f: Future) -> None:
        try:
            out.set_result(
                [
                    replace(
                        t,
                        obs=np.array(t.obs),
                        actions=np.array(t.actions),
                        rewards=np.array(t.rewards),
                        dones=None if t.dones is None else np.array(t.dones),
                    )
                    for t in f.result()
                ]
            )
        except BaseException as e:  # the actor failed: the trainer sees its error
            out.set_exception(lost_node_error(e))

    fut.add_done_callback(done)
    return out


def lost_node_error(e: BaseException) -> BaseException:
    """A sampler actor that died (its node lost): a one-line error saying how to go on."""
    from ray.exceptions import RayActorError

    from sonic_common.errors import UserError

    if isinstance(e, RayActorError):
        return UserError(
            "a Ray sampler actor died (its node was lost or ran out of memory): "
            "rerun the same command with --resume to go on from the last "
            "iteration's checkpoint"
        )
    return e


class SamplerActor:
    """Lives on one node: that node's local sampler, built from the trainer's config."""

    def __init__(self, cfg: dict[str, Any], spec: dict[str, Any], count: int) -> None:
        from agent.policies import build_policy
        from meta_train.loop import make_sampler
        from meta_train.tasks import TaskDistribution
        from sonic_common.devices import set_torch_threads

        set_torch_threads(1)
        self.policy = build_policy(spec)
        dist = TaskDistribution.from_config(cfg)
        self.sampler = make_sampler(
            {**cfg, "backend": "local", "device": "cpu"}, self.policy, dist, count=count
        )

    def node(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def sample(
        self, params: list[Any], jobs: list[tuple[int, Task, int]], count: int
    ) -> list[Trajectories]:
        """Jobs (index into `params`, task, seed); `params`: object refs of parameter sets."""
        import ray

        sets: list[Params] = ray.get(list(params))
        return self.sampler.sample([(sets[i], task, seed) for i, task, seed in jobs], count)

    def close(self) -> None:
        self.sampler.close()


def node_ids(ray: Any) -> list[str]:
    """Live nodes with a CPU for an actor, the head first."""
    from evaluation.suites.ray_backend import alive_nodes

    return [n["NodeID"] for n in alive_nodes(ray) if n.get("Resources", {}).get("CPU", 0) >= 1]


class RaySampler:
    """One `SamplerActor` per node; `submit`/`sample`/`close` as `meta_train.sampler.Sampler`."""

    def __init__(
        self,
        policy: nn.Module,
        cfg: dict[str, Any],
        count: int,
        address: str | None = None,
        chunks_per_actor: int = CHUNKS_PER_ACTOR,
    ) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from evaluation.suites.ray_backend import connect
        from sonic_common.errors import UserError

        spec = getattr(policy, "spec", None)
        if spec is None:
            raise ValueError("the Ray sampler needs a policy built by agent.policies.build_policy")
        self.ray = connect(address)
        self.chunks_per_actor = max(1, int(chunks_per_actor))
        nodes = node_ids(self.ray)
        if not nodes:
            raise UserError("the Ray cluster has no node with a free CPU for a sampler actor")
        actor = self.ray.remote(SamplerActor)
        self.actors = [
            actor.options(
                num_cpus=ACTOR_CPUS,
                max_restarts=0,
                name=None,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            ).remote(dict(cfg), dict(spec), int(count))
            for node in nodes
        ]
        try:
            self.nodes = self.ray.get([a.node.remote() for a in self.actors])
        except Exception:
            self.close()
            raise

    def _put_params(self, jobs: Sequence[Job]) -> tuple[list[Any], list[int]]:
        """Each distinct parameter set of the jobs in the object store once; per job its
        index among them."""
        refs: list[Any] = []
        seen: dict[tuple[int, ...], int] = {}
        index = []
        for params, _, _ in jobs:
            key = tuple(v.data_ptr() for v in params.values())  # the same tensors: one put
            if key not in seen:
                seen[key] = len(refs)
                refs.append(self.ray.put({k: v.detach().cpu() for k, v in params.items()}))
            index.append(seen[key])
        return refs, index

    def submit(self, jobs: Sequence[Job], count: int) -> list[tuple[list[int], Future]]:
        """Start the jobs; [(indices of the jobs in a chunk, future of their trajectories)]."""
        if not self.actors:
            raise RuntimeError("the Ray sampler is closed")
        refs, index = self._put_params(jobs)
        out = []
        chunks = chunk_indices(len(jobs), len(self.actors) * self.chunks_per_actor)
        for n, idx in enumerate(chunks):
            used = sorted({index[i] for i in idx})
            local = {j: k for k, j in enumerate(used)}
            chunk = [(local[index[i]], jobs[i][1], int(jobs[i][2])) for i in idx]
            ref = self.actors[n % len(self.actors)].sample.remote(
                [refs[j] for j in used], chunk, int(count)
            )
            out.append((idx, owned(ref.future())))
        return out

    def sample(self, jobs: Sequence[Job], count: int) -> list[Trajectories]:
        return gather(self.submit(jobs, count), len(jobs))

    def close(self) -> None:
        actors, self.actors = getattr(self, "actors", []), []
        if not actors:
            return
        try:
            self.ray.get([a.close.remote() for a in actors], timeout=60)
        except Exception:  # an actor already gone: kill the rest below
            pass
        for a in actors:
            self.ray.kill(a)

    def __enter__(self) -> RaySampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
