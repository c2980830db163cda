"""One evaluation run: the environment server and one agent, supervised, with results amended.

    server  = python -m evaluation serve ...   (its own process: the emulator lives there)
    agent   = python -m <module>   (local; the module from the registry, evaluation/agents.py)
              or image sonic-maml-agent-<name>:latest   (docker)

The agent gets CONTEST_SOCKET_DIR (the socket directory), AGENT_OUTPUT_DIR (D/agent) and
AGENT_SEED. The server enforces the budget and wall clock and writes monitor.csv, progress.csv
and results.json; the runner kills the agent when the server ends (after a grace period), stops
the server when the agent ends, and amends results.json with how the agent ended.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evaluation.agents import agent_entry
from evaluation.contest.agent_process import (
    CONTAINER_OUTPUT_DIR,
    CONTAINER_SOCKET_DIR,
    AgentHandle,
    AgentOutcome,
    LocalAgent,
    parse_memory,
)
from evaluation.contest.protocol import SOCKET_NAME
from evaluation.contest.records import (
    MONITOR,
    PROGRESS,
    RESULTS,
    DirLock,
    EpisodeRow,
    last_reading,
    lock_dir,
    publish_records,
    read_monitor,
    read_results,
    score,
    utc_now,
)
from evaluation.contest.resume import ResumePoint, resume_point
from evaluation.contest.rules import WALLCLOCK_S
from evaluation.contest.serve_cli import MAX_SEED
from roms_setup.levels import Level
from sonic_common.agent_env import OUTPUT_DIR_ENV, SEED_ENV, SOCKET_DIR_ENV
from sonic_common.errors import UserError
from sonic_common.files import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PREFIX = "sonic-maml-agent-"
SERVER_START_TIMEOUT_S = 120.0
AGENT_GRACE_S = 10.0  # after the server ends, how long the agent may take to exit by itself
SERVER_GRACE_S = 3.0  # after the agent ends, how long the server may take to notice
WALLCLOCK_GRACE_S = 30.0  # the runner's own backstop beyond the server's wall clock
POLL_S = 0.2


@dataclass
class RunSpec:
    agent: str  # a registry name: its module locally, image sonic-maml-agent-<name>:latest
    level: Level
    seed: int
    budget: int
    results_dir: Path
    runtime: str = "local"  # "local" | "docker"
    wallclock_s: float = WALLCLOCK_S
    agent_cmd: list[str] | None = None  # local: any command instead of the registry's module
    image: str | None = None  # docker: explicit image tag
    gpus: bool = False
    record: bool = False
    agent_args: list[str] = field(default_factory=list)
    memory: str | None = None  # e.g. "4g": RLIMIT_AS locally, the container's limit in docker
    cpus: float | None = None  # docker only
    pids: int | None = None  # docker only
    idle_timeout_s: float | None = None  # None: the server's default
    wallclock_grace_s: float = WALLCLOCK_GRACE_S  # the runner's backstop beyond the wall clock
    # continue an interrupted run in results_dir from its agent's resume point, when it has a
    # valid one (evaluation/contest/resume.py); otherwise the run is played again from the start
    resume: bool = False


def image_for(spec: RunSpec) -> str:
    return spec.image or f"{IMAGE_PREFIX}{spec.agent}:latest"


def local_agent_cmd(spec: RunSpec) -> list[str]:
    if spec.agent_cmd:
        return list(spec.agent_cmd) + list(spec.agent_args)
    module = agent_entry(spec.agent).module
    # -P: the agent runs in the user's directory (its relative paths mean what the user meant)
    # without that directory shadowing the project's packages
    return [sys.executable, "-P", "-m", module, *spec.agent_args]


def check_results_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"--out {path} is a file: name a directory") from None
    except OSError as e:
        raise UserError(f"cannot create results dir {path}: {e.strerror}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"results dir {path} is not writable: choose another --out")


# A run's own records: a directory holding one of them is a results directory (not the lock,
# which run_one takes before it clears)
RUN_RECORDS = (RESULTS, MONITOR, PROGRESS, "server.log")


def _holds_something(path: Path) -> bool:
    """A file, or a directory that is not empty (an empty one loses nothing when removed)."""
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def check_not_someone_elses(results_dir: Path) -> None:
    """A new run clears what a previous run left (PREVIOUS_RUN: agent/, movies/, ...): refuse a
    directory that holds such names but no run's records (`--out .` in a source tree). For the
    user's `--out` (run_one's callers, suites and the pipeline, own their run directories, and a
    killed attempt may leave only agent/)."""
    if any((results_dir / name).exists() for name in RUN_RECORDS):
        return
    theirs = [name for name in PREVIOUS_RUN if _holds_something(results_dir / name)]
    if theirs:
        raise UserError(
            f"--out {results_dir} holds {', '.join(theirs)} but no run's records, and a run "
            "would replace them: choose a new or empty directory"
        )


def server_cmd(spec: RunSpec, socket_dir: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "evaluation",
        "serve",
        "--level",
        spec.level.id,
        "--socket",
        str(socket_dir),
        "--budget",
        str(spec.budget),
        "--wallclock",
        repr(float(spec.wallclock_s)),
        "--seed",
        str(spec.seed),
        "--agent",
        spec.agent,
        "--runtime",
        spec.runtime,
    ]
    if spec.idle_timeout_s is not None:
        cmd += ["--idle-timeout", repr(float(spec.idle_timeout_s))]
    if spec.record:
        cmd.append("--record")
    return cmd


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _stop_process(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    """SIGTERM, wait `grace` s, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
    return proc.poll()


