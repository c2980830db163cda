"""The 2018 Retro Contest's "gym-remote" wire format, shared by the server and the client.

Stdlib and numpy only: the client side of this module runs inside small agent images.

A connection lives in a directory holding the Unix stream socket `sock` and one memory-mapped
file per array channel (`ob`). Messages are UTF-8 JSON objects `{"type": T, "content": C}`,
each ended by a form feed. Types: `description` (server's first message), `update` (channel
values both ways), `exception` (an error; the connection goes on) and `close` (ends it).
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

SEP = b"\f"
SOCKET_NAME = "sock"
OB_NAME = "ob"
MAX_MESSAGE_BYTES = 1 << 20  # a peer that sends this much without a form feed is cut off


def socket_path(directory: Path) -> Path:
    """The connection's Unix stream socket in its directory."""
    return directory / SOCKET_NAME


def ob_path(directory: Path) -> Path:
    """The connection's memory-mapped observation in its directory."""
    return directory / OB_NAME


class ErrorId(IntEnum):
    """The original `gym_remote.exceptions` ids (their order of definition)."""

    GYM_REMOTE = 0  # GymRemoteError
    TIMESTEP_TIMEOUT = 1  # TimestepTimeoutError: the timestep budget is used up
    WALLCLOCK_TIMEOUT = 2  # WallClockTimeoutError
    CLIENT_DISCONNECT = 3  # ClientDisconnectError
    SERVER_DISCONNECT = 4  # ServerDisconnectError
    RESET = 5  # ResetError: reset before done, or step after done


class ProtocolError(Exception):
    """The peer broke the wire format (bad JSON, oversized message, wrong shape of content)."""


def encode(type_: str, content: Any) -> bytes:
    return json.dumps({"type": type_, "content": content}).encode("utf-8") + SEP


