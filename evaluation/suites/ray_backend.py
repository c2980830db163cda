"""Joining a Ray cluster: the one place that imports Ray for the suite and the meta-trainer.

Ray is optional (`pip install -e ".[cluster]"`); without it `--backend ray` is a one-line error.

- `address` None: `ray.init()` joins the cluster named by $RAY_ADDRESS (set for the entry point
  of `ray job submit`) or, when there is none, starts a private one-node Ray on this machine
  (no dashboard) that ends with the process.
- `address` "auto" joins the cluster that `ray start` started on this machine, "HOST:6379" a
  remote head, "ray://HOST:10001" goes through Ray Client.

Since Ray 2.59 a cluster asks for a token unless `RAY_AUTH_MODE=disabled` (docs/cluster.md).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from sonic_common.errors import UserError

RAY_VERSION = "2.60.0"
BACKENDS = ("local", "ray")


def require_ray() -> ModuleType:
    """The `ray` module, or a one-line UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(
            "--backend ray needs Ray: pip install -e '.[cluster]' (ray[default]=="
            f"{RAY_VERSION}), or use --backend local"
        ) from None
    return ray


def connect(address: str | None = None) -> ModuleType:
    """Join (or start) a Ray cluster once per process; returns the `ray` module."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        options["include_dashboard"] = False  # a private one-node Ray: nothing to look at
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot join the Ray cluster at {address or 'RAY_ADDRESS/local'}: "
            f"{first} (start one with `ray start --head`, or check --address)"
        ) from None
    return ray


def alive_nodes(ray: ModuleType) -> list[dict[str, Any]]:
    """The cluster's live nodes (ray.nodes() entries), the head first."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return sorted(nodes, key=lambda n: not n.get("Resources", {}).get("node:__internal_head__"))
