"""Offline training on local contest environments (`python -m agent.train`): joint PPO and
joint Rainbow over levels played by worker processes (level_envs). Needs stable-retro, unlike
the agent image's entry points."""
