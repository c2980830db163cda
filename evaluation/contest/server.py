"""Serve one contest environment to one agent over the 2018 "gym-remote" protocol.

The server owns the emulator; the agent sees only the socket directory: the Unix stream socket
`DIR/sock` (backlog 1, one client) and the memory-mapped observation `DIR/ob`. Rules enforced,
as the original server did: the timestep budget (resets count as timesteps; at the budget the
server sends `close` with TimestepTimeoutError), the wall clock (WallClockTimeoutError), no reset
before done and no step after done (`exception` with ResetError; the connection goes on). Added
here: an idle timeout, a cap on message size, and clean handling of anything malformed: the
server answers with `close`, records why in results.json and exits normally.

Differences from the original, on purpose: one reply per request (the original followed an
`exception` with a stale `update`), and `reset` is read per message (a message with
`"reset": true`, with or without `ac`, is a reset; one without it is a step with the last `ac`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import secrets
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from evaluation.contest.protocol import (
    OB_NAME,
    RESET_REPLY,
    SOCKET_NAME,
    ErrorId,
    Folder,
    MessageReader,
    ProtocolError,
    decode,
    describe_box,
    describe_discrete,
    describe_multibinary,
    encode,
    error_content,
    ob_path,
    scalar_channels,
    socket_path,
    step_reply,
)
from evaluation.contest.records import MONITOR, RunRecorder, lock_dir, publish_records
from evaluation.contest.resume import ResumePoint
from evaluation.contest.rules import BUDGET_STEPS, WALLCLOCK_S
from roms_setup.levels import Level
from sonic_common.errors import UserError

TICK_S = 0.25  # how often a blocked server wakes to check the wall clock and idle time
TICK_MS = int(TICK_S * 1000)
SEND_TIMEOUT_S = 30  # a client that stops reading its replies for this long is cut off
DEFAULT_IDLE_TIMEOUT_S = 3600.0
MAX_UNIX_PATH = 107
CLOSE_DRAIN_S = 1.0  # after `close`, wait this long at most for the client to hang up


@dataclass
class ServeConfig:
    level: Level
    socket_dir: Path
    results_dir: Path
    budget: int = BUDGET_STEPS
    wallclock_s: float = WALLCLOCK_S
    seed: int | None = None
    idle_timeout_s: float | None = DEFAULT_IDLE_TIMEOUT_S
    record: bool = False
    agent: str = "external"
    runtime: str = "external"
    progress_every_s: float = 30.0
    progress_every_steps: int = 50_000
    # Set by `evaluation run` only. lifeline_fd: the read end of a pipe only the runner writes
    # to; its EOF means the runner is gone. result_fd: the final results go there as one JSON
    # line. publish_dir: the records (kept in results_dir, private) are copied there.
    lifeline_fd: int | None = None
    result_fd: int | None = None
    publish_dir: Path | None = None
    # a ResumePoint's JSON (evaluation.contest.resume): the run continues from there
    resume_from: Path | None = None


class Stop(Exception):
    """Ends serving: the status for results.json and the `close` to send, if any."""

    def __init__(
        self, status: str, error: str | None, close_id: ErrorId | None, reason: str | None = None
    ) -> None:
        super().__init__(error or status)
        self.status = status
        self.error = error
        self.close_id = close_id
        self.reason = reason if reason is not None else error


class Interrupted(Exception):
    """Stops serving from outside: the message is the error recorded with `interrupted`."""


@dataclass
class Budget:
    """The contest's two limits on a run: `steps` timesteps (resets count, as in the contest)
    and the wall clock, `deadline` on time.monotonic()'s clock."""

    steps: int
    deadline: float = math.inf
    used: int = 0

    def check_steps(self) -> None:
        if self.used >= self.steps:
            raise Stop(
                "budget", None, ErrorId.TIMESTEP_TIMEOUT, f"timestep budget of {self.steps} used up"
            )

    def check_clock(self, now: float) -> None:
        if now >= self.deadline:
            raise Stop("wallclock", None, ErrorId.WALLCLOCK_TIMEOUT, "wall-clock limit reached")


