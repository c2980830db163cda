"""The agent `random` (`python -m agent.random_agent`, `sonic-maml agent random`, `--agent random`):
uniformly random buttons until the server says the budget is spent. (Not agent/random.py: that
name would shadow the standard library's `random` for a script run from this directory.)

A baseline and the smallest complete agent: connect, reset, step, reset when done, exit 0 on
BudgetExhausted (timesteps or wall clock). Any other end of the connection exits 1.
"""

from __future__ import annotations

import argparse

from agent.connection import agent_seed, make_env
from agent.runtime import play_until_budget
from sonic_common.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    # no options: --help says so, and an argument (`--agent-args random=...`) is an error, not
    # ignored; the seed is the server's ($AGENT_SEED)
    argparse.ArgumentParser(
        prog="python -m agent.random_agent", description=(__doc__ or "").splitlines()[0]
    ).parse_args(argv)
    env = make_env()  # no $CONTEST_SOCKET_DIR, or no server there: a one-line error, exit 2
    env.action_space.seed(agent_seed(0))
    count = {"steps": 0, "episodes": 0}

    def play() -> None:
        env.reset()
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            count["steps"] += 1
            if terminated or truncated:
                count["episodes"] += 1
                env.reset()

    return play_until_budget(
        "random",
        play,
        close=env.close,
        summary=lambda: f"after {count['steps']} steps, {count['episodes']} episodes",
    )


if __name__ == "__main__":
    raise SystemExit(main())
