"""One evaluation run: the environment server and one agent, supervised, with results amended.

    server  = python -m evaluation serve ...   (its own process: the emulator lives there)
    agent   = python -m agent.<name>  (local)  or  image sonic-maml-agent-<name>:latest (docker)

The agent gets CONTEST_SOCKET_DIR (the socket directory), AGENT_OUTPUT_DIR (D/agent) and
AGENT_SEED. The server enforces the budget and wall clock and writes monitor.csv, progress.csv
and results.json; the runner kills the agent when the server ends (after a grace period), stops
the server when the agent ends, and amends results.json with how the agent ended.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.agent_process import (
    CONTAINER_OUTPUT_DIR,
    CONTAINER_SOCKET_DIR,
    OUTPUT_DIR_ENV,
    SEED_ENV,
    SOCKET_DIR_ENV,
    AgentHandle,
    AgentOutcome,
    LocalAgent,
)
from evaluation.contest_rules import WALLCLOCK_S
from evaluation.protocol import SOCKET_NAME
from evaluation.records import RESULTS, read_results, write_json_atomic
from roms_setup.errors import UserError
from roms_setup.levels import Level

ROOT = Path(__file__).resolve().parents[1]
IMAGE_PREFIX = "sonic-maml-agent-"
SERVER_START_TIMEOUT_S = 120.0
AGENT_GRACE_S = 10.0  # after the server ends, how long the agent may take to exit by itself
SERVER_GRACE_S = 3.0  # after the agent ends, how long the server may take to notice
WALLCLOCK_GRACE_S = 30.0  # the runner's own backstop beyond the server's wall clock
POLL_S = 0.2


@dataclass
class RunSpec:
    agent: str  # name → `python -m agent.<name>` locally, image sonic-maml-agent-<name>:latest
    level: Level
    seed: int
    budget: int
    results_dir: Path
    runtime: str = "local"  # "local" | "docker"
    wallclock_s: float = WALLCLOCK_S
    agent_cmd: list[str] | None = None  # local: any command instead of python -m agent.<name>
    image: str | None = None  # docker: explicit image tag
    gpus: bool = False
    record: bool = False
    agent_args: list[str] = field(default_factory=list)
    memory: str | None = None  # e.g. "4g": RLIMIT_AS locally, the container's limit in docker
    cpus: float | None = None  # docker only
    pids: int | None = None  # docker only
    idle_timeout_s: float | None = None  # None: the server's default


def image_for(spec: RunSpec) -> str:
    return spec.image or f"{IMAGE_PREFIX}{spec.agent}:latest"


def agent_module_exists(name: str) -> bool:
    """Is there an `agent/<name>.py` (or package) — found without importing anything."""
    if not name.isidentifier():
        return False
    pkg = importlib.util.find_spec("agent")
    if pkg is None or not pkg.submodule_search_locations:
        return False
    for base in pkg.submodule_search_locations:
        if (Path(base) / f"{name}.py").is_file() or (Path(base) / name / "__main__.py").is_file():
            return True
    return False


def local_agent_cmd(spec: RunSpec) -> list[str]:
    if spec.agent_cmd:
        return list(spec.agent_cmd) + list(spec.agent_args)
    if not agent_module_exists(spec.agent):
        raise UserError(
            f"unknown agent {spec.agent!r}: there is no module agent.{spec.agent} "
            "(give an agent under agent/, or --agent-cmd)"
        )
    return [sys.executable, "-m", f"agent.{spec.agent}", *spec.agent_args]


def check_results_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create results dir {path}: {e.strerror}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"results dir {path} is not writable: choose another --results-dir")


def server_cmd(spec: RunSpec, socket_dir: Path) -> list[str]:
    cmd = [
        sys.executable, "-m", "evaluation", "serve",
        "--level", spec.level.id, "--socket", str(socket_dir),
        "--results-dir", str(spec.results_dir), "--budget", str(spec.budget),
        "--wallclock", repr(float(spec.wallclock_s)), "--seed", str(spec.seed),
        "--agent", spec.agent, "--runtime", spec.runtime,
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
        agent_ended_first and status in ("interrupted", "running"))
    if not agent_ended:
        return status
    if oom:
        return "oom"
    if exit_code is not None and exit_code != 0:
        return "agent_crashed"
    return "agent_exited"


def _start_agent(spec: RunSpec, socket_dir: Path, output_dir: Path,
                 log_path: Path) -> AgentHandle:
    base_env = {OUTPUT_DIR_ENV: str(output_dir), SEED_ENV: str(spec.seed)}
    if spec.runtime == "local":
        env = {**os.environ, **base_env, SOCKET_DIR_ENV: str(socket_dir), "PYTHONUNBUFFERED": "1"}
        # `python -m agent.X` must find the project's packages wherever it is started from
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return LocalAgent.start(local_agent_cmd(spec), env, log_path, cwd=ROOT,
                                memory=spec.memory)
    if spec.runtime == "docker":
        from evaluation.docker_runtime import DockerAgent  # only docker runs need the SDK

        env = {**base_env, SOCKET_DIR_ENV: CONTAINER_SOCKET_DIR,
               OUTPUT_DIR_ENV: CONTAINER_OUTPUT_DIR, "PYTHONUNBUFFERED": "1"}
        return DockerAgent.start(
            image=image_for(spec), socket_dir=socket_dir, output_dir=output_dir, env=env,
            memory=spec.memory, cpus=spec.cpus, pids=spec.pids, gpus=spec.gpus,
            log_path=log_path,
            # the image's entry point runs `python -m agent.NAME "$@"`: the args after `--`
            command=list(spec.agent_args) or None,
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
            raise UserError(f"the environment server did not listen within "
                            f"{SERVER_START_TIMEOUT_S:g} s (see {server_log})")
        time.sleep(0.02)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run one agent on one level; return the final results.json content.

    Raises UserError for bad input (unknown agent, results dir not writable, the server not
    starting, e.g. a level not imported); never for what the agent does.
    """
    from roms_setup.installed import require_playable

    spec.results_dir = Path(spec.results_dir)
    if spec.runtime not in ("local", "docker"):
        raise UserError(f"unknown runtime {spec.runtime!r}: choose local or docker")
    if spec.budget <= 0:
        raise UserError(f"budget must be positive, got {spec.budget}")
    require_playable(spec.level)
    check_results_dir(spec.results_dir)
    if spec.runtime == "local":
        local_agent_cmd(spec)  # fail early on an unknown agent
    output_dir = spec.results_dir / "agent"
    output_dir.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(output_dir, 0o777)  # a container user (uid 1000) writes there
    with contextlib.suppress(FileNotFoundError):
        (spec.results_dir / RESULTS).unlink()  # never read a previous run's results

    socket_dir = Path(tempfile.mkdtemp(prefix="contest-"))
    os.chmod(socket_dir, 0o755)
    server_log = spec.results_dir / "server.log"
    agent_log = spec.results_dir / "agent.log"
    agent: AgentHandle | None = None
    outcome: AgentOutcome | None = None
    agent_ended_first = False
    backstop = False
    with open(server_log, "wb") as slog:
        server = subprocess.Popen(server_cmd(spec, socket_dir), cwd=ROOT, stdout=slog,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_for_socket(server, socket_dir / SOCKET_NAME, server_log)
        try:
            agent = _start_agent(spec, socket_dir, output_dir, agent_log)
        except UserError:
            raise
        except Exception as e:
            _stop_process(server, 10.0)
            return _amend(spec, None, agent_ended_first=True, backstop=False,
                          start_error=f"the agent could not start: {e.__class__.__name__}: {e}")
        deadline = time.monotonic() + spec.wallclock_s + WALLCLOCK_GRACE_S
        while True:
            code = agent.wait(POLL_S)
            if code is not None:  # the agent ended: the server should notice at once
                try:
                    server.wait(SERVER_GRACE_S)  # its own verdict (e.g. interrupted) stands
                except subprocess.TimeoutExpired:  # e.g. it never connected
                    agent_ended_first = True
                    _stop_process(server, 10.0)
                break
            if server.poll() is not None:  # the server ended: the agent has been told
                if agent.wait(AGENT_GRACE_S) is None:
                    agent.kill()
                break
            if time.monotonic() > deadline:
                backstop = True
                agent.kill()
                _stop_process(server, 10.0)
                break
        outcome = agent.finish()
    except BaseException:  # Ctrl-C / SIGTERM: the server first, so it records `interrupted`
        _stop_process(server, 10.0)
        if agent is not None:
            agent.kill()
            with contextlib.suppress(Exception):
                agent.finish()
        raise
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    return _amend(spec, outcome, agent_ended_first, backstop)


def _amend(spec: RunSpec, outcome: AgentOutcome | None, agent_ended_first: bool,
           backstop: bool, start_error: str | None = None) -> dict[str, Any]:
    results = read_results(spec.results_dir)
    if results is None:
        server_log = spec.results_dir / "server.log"
        results = {
            "level": spec.level.id, "agent": spec.agent, "seed": spec.seed, "score": None,
            "episodes": 0, "timesteps": 0, "wallclock_s": None, "status": "env_error",
            "budget": spec.budget, "runtime": spec.runtime,
            "error": f"the server ended without results: {_last_line(server_log)}",
            "started_at": None,
        }
    exit_code = outcome.exit_code if outcome else None
    oom = outcome.oom_killed if outcome else False
    status = results.get("status", "env_error")
    if backstop:
        status = "wallclock"
        results["error"] = "the runner stopped the run past the wall-clock limit"
    else:
        status = amend_status(status, exit_code, oom, agent_ended_first)
    if start_error:
        status, results["error"] = "agent_crashed", start_error
    elif status == "agent_crashed" and not results.get("error"):
        results["error"] = f"the agent exited with code {exit_code}"
    elif status == "agent_crashed" and exit_code is not None:
        results["error"] = f"{results['error']}; the agent exited with code {exit_code}"
    results["status"] = status
    results["agent_exit_code"] = exit_code
    results["agent_oom"] = oom
    results["agent_cmd"] = (shlex.join(local_agent_cmd(spec)) if spec.runtime == "local"
                            else shlex.join([image_for(spec), *spec.agent_args]))
    results["agent_log"] = str(outcome.log_path) if outcome else None
    write_json_atomic(spec.results_dir / RESULTS, results)
    return results