def parse_update(raw: bytes, n_actions: int) -> tuple[bool, int | None]:
    """One agent message → (reset?, action index or None: keep the last one). Anything but a
    well-formed `update` ends the run: `close` as agent_exited, the rest as protocol_error."""
    try:
        kind, content = decode(raw)
    except ProtocolError as e:
        raise Stop("protocol_error", str(e), ErrorId.GYM_REMOTE) from None
    if kind == "close":
        raise Stop("agent_exited", None, None)  # the caller words it (it knows the timesteps)
    if kind != "update":
        raise Stop("protocol_error", f"unknown message type {kind!r}", ErrorId.GYM_REMOTE)
    if not isinstance(content, dict):
        raise Stop("protocol_error", "update content is not an object", ErrorId.GYM_REMOTE)
    reset, action = False, None
    for key, value in content.items():
        if key == "ac":
            if type(value) is not int or not 0 <= value < n_actions:
                raise Stop(
                    "protocol_error",
                    f"bad action {value!r}: expected an integer in [0, {n_actions})",
                    ErrorId.GYM_REMOTE,
                )
            action = value
        elif key == "reset":
            if type(value) is not bool:
                raise Stop("protocol_error", f"bad reset value {value!r}", ErrorId.GYM_REMOTE)
            reset = value
        else:
            raise Stop("protocol_error", f"unknown channel {key!r} in update", ErrorId.GYM_REMOTE)
    return reset, action


LOCK_NAME = ".sock.lock"  # held by the serving server: a second one on the directory is refused
RUNNER_GONE = "server stopped: the runner that started it is gone"


