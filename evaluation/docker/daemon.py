"""Find a Docker daemon, or start a private one (root only) exactly as the project's machines allow.

Every module that talks to Docker gets its client from `docker_client()`: `DOCKER_HOST` when set,
else the private daemon's socket when it answers, else Docker's default socket.

The private daemon (`python -m evaluation docker up`) keeps everything under one per-user state
directory so that images survive between commands of one machine session:

    D/docker.sock  D/pid  D/dockerd.log  D/root (data root, vfs)  D/exec  D/cache (rootfs, wheels)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker
from docker.errors import DockerException

from sonic_common.errors import UserError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
STATE_DIR_ENV = "SONIC_MAML_DOCKER_DIR"
# vfs works everywhere but copies the whole image on every container create (10-26 s for a
# torch image here); overlay2 creates in 0.03 s where the kernel allows overlay mounts. "auto"
# tries overlay2 and falls back to vfs.
STORAGE_ENV = "SONIC_MAML_DOCKER_STORAGE"
DEFAULT_STORAGE = "auto"
START_TIMEOUT_S = 30.0


def state_dir() -> Path:
    """The per-user state directory: `$SONIC_MAML_DOCKER_DIR`, else /tmp/sonic-maml-docker[-UID]."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    suffix = "" if os.getuid() == 0 else f"-{os.getuid()}"
    return Path(tempfile.gettempdir()) / f"sonic-maml-docker{suffix}"


def cache_dir() -> Path:
    path = state_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def private_socket() -> Path:
    return state_dir() / "docker.sock"


def private_url() -> str:
    return f"unix://{private_socket()}"


def _client(base_url: str, timeout: int) -> docker.DockerClient | None:
    """A client for `base_url` if a daemon answers its ping there, else None."""
    try:
        client = docker.DockerClient(base_url=base_url, timeout=timeout)
        client.ping()
        return client
    except (DockerException, OSError):
        return None


def _candidates() -> list[str]:
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    return [private_url(), DEFAULT_SOCKET]


def find_daemon(timeout: int = 300) -> tuple[str, docker.DockerClient] | None:
    """(address, client) of the daemon `docker_client()` would use, or None if none answers."""
    for url in _candidates():
        if url.startswith("unix://") and not Path(url.removeprefix("unix://")).exists():
            continue
        client = _client(url, timeout)
        if client is not None:
            return url, client
    return None


def docker_client(timeout: int = 300) -> docker.DockerClient:
    """The one way to reach Docker: DOCKER_HOST, else the private daemon, else the default socket.

    `timeout` is the per-request socket timeout (builds stream for minutes, so it is generous).
    Raises UserError, naming the fix, when no daemon answers.
    """
    found = find_daemon(timeout)
    if found is not None:
        return found[1]
    if os.environ.get("DOCKER_HOST"):
        raise UserError(
            f"no Docker daemon answers at DOCKER_HOST={os.environ['DOCKER_HOST']}: "
            "start it, or unset DOCKER_HOST and run `python -m evaluation docker up`"
        )
    raise UserError(
        "no Docker daemon is running: run `python -m evaluation docker up` "
        "(as root; it installs docker.io and starts a private daemon), "
        "or set DOCKER_HOST to a daemon you can use"
    )


def private_daemon_pid() -> int | None:
    """The pid of the private dockerd if its pid file names a live process."""
    try:
        pid = int((state_dir() / "pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def ensure_packages(commands: dict[str, str]) -> None:
    """Install the Debian packages whose commands are missing ({command: package}); root only."""
    missing = sorted({pkg for cmd, pkg in commands.items() if not _which(cmd)})
    if not missing:
        return
    if os.getuid() != 0:
        raise UserError(
            f"{', '.join(missing)} not installed and not root: "
            f"run `apt-get install -y {' '.join(missing)}` as root"
        )
    print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env
    )
    if done.returncode != 0:
        raise UserError(f"apt-get install {' '.join(missing)} failed (exit {done.returncode})")


def _which(cmd: str) -> str | None:
    return shutil.which(cmd) or shutil.which(cmd, path="/usr/sbin:/usr/bin:/sbin:/bin")


def start_private_daemon() -> docker.DockerClient:
    """Start dockerd (overlay2 where it works, else vfs, or what $SONIC_MAML_DOCKER_STORAGE
    says; no bridge, no iptables) on the private socket; wait until it answers."""
    if os.getuid() != 0:
        raise UserError(
            "no Docker daemon is running and starting one needs root: run "
            "`sudo python -m evaluation docker up`, or set DOCKER_HOST to a daemon"
        )
    ensure_packages({"dockerd": "docker.io"})
    requested = os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    drivers = ["overlay2", "vfs"] if requested == "auto" else [requested]
    error: UserError | None = None
    for storage in drivers:
        try:
            client = _start_dockerd(storage)
        except UserError as e:
            error = e
            continue
        driver = client.info().get("Driver")
        if driver == storage:
            return client
        stop_private_daemon()
        error = UserError(f"dockerd started with storage driver {driver}, not {storage}")
    assert error is not None
    raise error


def _start_dockerd(storage: str) -> docker.DockerClient:
    d = state_dir()
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o711)
    private_socket().unlink(missing_ok=True)
    # one data root per driver: their layer stores are not interchangeable
    root = d / "root" if storage == "vfs" else d / f"root-{storage}"
    cmd = [
        _which("dockerd") or "dockerd",
        f"--storage-driver={storage}",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--data-root={root}",
        f"--exec-root={d / 'exec'}",
        "-H",
        private_url(),
        f"--pidfile={d / 'pid'}",
    ]
    with open(d / "dockerd.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"dockerd exited with code {proc.returncode}: see {d / 'dockerd.log'}")
        if private_socket().exists():
            client = _client(private_url(), timeout=300)
            if client is not None:
                return client
        time.sleep(0.1)
    raise UserError(
        f"dockerd did not answer within {START_TIMEOUT_S:.0f} s: see {d / 'dockerd.log'}"
    )


def stop_private_daemon(timeout: float = 20.0) -> bool:
    """Stop the private dockerd (SIGTERM, then SIGKILL). True if one was running."""
    pid = private_daemon_pid()
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # it ended since its pid file was read
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True