def amend_status(status: str, exit_code: int | None, oom: bool, agent_ended_first: bool) -> str:
    """The final status, from the server's and how the agent ended.

    The server's verdict stands when the run ended for a reason of its own (budget, wall clock,
    protocol error, idle timeout, environment error). When the agent ended the run (it hung up,
    or the runner stopped the server because the agent had exited), the agent's exit decides:
    oom, agent_crashed (non-zero code or a signal) or agent_exited (code 0).
    """
    agent_ended = status == "agent_exited" or (
        agent_ended_first and status in ("interrupted", "running")
    )
    if not agent_ended:
        return status
    if oom:
        return "oom"
    if exit_code is not None and exit_code != 0:
        return "agent_crashed"
    return "agent_exited"


def local_agent_env(extra: dict[str, str]) -> dict[str, str]:
    """A local agent's environment: this one, `extra`, and the project's packages on its path
    (`python -m agent.X` must find them wherever it is started from; it runs in the user's
    directory, where the paths among its arguments were given)."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def _start_agent(
    spec: RunSpec, socket_dir: Path, output_dir: Path, log_path: Path, lifeline: int
) -> AgentHandle:
    base_env = {OUTPUT_DIR_ENV: str(output_dir.resolve()), SEED_ENV: str(spec.seed)}
    if spec.runtime == "local":
        env = local_agent_env(
            {**base_env, SOCKET_DIR_ENV: str(socket_dir), "PYTHONUNBUFFERED": "1"}
        )
        return LocalAgent.start(
            local_agent_cmd(spec),
            env,
            log_path,
            cwd=Path.cwd(),
            memory=spec.memory,
            lifeline=lifeline,
        )
    if spec.runtime == "docker":
        from evaluation.docker.runtime import DockerAgent  # only docker runs need the SDK

        env = {
            **base_env,
            SOCKET_DIR_ENV: CONTAINER_SOCKET_DIR,
            OUTPUT_DIR_ENV: CONTAINER_OUTPUT_DIR,
            "PYTHONUNBUFFERED": "1",
        }
        return DockerAgent.start(
            image=image_for(spec),
            socket_dir=socket_dir,
            output_dir=output_dir,
            env=env,
            memory=spec.memory,
            cpus=spec.cpus,
            pids=spec.pids,
            gpus=spec.gpus,
            log_path=log_path,
            # the image's entry point runs `python -m agent.NAME "$@"`: the args after `--`
            command=list(spec.agent_args) or None,
            lifeline=lifeline,
        )
    raise UserError(f"unknown runtime {spec.runtime!r}: choose local or docker")


def _wait_for_socket(server: subprocess.Popen[bytes], sock: Path, server_log: Path) -> None:
    end = time.monotonic() + SERVER_START_TIMEOUT_S
    while not sock.exists():
        if server.poll() is not None:
            detail = _last_line(server_log) or f"exit code {server.returncode}"
            raise UserError(f"the environment server did not start: {detail} (see {server_log})")
        if time.monotonic() > end:
            _stop_process(server, 5.0)
            raise UserError(
                f"the environment server did not listen within "
                f"{SERVER_START_TIMEOUT_S:g} s (see {server_log})"
            )
        time.sleep(0.02)


def check_spec(spec: RunSpec) -> None:
    """Refuse bad input before anything starts (one-line UserErrors)."""
    spec.results_dir = Path(spec.results_dir)
    if spec.runtime not in ("local", "docker"):
        raise UserError(f"unknown runtime {spec.runtime!r}: choose local or docker")
    if spec.budget <= 0:
        raise UserError(f"budget must be positive, got {spec.budget}")
    if not 0 <= spec.seed <= MAX_SEED:
        raise UserError(f"--seed must be between 0 and {MAX_SEED}, got {spec.seed}")
    for name, value in (("--wallclock", spec.wallclock_s), ("--idle-timeout", spec.idle_timeout_s)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name} must be a finite number of seconds, got {value}")
    if spec.wallclock_s <= 0:
        raise UserError(f"--wallclock must be above 0, got {spec.wallclock_s}")
    try:
        parse_memory(spec.memory)
    except ValueError as e:
        raise UserError(f"--memory: {e}") from None
    if spec.runtime == "local":
        local_agent_cmd(spec)  # fail early on an unknown agent


# What a previous run left in a results directory: removed before a new run starts, so that
# nothing (movies replayed by `video`, the agent's files) is taken for the new run's.
PREVIOUS_RUN = (RESULTS, MONITOR, PROGRESS, "server.log", "agent.log", "movies", "agent")


def clear_previous_run(results_dir: Path, keep: tuple[str, ...] = ()) -> None:
    for name in PREVIOUS_RUN:
        if name in keep:
            continue
        path = results_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@dataclass
class Running:
    """The live parts of one run: private directories, pipes, the server, the agent."""

    spec: RunSpec
    socket_dir: Path
    records: Path  # the server's records: private, published into results_dir by the runner
    lifeline: int  # write end: the server and the agent's guard end when it closes
    # The read end of the server's own lifeline, for what ends the agent when the runner dies
    # (the local guard, the Docker reaper): one pipe, so a server that sees its agent killed
    # for that always also sees why (the runner gone, not the agent's doing). -1 once closed.
    agent_lifeline: int
    results_pipe: ResultReader
    server: subprocess.Popen[bytes]
    agent: AgentHandle | None = None
    agent_ended_first: bool = False
    backstop: bool = False
    keep_records: bool = False  # the results could not be published: the records stay
    resume: ResumePoint | None = None  # where the server continued the stopped run from


class ResultReader(threading.Thread):
    """Reads the server's final results from its result pipe (a path no agent can write)."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.results: dict[str, Any] | None = None

    def run(self) -> None:
        with os.fdopen(self.fd, "rb") as f:
            data = f.read()
        with contextlib.suppress(ValueError):
            value = json.loads(data.decode("utf-8", "replace").strip() or "null")
            self.results = value if isinstance(value, dict) else None


