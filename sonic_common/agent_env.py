"""The environment variables a contest run gives its agent (set by evaluation's runner and the
agent images, read by the agents and the contest client)."""

SOCKET_DIR_ENV = "CONTEST_SOCKET_DIR"  # the directory holding the server's `sock` and `ob`
OUTPUT_DIR_ENV = "AGENT_OUTPUT_DIR"  # where the agent may write its own files
SEED_ENV = "AGENT_SEED"  # the run's seed, for the agent's own random numbers
CHECKPOINT_ENV = "AGENT_CHECKPOINT"  # a checkpoint to start from (agent images built with one)
# set (to 1): the agent checks its arguments, config and checkpoint, then exits 0 where it would
# connect (a suite's preflight of --agent-args)
CHECK_ONLY_ENV = "AGENT_CHECK_ONLY"
# In OUTPUT_DIR_ENV, written last by an agent that can continue a stopped run, at an episode's
# end: {"steps": agent steps so far, "episodes": episodes finished} (evaluation/contest/resume.py)
RESUME_FILE = "resume.json"
