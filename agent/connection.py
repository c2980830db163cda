"""Open the contest environment from inside an agent: `env = connection.make_env()`.

The runner (`python -m evaluation run`) starts every agent with three environment variables:

- `CONTEST_SOCKET_DIR`: the directory of the environment server's socket `sock` and
  observation file `ob` (in Docker: /contest/sock);
- `AGENT_OUTPUT_DIR`: a directory the agent may write to (logs, checkpoints);
- `AGENT_SEED`: the run's seed, for the agent's own random numbers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from evaluation.contest.client import (
    SOCKET_DIR_ENV,
    BudgetExhausted,
    RemoteEnv,
    RemoteEnvClosed,
    RemoteEnvError,
    connect_from_env,
)
from sonic_common.agent_env import CHECK_ONLY_ENV, OUTPUT_DIR_ENV, SEED_ENV

__all__ = [
    "SOCKET_DIR_ENV",
    "BudgetExhausted",
    "RemoteEnv",
    "RemoteEnvClosed",
    "RemoteEnvError",
    "agent_seed",
    "make_env",
    "output_dir",
]


def make_env(connect_timeout: float = 60.0, copy_obs: bool = True) -> RemoteEnv:
    """The remote contest environment named by $CONTEST_SOCKET_DIR (a UserError, one line for
    the user, when it is not set or no server listens there). With $AGENT_CHECK_ONLY set, the
    agent has checked what it was given: it exits 0 here instead of connecting."""
    if os.environ.get(CHECK_ONLY_ENV):
        print("agent: arguments checked (AGENT_CHECK_ONLY): not connecting", file=sys.stderr)
        raise SystemExit(0)
    try:
        return connect_from_env(connect_timeout=connect_timeout, copy_obs=copy_obs)
    except (FileNotFoundError, ConnectionRefusedError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and SOCKET_DIR_ENV not in str(e):
            raise
        from sonic_common.errors import UserError  # only now: the client side stays small

        raise UserError(str(e.strerror if isinstance(e, OSError) else e)) from None


def agent_seed(default: int | None = None) -> int | None:
    value = os.environ.get(SEED_ENV)
    return int(value) if value not in (None, "") else default


def output_dir() -> Path | None:
    """$AGENT_OUTPUT_DIR, created if needed; None when unset."""
    value = os.environ.get(OUTPUT_DIR_ENV)
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path
