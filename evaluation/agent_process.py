"""Agent handles: one small interface for an agent running as a local process or a container.

The runner only calls `wait`, `kill` and `finish` (see `AgentHandle`). `LocalAgent` runs a
command in its own process group (so `kill` reaches whatever it spawned), with its stdout and
stderr in one log file and, when asked, an address-space limit (RLIMIT_AS).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

# Environment variables the runner sets for every agent.
SOCKET_DIR_ENV = "CONTEST_SOCKET_DIR"  # the directory holding `sock` and `ob`
OUTPUT_DIR_ENV = "AGENT_OUTPUT_DIR"  # where the agent may write its own files
SEED_ENV = "AGENT_SEED"  # the run's seed, for the agent's own random numbers

# Where the Docker runtime mounts those directories inside the container.
CONTAINER_SOCKET_DIR = "/contest/sock"
CONTAINER_OUTPUT_DIR = "/contest/output"


@dataclass(frozen=True)
class AgentOutcome:
    exit_code: int | None  # None: never exited by itself (killed and not reaped); <0: signal
    oom_killed: bool
    log_path: Path


class AgentHandle(Protocol):
    def wait(self, timeout: float | None) -> int | None:
        """The exit code once the agent has exited; None if still running after `timeout`."""
        ...

    def kill(self) -> None:
        """Stop the agent now (and everything it started). Safe to call more than once."""
        ...

    def finish(self) -> AgentOutcome:
        """Reap the agent (kill it first if still running), close the log, say how it ended."""
        ...


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory(text: str | int | None) -> int | None:
    """'4g', '512m', '1073741824' → bytes (Docker's notation); None stays None."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", text.lower())
    if not match:
        raise ValueError(f"bad memory size {text!r}: write e.g. 512m or 4g")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


class LocalAgent:
    """An agent as a local subprocess in its own process group."""

    def __init__(self, proc: subprocess.Popen[bytes], log: IO[bytes], log_path: Path,
                 memory_bytes: int | None) -> None:
        self.proc = proc
        self._log = log
        self.log_path = log_path
        self.memory_bytes = memory_bytes

    @classmethod
    def start(cls, cmd: Sequence[str], env: Mapping[str, str], log_path: Path,
              cwd: Path | None = None, memory: str | int | None = None) -> LocalAgent:
        memory_bytes = parse_memory(memory)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed by finish()

        def limit() -> None:  # runs in the child between fork and exec
            if memory_bytes is not None:
                resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

        try:
            proc = subprocess.Popen(
                list(cmd), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, process_group=0,
                preexec_fn=limit if memory_bytes is not None else None,
            )
        except OSError:
            log.close()
            raise
        return cls(proc, log, log_path, memory_bytes)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    def finish(self) -> AgentOutcome:
        code = self.proc.poll()
        self.kill()  # the leader may be gone while children it started still run
        if code is None:
            code = self.wait(10.0)
        self._log.close()
        return AgentOutcome(code, self._oom(code), self.log_path)

    def _oom(self, code: int | None) -> bool:
        """Under RLIMIT_AS, running out shows as a MemoryError / failed allocation in the log."""
        if self.memory_bytes is None or code in (0, None):
            return False
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 8192))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return False
        return any(s in tail for s in ("MemoryError", "std::bad_alloc", "Cannot allocate memory",
                                       "DefaultCPUAllocator: can't allocate memory"))
