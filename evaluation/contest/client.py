"""The agent's side of the contest connection: a Gymnasium environment over the socket.

Imports only the standard library, numpy and gymnasium (it runs in small agent images).

    from evaluation.contest.client import BudgetExhausted, connect_from_env
    env = connect_from_env()          # the directory named by $CONTEST_SOCKET_DIR
    ob, info = env.reset()
    try:
        while True:
            ob, reward, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated:
                ob, info = env.reset()
    except BudgetExhausted:
        pass                          # the budget (timesteps or wall clock) is spent

`terminated` is the server's `done` (life lost, level end, a special stage entered in Sonic 2
and 3&K, or the 4500-step limit); `truncated` is always False and `info` always {} (the contest
never sent `info`). `reset(seed=...)` ignores the seed: the server owns it.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from evaluation.contest.protocol import (
    ErrorId,
    Folder,
    MessageReader,
    ProtocolError,
    decode,
    encode,
    ob_path,
    parse_int_fold_shape,
    parse_np_shape,
    socket_path,
)
from sonic_common.agent_env import SOCKET_DIR_ENV


class RemoteEnvError(RuntimeError):
    """The server answered with `exception` (e.g. ResetError); the connection goes on."""

    def __init__(self, reason: str | None, exception_id: int) -> None:
        self.reason = reason
        self.exception_id = int(exception_id)
        name = _error_name(self.exception_id)
        super().__init__(f"{name} ({self.exception_id}): {reason}")


class RemoteEnvClosed(RuntimeError):
    """The server ended the connection (`close`, or it went away). Nothing more can be sent."""

    def __init__(self, reason: str | None, exception_id: int | None) -> None:
        self.reason = reason
        self.exception_id = None if exception_id is None else int(exception_id)
        name = _error_name(self.exception_id)
        super().__init__(f"{name} ({self.exception_id}): {reason}")


class BudgetExhausted(RemoteEnvClosed):
    """The run's budget is spent: timesteps (TimestepTimeoutError, 1) or wall clock (2)."""


def _error_name(exception_id: int | None) -> str:
    try:
        return ErrorId(exception_id).name if exception_id is not None else "closed"
    except ValueError:
        return f"error {exception_id}"


def _closed(content: Any) -> RemoteEnvClosed:
    content = content if isinstance(content, dict) else {}
    exception_id = content.get("exception")
    reason = content.get("reason")
    if exception_id in (ErrorId.TIMESTEP_TIMEOUT, ErrorId.WALLCLOCK_TIMEOUT):
        return BudgetExhausted(reason, exception_id)
    return RemoteEnvClosed(reason, exception_id)


