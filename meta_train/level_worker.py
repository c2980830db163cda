"""The worker process of the level sampler: one level environment, one emulator, driven over a
pipe by `meta_train.level_sampler.LevelSampler`.

Kept apart from level_sampler.py so that a worker imports no PyTorch (the policy stays in the
parent): only NumPy, Gymnasium, stable-retro and the agent-side wrappers.

Commands (tuples) and replies:

    ("reset", level, wrap_kwargs, seed) → obs            open `level`'s emulator afresh (closing
                                                         the one held before), seeded
    ("step", action)                    → (obs, reward, done)
                                          an episode end (terminated or truncated) resets the
                                          environment at once and `obs` is the new episode's
                                          first observation (autoreset, same step)
    ("info",)                           → {"pid", "level", "opened"}
    ("close",)                          → None, and the worker exits

An exception is sent back as a `Failure` (its traceback text) instead of the reply.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np


@dataclass
class Failure:
    """A worker's exception, as its traceback text."""

    text: str


class LevelWorker:
    """The environment state of one worker: at most one `LevelEnv` (so one emulator) at a time."""

    def __init__(self) -> None:
        self.env: Any = None
        self.key: tuple[str, tuple[tuple[str, Any], ...]] | None = None
        self.opened = 0  # emulators opened so far (each after closing the previous one)

    def reset(self, level: str, wrap_kwargs: dict[str, Any], seed: int) -> np.ndarray:
        from agent.training.level_envs import LevelEnv
        from agent.wrappers import WrapperConfig

        key = (level, tuple(sorted(wrap_kwargs.items())))
        if self.env is None or key != self.key:
            self.close()  # one emulator per process: the old one goes before a new one opens
            self.env = LevelEnv([level], wrappers=WrapperConfig(**wrap_kwargs))
            self.key = key
        # LevelEnv closes and reopens its emulator at every seeded reset: each trajectory starts
        # from a freshly loaded state, whatever this worker ran before.
        obs, _ = self.env.reset(seed=int(seed))
        self.opened += 1
        return np.asarray(obs)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        if self.env is None:
            raise RuntimeError("step before reset")
        obs, reward, terminated, truncated, _ = self.env.step(int(action))
        done = bool(terminated or truncated)
        if done:
            obs, _ = self.env.reset()  # same level, same emulator: the next episode
        return np.asarray(obs), float(reward), done

    def info(self) -> dict[str, Any]:
        level = None if self.env is None else self.env.level
        return {"pid": os.getpid(), "level": level, "opened": self.opened}

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
            self.key = None


def worker_main(conn: Connection) -> None:
    """The worker process's loop (the target of a forkserver Process)."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    worker = LevelWorker()
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, KeyboardInterrupt):
                break
            cmd = msg[0]
            try:
                if cmd == "reset":
                    reply: Any = worker.reset(msg[1], msg[2], msg[3])
                elif cmd == "step":
                    reply = worker.step(msg[1])
                elif cmd == "info":
                    reply = worker.info()
                elif cmd == "close":
                    worker.close()
                    conn.send(None)
                    break
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception:
                reply = Failure(traceback.format_exc())
            conn.send(reply)
    finally:
        worker.close()
        conn.close()