def decode(raw: bytes) -> tuple[str, Any]:
    """One message (without its form feed) → (type, content). Raises ProtocolError."""
    try:
        # decode first: json.loads(bytes) would also accept UTF-16 and UTF-32
        message = json.loads(bytes(raw).decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError; deep nesting
        preview = bytes(raw[:40])
        raise ProtocolError(
            f"message is not UTF-8 JSON ({e.__class__.__name__}): {preview!r}"
        ) from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(f"message is not an object with a string 'type': {bytes(raw[:40])!r}")
    return message["type"], message.get("content")


def error_content(exception_id: int, reason: str | None) -> dict[str, Any]:
    return {"reason": reason, "exception": int(exception_id)}


class MessageSplitter:
    """Incremental splitter of a byte stream on form feeds, with a cap on a pending message."""

    __slots__ = ("_pending", "max_bytes")

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._pending = bytearray()
        self.max_bytes = max_bytes

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole message."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages (form feeds stripped), in order."""
        if (
            not self._pending
            and len(data) <= self.max_bytes
            and data.endswith(SEP)
            and data.count(SEP) == 1
        ):
            return [data[:-1]]  # the common case: exactly one whole message per recv
        # only the new bytes are searched, and what waits grows in place: a message sent a
        # byte at a time costs linear work, not quadratic
        if SEP in data:
            parts = data.split(SEP)
            parts[0] = bytes(self._pending) + parts[0]
            self._pending = bytearray(parts.pop())
        else:
            parts = []
            self._pending += data
        if len(self._pending) > self.max_bytes:
            size = len(self._pending)
            self._pending = bytearray()
            raise ProtocolError(
                f"message larger than {self.max_bytes} bytes without a form feed ({size} bytes)"
            )
        for part in parts:
            if len(part) > self.max_bytes:
                raise ProtocolError(f"message larger than {self.max_bytes} bytes ({len(part)})")
        return parts


class MessageReader:
    """A peer's messages one at a time, whole (they may arrive several per read, or split):
    the read loop of both ends of a connection."""

    __slots__ = ("_pending", "_splitter")

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._splitter = MessageSplitter(max_bytes)
        self._pending: deque[bytes] = deque()

    def next(self, read: Callable[[], bytes]) -> bytes | None:
        """The next message (without its form feed), calling `read` for more bytes while none
        is whole; None when `read` returns b"" (the peer closed). ProtocolError: a message over
        the size cap."""
        pending = self._pending
        while not pending:
            data = read()
            if not data:
                return None
            pending.extend(self._splitter.feed(data))
        return pending.popleft()


# --- channel descriptions -------------------------------------------------------------------


def int_fold_shape(folds: Sequence[int]) -> str:
    """The original IntFoldChannel's SHAPE: `str(list) + ','`, e.g. "[2, 2, 2],"."""
    return str([int(f) for f in folds]) + ","


def np_shape(shape: Sequence[int], dtype: np.dtype | type | str) -> str:
    """The original NpChannel's SHAPE, e.g. `(224, 320, 3), dtype("|u1")`."""
    dims = tuple(int(s) for s in shape)
    return f'{dims}, dtype("{np.dtype(dtype).str}")'


def describe_multibinary(n: int) -> list[Any]:
    if n >= 64:
        raise ValueError("MultiBinary(n >= 64) travels as np in the original; not supported here")
    return ["int_fold", int_fold_shape([2] * n), {"n": str(n), "type": "MultiBinary"}]


def describe_discrete(n: int) -> list[Any]:
    return ["int", None, {"n": str(n), "type": "Discrete"}]


def describe_box(shape: Sequence[int], dtype: np.dtype | type | str) -> list[Any]:
    shape = tuple(int(s) for s in shape)
    return ["np", np_shape(shape, dtype), {"type": "Box", "shape": str(shape)}]


def scalar_channels() -> dict[str, list[Any]]:
    return {"reward": ["float", None, {}], "done": ["bool", None, {}], "reset": ["bool", None, {}]}


_NP_SHAPE = re.compile(r"^\s*(\(.*\))\s*,\s*dtype\(\s*(['\"])(.+?)\2\s*\)\s*$")


def parse_int_fold_shape(text: str) -> list[int]:
    """ "[2, 2, 2]," → [2, 2, 2] (literal parsing, never eval)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ProtocolError(f"bad int_fold shape {text!r}") from e
    folds = value[0] if isinstance(value, tuple) and len(value) == 1 else value
    if not isinstance(folds, list) or not all(isinstance(f, int) and f > 0 for f in folds):
        raise ProtocolError(f"bad int_fold shape {text!r}")
    return folds


def parse_np_shape(text: str) -> tuple[tuple[int, ...], np.dtype]:
    """'(224, 320, 3), dtype("|u1")' → ((224, 320, 3), dtype('uint8'))."""
    match = _NP_SHAPE.match(text)
    if not match:
        raise ProtocolError(f"bad np shape {text!r}")
    try:
        shape = ast.literal_eval(match.group(1))
        dtype = np.dtype(match.group(3))
    except (ValueError, SyntaxError, TypeError) as e:
        raise ProtocolError(f"bad np shape {text!r}") from e
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ProtocolError(f"bad np shape {text!r}")
    return shape, dtype


# --- folding MultiBinary actions into one integer -----------------------------------------------


class Folder:
    """Mixed-radix folding of the original IntFoldChannel: bit i = button i for [2]*n."""

    def __init__(self, folds: Sequence[int]) -> None:
        self.folds = np.asarray(folds, dtype=np.int64)
        self.weights = np.multiply.accumulate(np.r_[1, self.folds[:-1]]).astype(np.int64)
        self.size = int(np.prod(self.folds))  # number of distinct folded values

    def fold(self, values: Any) -> int:
        arr = np.asarray(values, dtype=np.int64)
        if arr.shape != self.folds.shape:
            raise ValueError(f"action has shape {arr.shape}, expected {self.folds.shape}")
        return int(np.dot(self.weights, arr % self.folds))

    def unfold(self, value: int, dtype: Any = np.int8) -> np.ndarray:
        return (
            np.full(self.folds.shape, value, dtype=np.int64) // self.weights % self.folds
        ).astype(dtype)


# --- fast server replies -------------------------------------------------------------------------

_STEP_HEAD = b'{"type": "update", "content": {"ob": true, "reward": '
_DONE_TRUE = b', "done": true}}' + SEP
_DONE_FALSE = b', "done": false}}' + SEP
RESET_REPLY = encode("update", {"ob": True, "reset": False, "reward": 0, "done": False})


def float_json(value: float) -> bytes:
    if math.isfinite(value):
        return repr(value).encode("ascii")
    return json.dumps(value).encode("ascii")  # NaN / Infinity, as Python's json writes them


def step_reply(reward: float, done: bool) -> bytes:
    """`{"type": "update", "content": {"ob": true, "reward": R, "done": D}}\\f` without json."""
    return _STEP_HEAD + float_json(reward) + (_DONE_TRUE if done else _DONE_FALSE)