def _start_server(spec: RunSpec, lock: DirLock, resume: ResumePoint | None = None) -> Running:
    socket_dir = Path(tempfile.mkdtemp(prefix="contest-"))
    os.chmod(socket_dir, 0o755)
    records = Path(tempfile.mkdtemp(prefix="contest-records-"))  # 0700: the runner's only
    extra: list[str] = []
    if resume is not None:
        # beside the records, in the runner's private directory: the agent cannot change it
        point_file = records / "resume-point.json"
        try:
            point_file.write_text(resume.to_json())
        except BaseException:
            shutil.rmtree(records, ignore_errors=True)
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        extra = ["--resume-from", str(point_file)]
    life_r, life_w = os.pipe()
    res_r, res_w = os.pipe()
    cmd = server_cmd(spec, socket_dir) + [
        "--out",
        str(records),
        "--publish-dir",
        str(spec.results_dir.resolve()),
        "--lifeline-fd",
        str(life_r),
        "--result-fd",
        str(res_w),
        *extra,
    ]
    try:
        with open(spec.results_dir / "server.log", "wb") as slog:
            # the server keeps the results directory's lock: an orphan still holds it
            server = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=slog,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(life_r, res_w, lock.fd),
            )
    except BaseException:
        for fd in (life_r, life_w, res_r, res_w):
            os.close(fd)
        shutil.rmtree(records, ignore_errors=True)
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    os.close(res_w)
    reader = ResultReader(res_r)
    reader.start()
    return Running(spec, socket_dir, records, life_w, life_r, reader, server, resume=resume)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run one agent on one level; return the final results.json content.

    Raises UserError for bad input (unknown agent, results dir not writable, the server not
    starting, e.g. a level not imported); never for what the agent does.
    """
    from roms_setup.installed import require_playable

    check_spec(spec)
    require_playable(spec.level)
    check_results_dir(spec.results_dir)
    lock = lock_dir(spec.results_dir)
    try:
        if spec.runtime == "docker":  # an orphan of an earlier attempt must not write on
            from evaluation.docker.runtime import remove_earlier_containers

            remove_earlier_containers(spec.results_dir / "agent", spec.results_dir / "agent.log")
        point = resume_point_for(spec)
        if isinstance(point, ResumePoint):
            spec = replace(spec, agent_args=[*spec.agent_args, "--resume"])
            keep_logs(spec.results_dir, len(point.history) + 1)
            # the records stay until the new server publishes its own: a stop in between
            # leaves the run as resumable as it was
            clear_previous_run(spec.results_dir, keep=("agent", RESULTS, MONITOR, PROGRESS))
        else:
            clear_previous_run(spec.results_dir)
            clear_old_logs(spec.results_dir)
        output_dir = spec.results_dir / "agent"
        output_dir.mkdir(exist_ok=isinstance(point, ResumePoint))
        run = _start_server(spec, lock, point if isinstance(point, ResumePoint) else None)
        try:
            outcome, start_error = _supervise(run, output_dir)
            results = _amend(run, outcome, start_error)
        finally:
            _close_run(run)
        if isinstance(point, str):
            results["resume_refused"] = point
            write_json_atomic(spec.results_dir / RESULTS, results)
        return results
    finally:
        lock.close()


def resume_point_for(spec: RunSpec) -> ResumePoint | str | None:
    """Where the run continues (spec.resume), why it cannot, or None: not asked to."""
    if not spec.resume:
        return None
    if spec.record:  # the movies of the kept episodes and the new ones would not line up
        return "movies are recorded (--record): a continued run's movies would not match"
    previous = read_results(spec.results_dir)
    if not isinstance(previous, dict):
        return "no results.json from the stopped run"
    mine = {"level": spec.level.id, "agent": spec.agent, "seed": spec.seed, "budget": spec.budget}
    differ = [k for k, v in mine.items() if previous.get(k) != v]
    if differ:
        return f"the stopped run had another {', '.join(differ)}"
    return resume_point(spec.results_dir, previous)


def clear_old_logs(results_dir: Path) -> None:
    """The logs kept from stopped attempts, when the run is played again from the start."""
    for pattern in ("server.log.*", "agent.log.*"):
        for path in results_dir.glob(pattern):
            with contextlib.suppress(OSError):
                path.unlink()


def keep_logs(results_dir: Path, attempt: int) -> None:
    """The stopped attempt's logs stay beside the new ones, as server.log.1, agent.log.1, ..."""
    for name in ("server.log", "agent.log"):
        with contextlib.suppress(OSError):
            os.replace(results_dir / name, results_dir / f"{name}.{attempt}")


