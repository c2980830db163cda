"""`python -m agent.random`: uniformly random buttons until the server says the budget is spent.

A baseline and the smallest complete agent: connect, reset, step, reset when done, exit 0 on
BudgetExhausted (timesteps or wall clock). Any other end of the connection exits 1.
"""

from __future__ import annotations

import sys

from agent.connection import BudgetExhausted, RemoteEnvClosed, agent_seed, make_env


def main() -> int:
    try:
        env = make_env()
    except (RuntimeError, OSError) as e:  # no $CONTEST_SOCKET_DIR, or no server there
        print(f"error: {e}", file=sys.stderr)
        return 2
    env.action_space.seed(agent_seed(0))
    steps = episodes = 0
    try:
        env.reset()
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            steps += 1
            if terminated or truncated:
                episodes += 1
                env.reset()
    except BudgetExhausted as e:
        print(f"random agent: budget spent after {steps} steps, {episodes} episodes ({e.reason})")
        return 0
    except RemoteEnvClosed as e:
        print(f"random agent: the server closed the connection: {e}", file=sys.stderr)
        return 1
    finally:
        env.close()


if __name__ == "__main__":
    raise SystemExit(main())
