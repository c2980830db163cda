"""Checkpoints: the policy's spec and weights, plus (for resuming) optimizer, counters and RNGs.

A checkpoint is a `torch.save`d dict of tensors and plain Python values only, so it loads with
`torch.load(weights_only=True)`:

    format        "sonic-maml-policy/1"
    policy_spec   the `build_policy` spec: rebuilds the network without any other file
    policy_state  the network's state_dict
    config        the learner config it was trained with (informational)
    optimizer     optimizer state_dict (optional)
    timesteps, updates, episodes   counters (optional)
    rng           torch / numpy / python RNG states (optional)

Writes are atomic (`sonic_common.files`): a temporary file in the same directory, then
os.replace.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from agent.policies import ActorCritic, build_policy, check_policy_fits, spec_from_config
from sonic_common.errors import UserError
from sonic_common.files import atomic_open, require_torch_archive

FORMAT = "sonic-maml-policy/1"
CHECKPOINT_NAME = "checkpoint.pt"


class SpecNetwork(Protocol):
    """What a checkpoint stores of a network (an ActorCritic, a RainbowNet): the JSON-able
    spec that rebuilds it, and its weights."""

    @property
    def spec(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def save_checkpoint(
    path: str | Path,
    policy: SpecNetwork,
    *,
    config: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    timesteps: int = 0,
    updates: int = 0,
    episodes: int = 0,
    with_rng: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "format": FORMAT,
        "policy_spec": policy.spec,
        "policy_state": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
        "config": config or {},
        "timesteps": int(timesteps),
        "updates": int(updates),
        "episodes": int(episodes),
    }
    if optimizer is not None:
        data["optimizer"] = optimizer.state_dict()
    if with_rng:
        data["rng"] = rng_state()
    if extra:
        data.update(extra)
    with atomic_open(path) as f:
        torch.save(data, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict; a one-line UserError if it is missing or not a policy checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: give the path of a checkpoint.pt")
    require_torch_archive(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise UserError(
            f"cannot read checkpoint {path}: {e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    if not isinstance(data, dict) or "policy_spec" not in data or "policy_state" not in data:
        raise UserError(f"{path} is not a policy checkpoint (no policy_spec/policy_state)")
    return data


def policy_from_checkpoint(data: dict[str, Any], device: str | torch.device = "cpu") -> ActorCritic:
    policy = build_policy(data["policy_spec"])
    policy.load_state_dict(data["policy_state"])
    return policy.to(device)


def policy_for_spaces(
    checkpoint: dict[str, Any] | None,
    policy_cfg: dict[str, Any],
    observation_space: Any,
    action_space: Any,
    source: str,
) -> ActorCritic:
    """The checkpoint's network if given (it must fit the spaces), else a new one from config."""
    if checkpoint is None:
        return build_policy(spec_from_config(policy_cfg, observation_space, action_space))
    kind = checkpoint["policy_spec"].get("kind")
    if kind is not None:  # e.g. a Rainbow Q-network (agent/learners/rainbow.py)
        raise UserError(
            f"cannot load {source}: it holds a {kind} network, not an actor-critic policy"
        )
    problem = check_policy_fits(checkpoint["policy_spec"], observation_space, action_space)
    if problem:
        raise UserError(f"cannot load {source}: {problem}")
    return policy_from_checkpoint(checkpoint)


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> ActorCritic:
    """Rebuild a network from a checkpoint file alone."""
    return policy_from_checkpoint(load_checkpoint(path), device)
