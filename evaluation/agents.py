"""The agents the contest knows: each name, the module that runs it and what its image needs.

`evaluation` never imports `agent` (it starts agents as processes or containers), so this table
is where it learns about them: `python -m evaluation run --agent NAME` starts
`python -m <module>`, `python -m evaluation build --agent NAME` installs torch into the image only
for the agents that need it and accepts `--checkpoint` only for those that load one, and the
Docker runtime gives an agent more memory than the default when its entry says so. A new agent:
its module under agent/ (with a `main`) and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sonic_common.errors import UserError


@dataclass(frozen=True)
class AgentEntry:
    """How to run one agent."""

    module: str  # `python -m MODULE` runs it, locally and as the image's entry point
    torch: bool = False  # its image needs torch and opencv
    checkpoint: bool = False  # it starts from a checkpoint (--checkpoint, $AGENT_CHECKPOINT)
    memory: str | None = None  # its container's memory limit, when above the default (4g)
    image: bool = True  # it runs in an agent image (False: local only)
    summary: str = ""


AGENTS: dict[str, AgentEntry] = {
    "random": AgentEntry("agent.random_agent", summary="uniformly random buttons (the floor)"),
    "jerk": AgentEntry("agent.jerk", summary="JERK, the contest's scripted baseline"),
    "ppo2": AgentEntry(
        "agent.ppo2",
        torch=True,
        checkpoint=True,
        summary="PPO from scratch, or fine-tuning a checkpoint (joint PPO)",
    ),
    "maml": AgentEntry(
        "agent.maml",
        torch=True,
        checkpoint=True,
        summary="MAML: adapts a meta-trained initialization, then PPO or acts",
    ),
    # Rainbow's 500 000-transition replay peaks at ~3.9 GiB (docs/benchmarks.md#rainbow_memory)
    "rainbow": AgentEntry(
        "agent.rainbow",
        torch=True,
        checkpoint=True,
        memory="6g",
        summary="Rainbow DQN, from scratch or fine-tuning a checkpoint",
    ),
    "sb3_ppo": AgentEntry(
        "agent.sb3_ppo",
        torch=True,
        image=False,
        summary="Stable-Baselines3's PPO through the adapter (local only: "
        "the images carry no stable-baselines3)",
    ),
}


def agent_entry(name: str) -> AgentEntry:
    """The registry's entry for `name`; a one-line UserError naming the known agents."""
    entry = AGENTS.get(name)
    if entry is None:
        raise UserError(
            f"unknown agent {name!r} (no agent named so in evaluation/agents.py): "
            f"choose one of {', '.join(AGENTS)}, or run any command as an agent "
            "with `run --agent-cmd`"
        )
    return entry