def _release_agent_lifeline(run: Running) -> None:
    """The runner's copy of the read end: the guard holds its own once started."""
    if run.agent_lifeline >= 0:
        with contextlib.suppress(OSError):
            os.close(run.agent_lifeline)
        run.agent_lifeline = -1


def _close_run(run: Running) -> None:
    _release_agent_lifeline(run)
    with contextlib.suppress(OSError):
        os.close(run.lifeline)
    shutil.rmtree(run.socket_dir, ignore_errors=True)
    if not run.keep_records:
        shutil.rmtree(run.records, ignore_errors=True)


def _supervise(run: Running, output_dir: Path) -> tuple[AgentOutcome | None, str | None]:
    """Start the agent, supervise both; return how the agent ended (or why it never started)."""
    spec, server = run.spec, run.server
    agent_log = spec.results_dir / "agent.log"
    try:
        _wait_for_socket(server, run.socket_dir / SOCKET_NAME, spec.results_dir / "server.log")
        try:
            run.agent = _start_agent(
                spec, run.socket_dir, output_dir, agent_log, run.agent_lifeline
            )
        except UserError:
            raise
        except Exception as e:
            run.agent_ended_first = True
            _stop_process(server, 10.0)
            return None, f"the agent could not start: {e.__class__.__name__}: {e}"
        finally:
            _release_agent_lifeline(run)
        _watch(run, run.agent)
        return run.agent.finish(), None
    except BaseException:  # Ctrl-C / SIGTERM: the server first, so it records `interrupted`
        _stop_process(server, 10.0)
        if run.agent is not None:
            run.agent.kill()
            with contextlib.suppress(Exception):
                run.agent.finish()
        raise


