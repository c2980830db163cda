"""Where torch runs: the device from a config's `device`, and how many CPU threads it uses.

The one home of thread choice: `set_torch_threads` for a process (a command's
`torch_threads`, a worker's 1), `torch_threads` and `torch_threads_at_most` for a block."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch

from sonic_common.errors import UserError


def choose_device(name: str = "auto") -> torch.device:
    """`auto` (cuda when there is a GPU, else cpu), `cpu`, `cuda` or `cuda:N`; a one-line
    UserError for cuda without a GPU or an unknown name."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name}: this PyTorch sees no CUDA GPU; use device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"device {name!r}: use cpu, cuda or auto") from None


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (a container's --cpus), or None."""
    try:  # cgroup v2: "max 100000" or "100000 100000"
        quota, period = open(os.path.join(root, "cpu.max")).read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(open(os.path.join(root, "cpu", "cpu.cfs_quota_us")).read())
        period_us = int(open(os.path.join(root, "cpu", "cpu.cfs_period_us")).read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """Cores this process may use: its affinity, capped by a cgroup CPU quota. In a container
    limited to 1 CPU on a 2-core host, 2 torch threads fight over one core's quota and are
    throttled (PPO ran ~7× slower in Docker before this)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.floor(limit + 0.5)))
    return max(1, n)


def set_torch_threads(n: int = 0) -> int:
    """torch intra-op threads: `n`, or (0) every core this process may run on."""
    if n <= 0:
        n = available_cpus()
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Exactly `n` torch threads inside the block (0: unchanged); the previous count after."""
    threads = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def torch_threads_at_most(
    n: int, device: torch.device | None = None
) -> contextlib.AbstractContextManager[None]:
    """At most `n` torch threads inside the block (on a CPU device; a GPU device: unchanged).
    Batch-1 inference while stepping emulators gains nothing from more threads, and spinning
    OpenMP threads fight the environment workers for the cores."""
    on_cpu = device is None or device.type == "cpu"
    return torch_threads(min(torch.get_num_threads(), n) if n > 0 and on_cpu else 0)
