"""The guard of a local agent: starts it, and ends it with every process it ever started.

    python -I evaluation/contest/agent_guard.py --log LOG [--memory BYTES] [--cwd DIR] -- CMD...

Standard library only, run by file path with `-I`, so that nothing in the agent's environment
changes what the guard imports. The guard is a child subreaper (PR_SET_CHILD_SUBREAPER): a
process the agent starts, even one that calls setsid() or double-forks, stays a descendant of
the guard, so the guard can always find and kill it. Its stdin is the lifeline, whose write
end the runner keeps: under `evaluation run` the environment server's own lifeline (so the
server sees the runner gone no later than the guard does), elsewhere a pipe of its own. When
it closes (the runner died, or ended the agent), or on SIGTERM (the runner ends the agent),
the guard kills the whole tree. When the agent's own process ends, the rest of its tree is
killed too. On stdout the guard writes `started PID` and, at the end, `exit CODE` (CODE as
subprocess.Popen.returncode: negative for a signal).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import select
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
POLL_S = 0.1
stopping = False  # set by SIGTERM: end the agent as if the lifeline had closed


def on_sigterm(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def descendants(root: int) -> list[int]:
    """Every process under `root`, found through the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def reap() -> None:
    """Collect every exited child (orphans of the agent come to the guard)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_tree() -> None:
    """SIGKILL every descendant until none is left (a killed process cannot fork again)."""
    me = os.getpid()
    while True:
        pids = descendants(me)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
        reap()


def start_agent(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    memory = args.memory

    def limit() -> None:  # in the child between fork and exec
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    with open(args.log, "ab") as log:
        return subprocess.Popen(
            args.cmd,
            cwd=args.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=limit,
        )


def supervise(agent: subprocess.Popen[bytes]) -> int:
    """Wait for the agent to exit or the lifeline to close; then kill everything left."""
    lifeline = sys.stdin.fileno()
    while agent.poll() is None:
        if stopping or select.select([lifeline], [], [], POLL_S)[0]:
            # EOF or a byte on the lifeline, or SIGTERM: end the agent now
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()  # before kill_tree() reaps anything: keep the leader's status
            break
        reap_others(agent.pid)
    kill_tree()
    return int(agent.returncode)


def reap_others(leader: int) -> None:
    """Reap orphans that came to the guard, never the leader (Popen must see its status)."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == leader:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)


def main() -> int:
    p = argparse.ArgumentParser(prog="agent_guard")
    p.add_argument("--log", required=True)
    p.add_argument("--memory", type=int, default=None)
    p.add_argument("--cwd", default=None)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.cmd and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    # the runner decides when the agent ends: a terminal's Ctrl-C goes to the server
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)
    set_subreaper()
    try:
        agent = start_agent(args)
    except OSError as e:
        print(f"error {e.__class__.__name__}: {e}", flush=True)
        return 1
    print(f"started {agent.pid}", flush=True)
    code = supervise(agent)
    print(f"exit {code}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