def _lock_socket_dir(socket_dir: Path) -> int:
    """Hold DIR/.sock.lock for the server's life. A live server is found by its lock, never by
    connecting to its socket, which would take its one client slot."""
    fd = os.open(socket_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(
            f"a server is already serving in {socket_dir}: choose another --socket"
        ) from None
    return fd


def _check_socket_dir(socket_dir: Path) -> tuple[Path, int]:
    sock_path = socket_path(socket_dir)
    if len(os.fsencode(sock_path)) > MAX_UNIX_PATH - 8:  # room for the temporary name
        raise UserError(
            f"socket path {sock_path} is longer than {MAX_UNIX_PATH - 8} bytes (a Unix socket "
            "limit): use a shorter --socket directory, e.g. under /tmp"
        )
    try:
        socket_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the socket directory {socket_dir}: {e.strerror}") from e
    if (sock_path.exists() or sock_path.is_symlink()) and not stat.S_ISSOCK(
        sock_path.lstat().st_mode
    ):
        raise UserError(f"{sock_path} exists and is not a socket: choose another --socket")
    lock_fd = _lock_socket_dir(socket_dir)
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()  # not locked: a stale socket left by a server that died
    # A container user (uid 1000) with only this directory mounted must reach sock and ob.
    mode = socket_dir.stat().st_mode
    if mode & 0o055 != 0o055:
        with contextlib.suppress(OSError):
            os.chmod(socket_dir, stat.S_IMODE(mode) | 0o755)
    return sock_path, lock_fd


def _listen(sock_path: Path) -> socket.socket:
    """Bind to a temporary name and rename it into place after listen(): a client that sees
    `sock` (the 2018 client waits only for the file to exist) can always connect."""
    tmp = sock_path.with_name(f".{sock_path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(tmp))
        os.chmod(tmp, 0o666)
        listener.listen(1)
        os.rename(tmp, sock_path)
    except BaseException:
        listener.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    listener.settimeout(TICK_S)
    return listener


class ContestServer:
    _action: Any  # the action being played (set when serving starts)

    def __init__(self, config: ServeConfig) -> None:
        self.cfg = config
        self.seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
        self.budget = Budget(config.budget)
        self.resume: ResumePoint | None = None
        if config.resume_from is not None:
            self.resume = ResumePoint.from_file(config.resume_from)
            self.budget.used = self.resume.timesteps
        self.connected = False
        self.stop_signal: str | None = None

    @property
    def timesteps(self) -> int:
        return self.budget.used

    # --- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: the loops check it every message and every tick, so a signal never
        # lands in the middle of an emulator step or a record being written.
        if self.stop_signal is None:
            self.stop_signal = f"server stopped by {signal.Signals(signum).name}"

    def _runner_gone(self) -> bool:
        """The lifeline is readable: EOF, the runner's end is closed (it never writes)."""
        fd = self.cfg.lifeline_fd
        return fd is not None and bool(select.select([fd], [], [], 0)[0])

    def _check_signal(self) -> None:
        """Raise Interrupted after a signal, or when the runner's lifeline has closed."""
        if self.stop_signal is None and self._runner_gone():
            self.stop_signal = RUNNER_GONE
        if self.stop_signal is not None:
            raise Interrupted(self.stop_signal)

    def _install_signals(self) -> dict[int, Any]:
        old: dict[int, Any] = {}
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGTERM, signal.SIGINT):
                old[sig] = signal.signal(sig, self._on_signal)
        return old

    # --- the run ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Serve until the run ends; return the final results (also in results.json)."""
        from roms_setup.installed import require_playable

        cfg = self.cfg
        require_playable(cfg.level)
        sock_path, sock_lock = _check_socket_dir(cfg.socket_dir)
        self._closables: list[Any] = []
        try:
            self._open_records()
            old_handlers = self._install_signals()
            try:
                results = self._serve_and_record(sock_path)
            finally:
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
            self._report(results)
            return results
        finally:
            self._cleanup(sock_lock)

    def _open_records(self) -> None:
        cfg = self.cfg
        try:
            cfg.results_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create results dir {cfg.results_dir}: {e.strerror}") from e
        if not os.access(cfg.results_dir, os.W_OK):
            raise UserError(f"results dir {cfg.results_dir} is not writable")
        if cfg.publish_dir is None:  # under `run`, the runner holds the lock of its directory
            self._closables.append(lock_dir(cfg.results_dir))
        self.rec = RunRecorder(
            cfg.results_dir,
            level=cfg.level.id,
            seed=self.seed,
            agent=cfg.agent,
            runtime=cfg.runtime,
            budget=cfg.budget,
            wallclock_s=cfg.wallclock_s,
            progress_every_s=cfg.progress_every_s,
            progress_every_steps=cfg.progress_every_steps,
            extra={"protocol": "gym-remote", "agent_connected": False, "close_exception": None},
            on_progress=self._publish,
            on_episode=self._publish_monitor,
        )
        try:
            self.rec.start(self.resume)
        except OSError as e:
            raise UserError(
                f"cannot write the records in {cfg.results_dir}: {e.strerror}: "
                "free some space or choose another results directory"
            ) from e
        self._publish()

    def _serve_and_record(self, sock_path: Path) -> dict[str, Any]:
        """Serve; whatever ends it (the agent, a limit, a signal, a failure) is recorded."""
        spent = self.resume.elapsed_s if self.resume is not None else 0.0
        self.budget.deadline = time.monotonic() + self.cfg.wallclock_s - spent
        self.conn: socket.socket | None = None
        try:
            self._setup_and_serve(sock_path)
            raise AssertionError("unreachable")  # _serve always raises Stop
        except Stop as s:
            stop = s
        except Interrupted as e:
            stop = Stop(
                "interrupted", str(e), ErrorId.SERVER_DISCONNECT, "the evaluation was interrupted"
            )
        except (BrokenPipeError, ConnectionResetError):
            stop = Stop("agent_exited", f"the agent hung up after {self.timesteps} timesteps", None)
        except (BlockingIOError, TimeoutError):  # SO_SNDTIMEO: replies pile up unread
            stop = Stop(
                "protocol_error",
                f"the agent stopped reading its replies for {SEND_TIMEOUT_S} s",
                None,
            )
        except Exception as e:  # the emulator, the file system: all recorded, none raised
            stop = Stop(
                "env_error",
                f"{e.__class__.__name__}: {e}",
                ErrorId.SERVER_DISCONNECT,
                "the environment failed",
            )
        if stop.status not in ("budget", "wallclock", "interrupted") and self._runner_gone():
            # the agent's guard ended it because the runner died: not the agent's doing
            stop = Stop(
                "interrupted",
                RUNNER_GONE,
                ErrorId.SERVER_DISCONNECT,
                "the evaluation was interrupted",
            )
            self.stop_signal = RUNNER_GONE
        if self.conn is not None and stop.close_id is not None:
            self._send_close(self.conn, stop.close_id, stop.reason)
        self.rec.extra["close_exception"] = (
            int(stop.close_id)
            if stop.close_id is not None
            else int(ErrorId.CLIENT_DISCONNECT)
            if stop.status == "agent_exited"
            else None
        )
        return self.rec.finish(stop.status, stop.error, self.timesteps)

    def _setup_and_serve(self, sock_path: Path) -> None:
        from evaluation.contest.env import make_contest_env

        cfg = self.cfg
        record_dir = None
        if cfg.record:  # movies are not results: straight into the published directory
            record_dir = (cfg.publish_dir or cfg.results_dir) / "movies"
            record_dir.mkdir(parents=True, exist_ok=True)
        env = make_contest_env(
            cfg.level, seed=self.seed, record_dir=str(record_dir) if record_dir else None
        )
        self._closables.append(env)
        description = self._describe(env)
        self._ob_fd = self._make_ob_file(env)
        listener = _listen(sock_path)
        self._closables.append(listener)
        self._check_signal()
        conn = self.conn = self._accept(listener)
        self._closables.append(conn)
        self._check_signal()
        listener.close()  # one client: later connections are refused
        self.connected = True
        self.rec.extra["agent_connected"] = True
        conn.settimeout(None)  # blocking; waits go through poll() with a tick
        conn.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(SEND_TIMEOUT_S), 0)
        )
        conn.sendall(encode("description", description))
        self._serve(env, conn)

    def _publish(self) -> None:
        """Copy the records to the runner's results directory (when the runner gave one)."""
        if self.cfg.publish_dir is not None:
            error = publish_records(self.cfg.results_dir, self.cfg.publish_dir)
            if error is not None:  # the runner publishes again at the end, or says why not
                print(
                    f"cannot publish the records into {self.cfg.publish_dir}: {error}",
                    file=sys.stderr,
                    flush=True,
                )

    def _publish_monitor(self) -> None:
        """monitor.csv alone, at an episode's end (the records a resume point is checked on)."""
        if self.cfg.publish_dir is not None:
            error = publish_records(self.cfg.results_dir, self.cfg.publish_dir, (MONITOR,))
            if error is not None:
                print(f"cannot publish monitor.csv: {error}", file=sys.stderr, flush=True)

    def _report(self, results: dict[str, Any]) -> None:
        """Publish, and send the final results to the runner through the result pipe."""
        self._publish()
        fd = self.cfg.result_fd
        if fd is None:
            return
        with contextlib.suppress(OSError):  # the runner is gone: nobody to tell
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(results) + "\n")
        self.cfg.result_fd = None

    def _cleanup(self, sock_lock: int) -> None:
        cfg = self.cfg
        for closable in reversed(self._closables):
            with contextlib.suppress(Exception):
                closable.close()
        ob_fd = getattr(self, "_ob_fd", None)
        if ob_fd is not None:
            os.close(ob_fd)
            del self._ob_fd
        for name in (SOCKET_NAME, OB_NAME, LOCK_NAME):
            with contextlib.suppress(OSError):
                os.unlink(cfg.socket_dir / name)
        os.close(sock_lock)
        if self.stop_signal == RUNNER_GONE and cfg.publish_dir is not None:
            # nobody is left to clean up the runner's private directories
            shutil.rmtree(cfg.results_dir, ignore_errors=True)
            shutil.rmtree(cfg.socket_dir, ignore_errors=True)

    # --- setup -----------------------------------------------------------------------------

    def _describe(self, env: Any) -> dict[str, list[Any]]:
        import gymnasium as gym

        ac, ob = env.action_space, env.observation_space
        if isinstance(ac, gym.spaces.MultiBinary):
            n = int(np.prod(ac.shape))
            self._folder: Folder | None = Folder([2] * n)
            self._n_actions = self._folder.size
            ac_desc = describe_multibinary(n)
        elif isinstance(ac, gym.spaces.Discrete):
            self._folder = None
            self._n_actions = int(ac.n)
            ac_desc = describe_discrete(self._n_actions)
        else:
            raise TypeError(f"unsupported action space {ac}")
        if not isinstance(ob, gym.spaces.Box):
            raise TypeError(f"unsupported observation space {ob}")
        self._actions: list[Any] = [None] * self._n_actions
        return {"ac": ac_desc, "ob": describe_box(ob.shape, ob.dtype), **scalar_channels()}

    def _make_ob_file(self, env: Any) -> int:
        """The observation file. The server writes it with pwrite(), never through a memory
        map: the agent can truncate the file (it must open it writable, as the 2018 client
        does), and a write into a mapped page past the end would kill the server with SIGBUS.
        """
        space = env.observation_space
        self._ob_dtype = np.dtype(space.dtype)
        nbytes = int(np.prod(space.shape)) * self._ob_dtype.itemsize
        path = ob_path(self.cfg.socket_dir)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        os.fchmod(fd, 0o666)  # the original client opens it with mode w+
        os.ftruncate(fd, nbytes)
        return fd

    def _write_ob(self, ob: np.ndarray) -> None:
        data = np.ascontiguousarray(ob, dtype=self._ob_dtype).data
        if os.pwrite(self._ob_fd, data, 0) != data.nbytes:
            raise OSError(f"short write of the observation to {OB_NAME}")

    def _accept(self, listener: socket.socket) -> socket.socket:
        start = time.monotonic()
        idle = self.cfg.idle_timeout_s
        while True:
            try:
                conn, _ = listener.accept()
                return conn
            except TimeoutError:
                self._check_signal()
                now = time.monotonic()
                if now >= self.budget.deadline:
                    raise Stop(
                        "wallclock", "no agent connected within the wall-clock limit", None
                    ) from None
                if idle and now - start >= idle:
                    raise Stop(
                        "idle_timeout", f"no agent connected within {idle:g} s", None
                    ) from None

    # --- serving ---------------------------------------------------------------------------

    def _tick(self) -> None:
        """Raise what ends a waiting server: a signal, the runner gone, a time limit."""
        self._check_signal()
        now = time.monotonic()
        self.budget.check_clock(now)
        idle = self.cfg.idle_timeout_s
        if idle and now - self._last_heard >= idle:
            raise Stop(
                "idle_timeout",
                f"the agent sent no whole message for {idle:g} s",
                ErrorId.GYM_REMOTE,
                f"idle for {idle:g} s",
            )

    def _serve(self, env: Any, conn: socket.socket) -> None:
        """Answer the agent's messages one by one until something ends the run (a Stop)."""
        self._start_serving(conn)
        while True:
            self.budget.check_steps()
            raw = self._next_message()
            if self.stop_signal is not None:
                raise Interrupted(self.stop_signal)
            self.budget.check_clock(time.monotonic())
            try:
                reset, index = parse_update(raw, self._n_actions)
            except Stop as stop:
                if stop.status == "agent_exited":
                    raise self._hung_up() from None
                raise
            if index is not None:
                self._action = self._action_of(index)
            if not (self._reset(env) if reset else self._step(env)):
                continue  # ResetError sent; the connection goes on
            self.rec.maybe_progress(self.budget.used)

    def _start_serving(self, conn: socket.socket) -> None:
        self._reader = MessageReader()
        self._last_heard = time.monotonic()
        self._next_tick = self._last_heard + TICK_S
        self._action = None
        self._done = True  # a reset comes first
        self._first_reset = True
        self._poller = select.poll()
        self._poller.register(conn, select.POLLIN | select.POLLHUP | select.POLLERR)
        if self.cfg.lifeline_fd is not None:
            self._poller.register(
                self.cfg.lifeline_fd, select.POLLIN | select.POLLHUP | select.POLLERR
            )
        self._conn_only = [(conn.fileno(), select.POLLIN)]

    def _hung_up(self) -> Stop:
        return Stop(
            "agent_exited",
            f"the agent closed the connection after {self.timesteps} timesteps",
            None,
        )

    def _next_message(self) -> bytes:
        """The agent's next message (they may arrive several per read, or split). Only a whole
        message counts as hearing from the agent: one that trickles a message byte by byte is
        silent."""
        try:
            raw = self._reader.next(self._read)
        except ProtocolError as e:
            raise Stop("protocol_error", str(e), ErrorId.GYM_REMOTE) from None
        if raw is None:
            raise self._hung_up()
        self._last_heard = time.monotonic()
        return raw

    def _read(self) -> bytes:
        """The bytes the agent sent next, once the connection is readable (b"": it hung up)."""
        assert self.conn is not None
        self._wait_readable()
        return self.conn.recv(65536)

    def _wait_readable(self) -> None:
        """Block until the connection is readable, with `_tick`'s checks at least every tick.
        A poll that reports only the connection (the common case) skips them until the next
        tick is due: they cost a select() on the lifeline, and an agent that keeps the
        connection readable (a byte at a time) must not keep the clock from being read."""
        events = self._poller.poll(TICK_MS)
        while events != self._conn_only or time.monotonic() >= self._next_tick:
            self._tick()
            self._next_tick = time.monotonic() + TICK_S
            if any(fd == self._conn_only[0][0] for fd, _ in events):
                return
            events = self._poller.poll(TICK_MS)

    def _action_of(self, index: int) -> Any:
        """The environment's action for the agent's action index (unfolded once, then kept)."""
        action = self._actions[index]
        if action is None:
            folder = self._folder
            action = self._actions[index] = (
                folder.unfold(index, np.int8) if folder is not None else index
            )
        return action

    def _reply_reset_error(self, text: str) -> bool:
        assert self.conn is not None
        self.conn.sendall(encode("exception", error_content(ErrorId.RESET, text)))
        return False

    def _reset(self, env: Any) -> bool:
        """A reset (a timestep); the first one seeds the environment. False: refused."""
        if not self._done:
            return self._reply_reset_error("reset before the episode is done")
        if self._first_reset:
            seed = self.seed if self.resume is None else self.resume.env_seed(self.seed)
            ob, _ = env.reset(seed=seed)
            self._first_reset = False
        else:
            ob, _ = env.reset()
        self._write_ob(ob)
        self._done = False
        self.rec.reset()
        self.budget.used += 1
        assert self.conn is not None
        self.conn.sendall(RESET_REPLY)
        return True

    def _step(self, env: Any) -> bool:
        """A step with the last action (a timestep). False: refused (after done)."""
        if self._done:
            return self._reply_reset_error("step after the episode is done: reset first")
        if self._action is None:
            raise Stop(
                "protocol_error", "step without an action (no 'ac' sent yet)", ErrorId.GYM_REMOTE
            )
        ob, reward, terminated, truncated, _ = env.step(self._action)
        self._write_ob(ob)
        self._done = done = terminated or truncated
        reward = float(reward)
        self.budget.used += 1
        # recorded (an episode's end also published) before the agent hears of it: a resume
        # point the agent saves at that end always finds its episode in the records
        self.rec.step(reward, done)
        assert self.conn is not None
        self.conn.sendall(step_reply(reward, done))
        return True

    def _send_close(self, conn: socket.socket, close_id: ErrorId, reason: str | None) -> None:
        """Send `close`, then give the client a moment to read it and hang up."""
        try:
            conn.settimeout(CLOSE_DRAIN_S)
            conn.sendall(encode("close", error_content(close_id, reason)))
            conn.shutdown(socket.SHUT_WR)
            end = time.monotonic() + CLOSE_DRAIN_S
            while time.monotonic() < end:
                if not conn.recv(65536):
                    break
        except OSError:
            pass


def serve(config: ServeConfig) -> dict[str, Any]:
    return ContestServer(config).run()
