"""`python -m agent.sb3_ppo [--n-steps N] [--batch-size B] [--device auto|cpu|cuda]`:
Stable-Baselines3's PPO as a contest agent, through `agent.sb3_adapter` (the bench extra:
`pip install -e '.[bench]'`). It learns until the server ends the run at the budget.

    python -m evaluation run --agent sb3_ppo --level Airstriker-Genesis-v0:Level1 \\
        --budget 100000 --out results/sb3
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from agent.connection import BudgetExhausted, RemoteEnvClosed, agent_seed
from agent.sb3_adapter import contest_gym_env
from sonic_common.errors import UserError, exit_on_user_error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agent.sb3_ppo", description=__doc__.splitlines()[1])
    p.add_argument("--n-steps", type=int, default=128, help="rollout length (SB3 n_steps)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch (SB3 batch_size)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("stable_baselines3") is None:
        raise UserError(
            "Stable-Baselines3 is missing: install the bench extra (pip install -e '.[bench]')"
        )
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = contest_gym_env()
    model = PPO(
        "CnnPolicy",
        DummyVecEnv([lambda: env]),
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=1,
        device=args.device,
        seed=agent_seed(0),
        verbose=0,
    )
    print(f"sb3_ppo agent: learning (n_steps {args.n_steps}) until the budget", flush=True)
    try:
        model.learn(total_timesteps=10**12)
    except BudgetExhausted:
        print(
            f"sb3_ppo agent: budget spent after {model.num_timesteps} steps, "
            f"{model._n_updates} updates",  # SB3 counts epochs of updates there
            flush=True,
        )
    except RemoteEnvClosed as e:
        print(f"sb3_ppo agent: the server closed the connection: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
