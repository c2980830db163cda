"""`python -m agent.train --algo ppo|rainbow --levels SET --timesteps N --out DIR ...`: offline
training on local contest environments (joint PPO, joint Rainbow). The command's code is in
agent/training/ (joint.py: options, PPO; joint_rainbow.py; level_envs.py: the level workers).

The import of agent.training.joint (torch) is lazy: the level workers (forkserver) import this
module again as their `__mp_main__`, and they need no torch (seconds saved per worker)."""

from typing import Any

_LAZY = ("main", "parse_args")  # from agent.training.joint


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from agent.training import joint

        return getattr(joint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from agent.training.joint import main

    raise SystemExit(main())
