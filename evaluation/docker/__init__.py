"""Agents in Docker: the private daemon, the agent images and their build context, the
container runtime and the reaper of leftover containers (`python -m evaluation build`,
`docker`)."""