class RemoteEnv(gym.Env):
    """A contest environment served by `python -m evaluation serve` (the gym-remote protocol)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        socket_dir: str | os.PathLike[str],
        connect_timeout: float = 60.0,
        copy_obs: bool = True,
    ) -> None:
        """Connect, retrying up to `connect_timeout` s while the server is not yet listening.

        copy_obs: return a copy of each observation (the memory-mapped one changes on the next
        step). False saves a memcpy for agents that copy or preprocess it at once.
        """
        self.socket_dir = Path(socket_dir)
        self.copy_obs = copy_obs
        self._sock = self._connect(socket_path(self.socket_dir), connect_timeout)
        self._reader = MessageReader()
        self.closed: RemoteEnvClosed | None = None
        kind, description = self._recv()
        if kind != "description" or not isinstance(description, dict):
            self._sock.close()
            raise ProtocolError(f"expected a description first, got {kind!r}")
        self.description = description
        self.action_space, self._folder = self._action_space(description["ac"])
        self.observation_space, self._ob = self._observation(description["ob"])

    # --- setup -----------------------------------------------------------------------------

    @staticmethod
    def _connect(path: Path, timeout: float) -> socket.socket:
        end = time.monotonic() + timeout
        delay = 0.05
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return sock
            except (FileNotFoundError, ConnectionRefusedError) as e:
                sock.close()
                if time.monotonic() + delay > end:
                    raise type(e)(
                        e.errno, f"no contest server listening at {path} (waited {timeout:g} s)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @staticmethod
    def _action_space(desc: list[Any]) -> tuple[gym.Space, Folder | None]:
        kind, shape, annotations = desc
        annotations = annotations or {}
        if kind == "int_fold":
            folds = parse_int_fold_shape(shape)
            folder = Folder(folds)
            if annotations.get("type", "MultiBinary") == "MultiBinary":
                return gym.spaces.MultiBinary(int(annotations.get("n", len(folds)))), folder
            return gym.spaces.MultiDiscrete(folds), folder
        if kind == "int":
            return gym.spaces.Discrete(int(annotations["n"])), None
        raise ProtocolError(f"unsupported action channel {desc!r}")

    def _observation(self, desc: list[Any]) -> tuple[gym.spaces.Box, np.ndarray]:
        kind, shape_text, _ = desc
        if kind != "np":
            raise ProtocolError(f"unsupported observation channel {desc!r}")
        shape, dtype = parse_np_shape(shape_text)
        high = np.iinfo(dtype).max if dtype.kind in "ui" else np.inf
        space = gym.spaces.Box(low=0, high=high, shape=shape, dtype=dtype)
        ob = np.memmap(ob_path(self.socket_dir), mode="r", dtype=dtype, shape=shape)
        return space, ob

    # --- wire ------------------------------------------------------------------------------

    def _recv(self) -> tuple[str, Any]:
        raw = self._reader.next(self._read)
        if raw is None:
            raise RemoteEnvClosed("the server closed the connection", ErrorId.SERVER_DISCONNECT)
        return decode(raw)

    def _read(self) -> bytes:
        return self._sock.recv(65536)

    def _request(self, message: bytes) -> dict[str, Any]:
        if self.closed is not None:
            raise self.closed
        try:
            self._sock.sendall(message)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have said `close` already: read it below
        try:
            kind, content = self._recv()
        except RemoteEnvClosed as e:
            self._finish(e)
            raise
        except OSError as e:
            self._finish(RemoteEnvClosed(f"connection lost: {e}", ErrorId.SERVER_DISCONNECT))
            raise self.closed from e  # type: ignore[misc]
        if kind == "update" and isinstance(content, dict):
            return content
        if kind == "exception":
            content = content if isinstance(content, dict) else {}
            raise RemoteEnvError(content.get("reason"), content.get("exception", 0))
        if kind == "close":
            self._finish(_closed(content))
            raise self.closed  # type: ignore[misc]
        raise ProtocolError(f"unexpected message {kind!r} from the server")

    def _finish(self, closed: RemoteEnvClosed) -> None:
        self.closed = closed
        try:
            self._sock.close()
        except OSError:
            pass

    def _obs(self) -> np.ndarray:
        return np.array(self._ob) if self.copy_obs else self._ob

    # --- gymnasium -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._request(encode("update", {"reset": True}))
        return self._obs(), {}

    def fold_action(self, action: Any) -> int:
        if self._folder is not None:
            return self._folder.fold(action)
        return int(action)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        ac = self.fold_action(action)
        reply = self._request(b'{"type": "update", "content": {"ac": %d}}\f' % ac)
        return self._obs(), float(reply.get("reward", 0.0)), bool(reply.get("done")), False, {}

    def close(self) -> None:
        if self.closed is None:
            try:
                self._sock.sendall(encode("close", {"reason": "agent closed the environment"}))
            except OSError:
                pass
            self._finish(RemoteEnvClosed("closed by the agent", None))
        super().close()


def connect_from_env(connect_timeout: float = 60.0, copy_obs: bool = True) -> RemoteEnv:
    """The contest environment whose socket directory is named by $CONTEST_SOCKET_DIR."""
    socket_dir = os.environ.get(SOCKET_DIR_ENV)
    if not socket_dir:
        raise RuntimeError(
            f"{SOCKET_DIR_ENV} is not set: start the agent with `python -m evaluation run`, or "
            f"set it to the directory of a running `python -m evaluation serve --socket DIR`"
        )
    return RemoteEnv(socket_dir, connect_timeout=connect_timeout, copy_obs=copy_obs)