def _watch(run: Running, agent: AgentHandle) -> None:
    """Until the agent or the server ends (or the backstop past the wall clock)."""
    spec, server = run.spec, run.server
    deadline = time.monotonic() + spec.wallclock_s + spec.wallclock_grace_s
    while True:
        code = agent.wait(POLL_S)
        if code is not None:  # the agent ended: the server should notice at once
            try:
                server.wait(SERVER_GRACE_S)  # its own verdict (e.g. interrupted) stands
            except subprocess.TimeoutExpired:  # e.g. it never connected
                run.agent_ended_first = True
                _stop_process(server, 10.0)
            return
        if server.poll() is not None:  # the server ended: the agent has been told
            if agent.wait(AGENT_GRACE_S) is None:
                agent.kill()
            return
        if time.monotonic() > deadline:
            run.backstop = True
            agent.kill()
            _stop_process(server, 10.0)
            return


def recovered_results(
    spec: RunSpec, records: Path, error: str, resume: ResumePoint | None = None
) -> dict[str, Any]:
    """results.json for a server that died without its final results: the finished episodes
    in its monitor.csv count (the cut-off one is unknown), status env_error. A continued run's
    records start with the stopped run's episodes; `resume` adds its history and start."""
    rows: list[EpisodeRow] = []
    with contextlib.suppress(OSError, ValueError, KeyError):
        _, rows = read_monitor(records / MONITOR)
    steps = sum(row.l for row in rows)
    results = {
        "level": spec.level.id,
        "agent": spec.agent,
        "seed": spec.seed,
        "score": score(rows),
        "episodes": len([r for r in rows if not r.cut]),
        "timesteps": max(steps + len(rows), last_reading(records).timesteps),
        "wallclock_s": rows[-1].t if rows else None,
        "status": "env_error",
        "budget": spec.budget,
        "wallclock_limit_s": spec.wallclock_s,
        "runtime": spec.runtime,
        "error": error,
        "started_at": None,
        "finished_at": utc_now(),
        "steps": steps,
        "resets": len(rows),
        "cut_episode": None,
    }
    if resume is not None:
        results["started_at"] = resume.started_at
        results["resumed"] = [*resume.history, resume.record(spec.seed)]
    return results


