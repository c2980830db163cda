"""Agent handles: one small interface for an agent running as a local process or a container.

The runner only calls `wait`, `kill` and `finish` (see `AgentHandle`). `LocalAgent` runs a
command under a guard process (`evaluation/contest/agent_guard.py`) that kills whatever the agent
started, even a process that left its group with setsid(), and the agent itself when the runner
dies; its stdout and stderr go to one log file and, when asked, it gets an address-space limit
(RLIMIT_AS).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Where the Docker runtime mounts the socket and output directories (environment variables:
# sonic_common.agent_env) inside the container.
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
# below this no agent starts (Python alone maps more), and Docker refuses under 6m: a limit this
# small is a missing unit (`--memory 4` for 4g), which would look like the agent's crash
MIN_MEMORY = 64 << 20


def parse_memory(text: str | int | None) -> int | None:
    """'4g', '512m', '1073741824' → bytes (Docker's notation); None stays None."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", text.lower())
    if not match:
        raise ValueError(f"bad memory size {text!r}: write e.g. 512m or 4g")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size < MIN_MEMORY:
        raise ValueError(f"{text!r} is below the 64m an agent needs (a unit left out? e.g. 4g)")
    return size


GUARD = Path(__file__).with_name("agent_guard.py")


class LocalAgent:
    """An agent as a local process under its guard (`evaluation/contest/agent_guard.py`).

    The guard is a child subreaper: whatever the agent starts (setsid() included) stays in its
    tree and is killed with it. Its stdin is the lifeline: when it closes (the runner's death),
    or the guard gets SIGTERM (`kill()`), the agent and all its processes end.
    """

    def __init__(
        self, proc: subprocess.Popen[bytes], log_path: Path, memory_bytes: int | None
    ) -> None:
        self.proc = proc
        self.log_path = log_path
        self.memory_bytes = memory_bytes
        self.agent_pid: int | None = None
        self._code: int | None = None
        self._reported = False

    @classmethod
    def start(
        cls,
        cmd: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
        memory: str | int | None = None,
        lifeline: int | None = None,
    ) -> LocalAgent:
        """`lifeline`: the read end of a pipe the runner holds open (the server's), as the
        guard's stdin: the agent ends when it closes, and `kill()` signals the guard instead.
        Without it the guard's stdin is a pipe of its own, closed by `kill()`."""
        memory_bytes = parse_memory(memory)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        guard = [sys.executable, "-I", str(GUARD), "--log", str(log_path)]
        if memory_bytes is not None:
            guard += ["--memory", str(memory_bytes)]
        if cwd is not None:
            guard += ["--cwd", str(cwd)]
        proc = subprocess.Popen(
            [*guard, "--", *cmd],
            env=dict(env),
            stdin=subprocess.PIPE if lifeline is None else lifeline,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        agent = cls(proc, log_path, memory_bytes)
        try:
            agent._read_started()
        except BaseException:  # e.g. Ctrl-C while waiting: no guard is left without a reader
            agent.kill()
            proc.wait()
            raise
        return agent

    def _read_started(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode(errors="replace").split()
        if line[:1] == ["started"]:
            self.agent_pid = int(line[1])
            return
        self.kill()
        self.proc.wait()
        raise OSError(f"the agent could not start: {' '.join(line[1:]) or 'guard failed'}")

    def wait(self, timeout: float | None) -> int | None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        code = self._exit_code()
        return -1 if code is None else code  # -1: the guard died without saying (killed)

    def _exit_code(self) -> int | None:
        """The agent's code, as the guard reported it (None if the guard died first)."""
        if not self._reported and self.proc.stdout is not None:
            self._reported = True
            for raw in self.proc.stdout.read().decode(errors="replace").splitlines():
                if raw.startswith("exit "):
                    self._code = int(raw.split()[1])
            self.proc.stdout.close()
        return self._code

    def kill(self) -> None:
        """Close the guard's own lifeline, or (sharing the server's) send it SIGTERM: either
        way the guard kills the agent and everything it started."""
        if self.proc.stdin is not None:
            if not self.proc.stdin.closed:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
        elif self.proc.returncode is None:  # not reaped: the pid is still the guard's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def terminate(self) -> None:
        self.kill()

    def finish(self) -> AgentOutcome:
        self.kill()  # the leader may be gone while children it started still run
        try:
            self.proc.wait(30.0)
        except subprocess.TimeoutExpired:  # a hung guard: kill it and the agent's group
            self.proc.kill()
            self.proc.wait()
            if self.agent_pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.agent_pid, signal.SIGKILL)
        code = self._exit_code()
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
        return any(
            s in tail
            for s in (
                "MemoryError",
                "std::bad_alloc",
                "Cannot allocate memory",
                "DefaultCPUAllocator: can't allocate memory",
            )
        )
