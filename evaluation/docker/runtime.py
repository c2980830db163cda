"""An agent in a locked-down container: the Docker side of `AgentHandle` (wait, kill, finish).

The container gets no network, a read-only root with a tmpfs /tmp, uid 1000, no capabilities,
no privilege escalation, memory (without swap), CPU and process limits, and exactly two bind
mounts: the server's socket directory and the agent's output directory. Never the ROMs or any
other host data. `finish()` saves the logs, reads whether the kernel killed it for memory, and
removes the container, whatever happens.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import docker
from docker.errors import APIError, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Mount
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from evaluation.contest.agent_process import (
    CONTAINER_OUTPUT_DIR,
    CONTAINER_SOCKET_DIR,
    AgentOutcome,
    parse_memory,
)
from evaluation.docker.daemon import docker_client
from sonic_common.errors import UserError

DEFAULT_MEMORY = "4g"
DEFAULT_CPUS = 1.0
DEFAULT_PIDS = 256
AGENT_UID = "1000:1000"
TMPFS_SIZE = "512m"
# what the daemon keeps of a container's output (json-file: two files of this size, then the
# oldest goes) and what a run's agent.log gets of it: an agent printing without end must fill
# neither the daemon's disk nor the runner's memory
LOG_FILE_SIZE = "8m"
LOG_MAX_BYTES = 16 * 2**20
# every agent container names the output directory it writes (see remove_earlier_containers)
OUTPUT_LABEL = "sonic-maml.output-dir"


def container_options(
    image: str,
    socket_dir: Path,
    output_dir: Path,
    env: dict[str, str],
    *,
    memory: str | int | None,
    cpus: float | None,
    pids: int | None,
    gpus: bool,
    name: str | None,
    entrypoint: list[str] | None = None,
    command: list[str] | None = None,
) -> dict[str, object]:
    """The keyword arguments of `containers.create` for one agent (kept apart to be testable)."""
    mem = parse_memory(memory if memory is not None else DEFAULT_MEMORY)
    options: dict[str, object] = dict(
        image=image,
        name=name,
        labels={OUTPUT_LABEL: str(output_dir.resolve())},
        environment=dict(env),
        network_mode="none",
        user=AGENT_UID,
        mem_limit=mem,
        memswap_limit=mem,  # equal: no swap
        nano_cpus=int((cpus if cpus is not None else DEFAULT_CPUS) * 1e9),
        pids_limit=pids if pids is not None else DEFAULT_PIDS,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
        tmpfs={"/tmp": f"rw,nosuid,nodev,size={TMPFS_SIZE}"},
        mounts=[
            Mount(CONTAINER_SOCKET_DIR, str(socket_dir.resolve()), type="bind"),
            Mount(CONTAINER_OUTPUT_DIR, str(output_dir.resolve()), type="bind"),
        ],
        stdin_open=False,
        tty=False,
        detach=True,
        log_config=LogConfig(
            type=LogConfig.types.JSON, config={"max-size": LOG_FILE_SIZE, "max-file": "2"}
        ),
    )
    if entrypoint is not None:
        options["entrypoint"] = entrypoint
    if command is not None:
        options["command"] = command
    if gpus:
        options["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return options


def remove_earlier_containers(output_dir: Path, log_path: Path | None = None) -> int:
    """Kill and remove the containers still writing `output_dir` on this Docker daemon (an
    earlier attempt's, when its runner was killed before its reaper had removed them), their
    logs appended to `log_path` as the reaper would; how many there were. A resumed run reads
    the agent's point there: no container of the stopped attempt may write a newer one after
    that. A UserError when the daemon cannot do it."""
    client = docker_client()
    try:  # sparse: ids only, no lookup that a container removed meanwhile would fail
        found = client.containers.list(
            all=True, sparse=True, filters={"label": f"{OUTPUT_LABEL}={output_dir.resolve()}"}
        )
        note = b"\n(an earlier attempt's container, removed by the next attempt)\n"
        for container in found:
            kill_and_remove(container, log_path, note)
    except (APIError, RequestsConnectionError, ReadTimeout) as e:
        raise UserError(
            f"could not remove an earlier attempt's container writing {output_dir}: {e}; "
            "check the Docker daemon (`python -m evaluation docker status`) and run again"
        ) from None
    return len(found)


def kill_and_remove(container: Container, log_path: Path | None, note: bytes = b"") -> None:
    """A container nobody supervises any more (its runner died): killed, its logs appended to
    `log_path` after `note`, removed (the reaper's work, and the next attempt's)."""
    with contextlib.suppress(NotFound, APIError):  # APIError: it had exited already
        container.kill()
    with contextlib.suppress(NotFound, APIError):
        if log_path is not None:
            append_logs(container, log_path, note)
    remove_container(container)


def append_logs(container: Container, log_path: Path, note: bytes = b"") -> None:
    """The container's output appended to `log_path` after `note`: streamed, its last
    LOG_MAX_BYTES kept (the end says why the agent stopped), after a line saying what was cut."""
    tail: collections.deque[bytes] = collections.deque()
    kept = total = 0
    stream = container.logs(stdout=True, stderr=True, stream=True, follow=False)
    try:
        for chunk in stream:
            tail.append(chunk)
            kept, total = kept + len(chunk), total + len(chunk)
            while kept - len(tail[0]) >= LOG_MAX_BYTES:
                kept -= len(tail.popleft())
    finally:
        getattr(stream, "close", lambda: None)()
    if total == 0:
        return
    out = b"".join(tail)[-LOG_MAX_BYTES:]
    with open(log_path, "ab") as f:
        f.write(note)
        if total > len(out):
            f.write(f"(the agent's first {total - len(out)} bytes of output cut)\n".encode())
        f.write(out)


def remove_container(container: Container) -> None:
    """Force-remove; gone already, or being removed by someone else at the same moment, is
    fine."""
    with contextlib.suppress(NotFound):
        try:
            container.remove(force=True)
        except APIError as e:
            if "in progress" not in str(e):
                raise


def _writable_by_agent(output_dir: Path) -> None:
    """The container's uid 1000 must be able to write to the output directory: given to it
    (mode 0700) when the runner is root and may; else, since a user cannot give a file away,
    mode 0777, which lets any local user write there too."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        uid, gid = (int(x) for x in AGENT_UID.split(":"))
        try:
            os.chown(output_dir, uid, gid)
            output_dir.chmod(0o700)
            return
        except OSError:  # NFS's root_squash, a user namespace without uid 1000: as a user
            pass
    with contextlib.suppress(OSError):
        output_dir.chmod(0o777)


class DockerAgent:
    """One agent container. Use `start`, then `wait`/`kill`, and always `finish`."""

    def __init__(
        self,
        client: docker.DockerClient,
        container: Container,
        log_path: Path,
        lifeline: int | None = None,
    ) -> None:
        self.client = client
        self.container = container
        self.log_path = log_path
        self._exit_code: int | None = None
        self._outcome: AgentOutcome | None = None
        # removes the container if the runner dies (see evaluation/docker/reaper.py)
        cmd = [sys.executable, "-m", "evaluation.docker.reaper", str(container.id), str(log_path)]
        self._reaper = subprocess.Popen(
            cmd + ([str(lifeline)] if lifeline is not None else []),
            pass_fds=(lifeline,) if lifeline is not None else (),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
            cwd=Path(__file__).resolve().parents[2],
        )

    @classmethod
    def start(
        cls,
        image: str,
        socket_dir: Path,
        output_dir: Path,
        env: dict[str, str],
        *,
        memory: str | int | None = DEFAULT_MEMORY,
        cpus: float | None = DEFAULT_CPUS,
        pids: int | None = DEFAULT_PIDS,
        gpus: bool = False,
        log_path: Path,
        name: str | None = None,
        entrypoint: list[str] | None = None,
        command: list[str] | None = None,
        lifeline: int | None = None,
    ) -> DockerAgent:
        """Create and start the container (with vfs, create copies the image: keep it small).
        `lifeline`: the read end of the environment server's lifeline, for the reaper."""
        client = docker_client()
        if memory is None:  # an image may ask for more than the default (images.AGENT_MEMORY)
            from evaluation.docker.images import image_memory

            memory = image_memory(client, image)
        _writable_by_agent(output_dir)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        options = container_options(
            image,
            socket_dir,
            output_dir,
            env,
            memory=memory,
            cpus=cpus,
            pids=pids,
            gpus=gpus,
            name=name,
            entrypoint=entrypoint,
            command=command,
        )
        container = client.containers.create(**options)
        agent = cls(client, container, log_path, lifeline)
        try:
            container.start()
        except BaseException:
            agent._remove()
            agent._dismiss_reaper()
            raise
        return agent

    @property
    def id(self) -> str:
        return str(self.container.id)

    def wait(self, timeout: float | None) -> int | None:
        """The exit code once the container has exited; None if still running after `timeout`."""
        if self._exit_code is not None:
            return self._exit_code
        try:
            result = self.container.wait(timeout=timeout)
        except (ReadTimeout, RequestsConnectionError):
            return None  # the SDK raises one of these when the wait times out
        self._exit_code = int(result["StatusCode"])
        return self._exit_code

    def kill(self) -> None:
        """Stop the container now. Safe to call more than once or after it exited."""
        with contextlib.suppress(NotFound, APIError):
            self.container.kill()

    def finish(self) -> AgentOutcome:
        """Kill if running, save the logs, read OOMKilled, remove the container (always)."""
        if self._outcome is not None:
            return self._outcome
        code: int | None = None
        oom = False
        try:
            self.kill()
            code = self.wait(30.0)
            with contextlib.suppress(NotFound, APIError):
                self.container.reload()
                state = self.container.attrs.get("State", {})
                oom = bool(state.get("OOMKilled", False))
                if code is None and state.get("Status") == "exited":
                    code = int(state.get("ExitCode", 0))
            self._save_logs()
        finally:
            self._remove()
            self._dismiss_reaper()
        self._outcome = AgentOutcome(code, oom, self.log_path)
        return self._outcome

    def _save_logs(self) -> None:
        try:
            append_logs(self.container, self.log_path)
        except (NotFound, APIError) as e:
            with open(self.log_path, "ab") as f:
                f.write(f"(container logs unavailable: {e})\n".encode())

    def _dismiss_reaper(self) -> None:
        reaper = self._reaper
        with contextlib.suppress(OSError):
            assert reaper.stdin is not None
            reaper.stdin.write(b"done")
            reaper.stdin.close()
        try:
            reaper.wait(10.0)
        except subprocess.TimeoutExpired:
            reaper.kill()
            reaper.wait()

    def _remove(self) -> None:
        remove_container(self.container)
