"""What every contest agent does around its own learning: the shared agent runtime.

    args = agent_parser("ppo2", __doc__, "ppo2.yaml").parse_args(argv)   # --config --set ...
    cfg = load_config(args.config, args.overrides, defaults=...)
    seed, device = start(cfg)          # $AGENT_SEED (else the config's seed) seeds random, numpy
                                       # and torch; the config's torch_threads and device
    init = checkpoint_path(args.init)  # --checkpoint, else $AGENT_CHECKPOINT
    envs = contest_envs(cfg)           # the contest connection behind the agent-side wrappers
    return play_until_budget("ppo2", play, summary=..., save=..., close=...)

`play_until_budget` is the one place where an agent's run ends: when the server says the budget
(timesteps or wall clock) is spent it saves (when the agent has something to save), prints one
line `NAME agent: budget spent ...` and returns 0; when the connection ends otherwise it saves,
prints why on stderr and returns 1. The offline trainers (agent.train) use `seed_everything`
and `torch_setup` too.

Imports torch only inside the functions that need it: the random and JERK agents run without.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import add_device_option, add_set_option
from agent.connection import BudgetExhausted, RemoteEnvClosed, agent_seed, make_env
from sonic_common.agent_env import CHECKPOINT_ENV

if TYPE_CHECKING:
    import torch


def agent_parser(
    name: str, doc: str, config_name: str | None, checkpoint_help: str | None = None
) -> argparse.ArgumentParser:
    """`python -m agent.NAME`'s parser with the options every learning agent has: --config,
    --set and --device, and --checkpoint (`init`; --init: its old name) when `checkpoint_help`
    says what it loads."""
    parser = argparse.ArgumentParser(
        prog=f"python -m agent.{name}", description=doc.splitlines()[0]
    )
    if config_name is not None:
        parser.add_argument(
            "--config", help=f"YAML file with the keys to change from {config_name}"
        )
    if checkpoint_help is not None:
        parser.add_argument(
            "--checkpoint",
            "--init",
            dest="init",
            metavar="FILE",
            help=f"{checkpoint_help} (default: ${CHECKPOINT_ENV}; --init: its old name)",
        )
    add_set_option(parser)
    add_device_option(parser)
    return parser


def checkpoint_path(given: str | None) -> str | None:
    """The checkpoint to start from: the command line's, else $AGENT_CHECKPOINT, else None."""
    return given or os.environ.get(CHECKPOINT_ENV) or None


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global random numbers from `seed`."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def torch_setup(cfg: dict[str, Any]) -> tuple[int, torch.device]:
    """(torch CPU threads, device) from the config's `torch_threads` and `device`."""
    from sonic_common.devices import choose_device, set_torch_threads

    threads = set_torch_threads(int(cfg["torch_threads"]))
    return threads, choose_device(str(cfg["device"]))


def start(cfg: dict[str, Any]) -> tuple[int, torch.device]:
    """Seed (from $AGENT_SEED, else the config's `seed`) and set up torch: (seed, device)."""
    seed = agent_seed(int(cfg["seed"]))
    assert seed is not None
    seed_everything(seed)
    return seed, torch_setup(cfg)[1]


def contest_envs(cfg: dict[str, Any]) -> Any:
    """The contest connection as a vector environment of one, behind the agent-side wrappers
    with the config's discretizer, backtracking and reward scale (episode statistics recorded
    under them)."""
    from gymnasium.wrappers import RecordEpisodeStatistics

    from agent.wrappers import WrapperConfig, wrap_agent_env

    wrappers = WrapperConfig.from_dict(cfg)  # its settings checked before connecting
    remote = make_env(copy_obs=False)  # WarpFrame makes its own array at once
    return make_single_vec_env(lambda: wrap_agent_env(RecordEpisodeStatistics(remote), wrappers))


def play_until_budget(
    name: str,
    play: Callable[[], object],
    *,
    summary: Callable[[], str],
    save: Callable[[], Path | None] | None = None,
    phase: Callable[[], str] = lambda: "",
    close: Callable[[], object] = lambda: None,
    finished: Callable[[], object] = lambda: None,
) -> int:
    """Run `play` until the server ends the run; the agent's exit code (see the module
    docstring). `summary` says how far the run got ("after 300 steps, ..."), `phase` where it
    was when the connection closed, `close` releases what the agent holds (always called),
    `finished` runs when the budget is spent (not when the run is stopped)."""
    try:
        play()
    except BudgetExhausted as e:
        line = f"{name} agent: budget spent {summary()} ({e.reason})"
        if save is not None:
            line += f"; model: {save() or 'not saved (no output dir)'}"
        finished()
        print(line, flush=True)
        return 0
    except RemoteEnvClosed as e:
        if save is not None:
            save()
        during = f" during {phase()}" if phase() else ""
        print(f"{name} agent: the server closed the connection{during}: {e}", file=sys.stderr)
        return 1
    finally:
        close()
    return 0


def learn_until_budget(
    name: str,
    learner: Any,
    learn: Callable[..., object],
    *,
    envs: Any,
    logger: Any,
    cfg: dict[str, Any],
    seed: int,
    save: Callable[[], Path | None],
    finished: Callable[[], object] = lambda: None,
    **callback: Any,
) -> int:
    """A learner (PPO, Rainbow: `timesteps`, `updates` and `episodes` counters) learning on the
    contest connection with no step limit of its own, logging every `log_interval`, until the
    budget ends it (`play_until_budget`); `callback` is its `learn`'s on_update/on_step. Its
    logger and environments are closed at the end."""

    def run() -> object:
        return learn(
            learner,
            envs,
            total_timesteps=None,
            logger=logger,
            log_interval=int(cfg["log_interval"]),
            seed=seed,
            **callback,
        )

    return play_until_budget(
        name,
        run,
        save=save,
        finished=finished,
        close=lambda: (logger.close(), envs.close()),
        summary=lambda: (
            f"after {learner.timesteps} steps, {learner.updates} updates, "
            f"{learner.episodes} episodes"
        ),
    )


def make_single_vec_env(env_fn: Callable[[], Any]) -> Any:
    """One environment in this process as a vector env of 1 (the contest agent's case)."""
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    return SyncVectorEnv([env_fn], autoreset_mode=AutoresetMode.SAME_STEP, copy=False)