def _server_results(run: Running) -> dict[str, Any]:
    """The server's final results, from its pipe; recovered from its records if it died."""
    run.results_pipe.join(10.0)
    results = run.results_pipe.results
    if results is not None and results.get("status") != "running":
        return results
    code = run.server.returncode
    how = (
        f"killed by {signal.Signals(-code).name}"
        if code is not None and code < 0
        else f"exit code {code}"
    )
    detail = _last_line(run.spec.results_dir / "server.log")
    if run.backstop:
        error = "the server did not end at its wall-clock limit: the runner stopped it"
    else:
        error = f"the environment server died ({how}) without its results"
    return recovered_results(
        run.spec,
        run.records,
        f"{error}: {detail}" if detail and code and code > 0 else error,
        run.resume,
    )


def _amend(
    run: Running, outcome: AgentOutcome | None, start_error: str | None = None
) -> dict[str, Any]:
    spec = run.spec
    results = _server_results(run)
    exit_code = outcome.exit_code if outcome else None
    oom = outcome.oom_killed if outcome else False
    status = amend_status(results.get("status", "env_error"), exit_code, oom, run.agent_ended_first)
    if start_error:
        status, results["error"] = "agent_crashed", start_error
    elif status in ("agent_crashed", "oom", "agent_exited") and run.agent_ended_first:
        # the runner stopped the server because the agent had ended: the agent's end is the
        # news, not the server's "stopped by SIGTERM"
        results["error"] = (
            f"the agent exited with code {exit_code} after {results.get('timesteps', 0)} timesteps"
        )
    elif status == "agent_crashed" and not results.get("error"):
        results["error"] = f"the agent exited with code {exit_code}"
    elif status == "agent_crashed" and exit_code is not None:
        results["error"] = f"{results['error']}; the agent exited with code {exit_code}"
    results["status"] = status
    results["agent_exit_code"] = exit_code
    results["agent_oom"] = oom
    results["agent_cmd"] = (
        shlex.join(local_agent_cmd(spec))
        if spec.runtime == "local"
        else shlex.join([image_for(spec), *spec.agent_args])
    )
    results["agent_log"] = str(outcome.log_path) if outcome else None
    _publish(run, results)
    return results


def _publish(run: Running, results: dict[str, Any]) -> None:
    """The server's records and the amended results into the results directory, now that the
    agent and everything it started are gone (nothing can overwrite them any more)."""
    spec = run.spec
    error = publish_records(run.records, spec.results_dir)
    if error is None:
        try:
            write_json_atomic(spec.results_dir / RESULTS, results)
        except OSError as e:
            error = f"{e.__class__.__name__}: {e}"
    if error is not None:
        run.keep_records = True  # the private records are all there is: keep them
        with contextlib.suppress(OSError):
            write_json_atomic(run.records / RESULTS, results)
        raise UserError(
            f"cannot write the results into {spec.results_dir} ({error}): free some space or "
            f"check the directory; the run ended with status={results['status']} "
            f"score={results.get('score')} episodes={results.get('episodes')}, and its records "
            f"are kept in {run.records}"
        )
