"""`python -m agent.train --algo ppo|rainbow --levels SET --timesteps N --out DIR ...`: offline
training on local contest environments (joint PPO, joint Rainbow). The command's code is in
agent/training/ (joint.py: options, PPO; joint_rainbow.py; level_envs.py: the level workers)."""

from agent.training.joint import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    raise SystemExit(main())
