"""Our Rainbow learner against Stable-Baselines3's DQN: updates per second, in the same run.

One update = sample a batch of 32 from the replay, the loss, backward, Adam, and (ours) the new
priorities. Both learners get the same Nature CNN on (4, 84, 84) uint8 frames, batch 32, a replay
of `--fill` transitions of random frames (filled before the clock starts), Adam at lr 1e-4, the
target network copied every 8192 updates, one gradient step per update. What differs is the
algorithm: ours is the contest's Rainbow (prioritized 3-step replay storing each frame once,
noisy dueling C51 heads, double Q: three network calls per update, one with gradients); SB3's
DQN is uniform 1-step replay with an MLP head and a Huber loss on Q (two calls). SB3 has neither
prioritized replay nor distributional or noisy heads, so this is the closest "same settings" it
allows. Each learner runs in its own fresh subprocess, alternating, `--rounds` times; the
figure is the median of the rounds (wall clock; the rounds also print updates per CPU second of
the learner's process, steadier on a loaded machine). A breakdown line gives each side's mean
milliseconds per update in replay sampling, the network calls on s' without gradients (ours:
online and target; SB3: target), the online call on s, Adam, our priority update and the rest
(loss, backward; SB3 also clips the gradient norm), timed on the same updates, so a reader sees
where the extra work of ours goes.

    python benchmarks/rainbow_speed.py [--updates 200] [--rounds 3] [--fill 5000] [--threads 1]

Needs Stable-Baselines3 (`pip install -e .[bench]`); without it, says so and exits 2.
Last line: `BENCH rainbow_speed ratio=<ours/sb3 updates per second> target=1.0`.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OBS_SHAPE = (4, 84, 84)
ACTIONS = 7
BATCH = 32


class Phases:
    """Seconds spent in named parts of the updates: wrapped functions and module calls."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.spent[name] = self.spent.get(name, 0.0) + seconds

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start)

        return timed

    def hook(self, module: Any, name: Callable[[], str | None]) -> None:
        """Time each call of `module` under the name `name()` gives at the call (None: not)."""
        started: list[float] = []
        module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))

        def done(*_: Any) -> None:
            seconds, part = time.perf_counter() - started.pop(), name()
            if part is not None:
                self.add(part, seconds)

        module.register_forward_hook(done)

    def optimizer(self, opt: Any, name: str = "Adam") -> None:
        started: list[float] = []
        opt.register_step_pre_hook(lambda *_: started.append(time.perf_counter()))
        opt.register_step_post_hook(lambda *_: self.add(name, time.perf_counter() - started.pop()))

    def reset(self) -> None:
        self.spent.clear()


def timed_updates(step: Callable[[], None], updates: int, phases: Phases, out: mp.Queue) -> None:
    phases.reset()
    start, cpu = time.perf_counter(), time.process_time()
    step()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    rest = wall - sum(phases.spent.values())
    out.put((updates / wall, updates / cpu, {**phases.spent, "rest": rest}))


def run_ours(updates: int, fill: int, threads: int, out: mp.Queue) -> None:
    import numpy as np
    import torch

    from agent.learners.rainbow import Rainbow, RainbowConfig, RainbowNet, make_replay, rainbow_spec

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = RainbowConfig(capacity=max(fill, 1000), learning_starts=0)
    agent = Rainbow(RainbowNet(rainbow_spec(OBS_SHAPE, ACTIONS, cfg)), cfg)
    replay = make_replay(cfg, OBS_SHAPE, nenvs=1)
    rng = np.random.default_rng(0)
    replay.start(rng.integers(0, 256, (1, 84, 84), dtype=np.uint8))
    for t in range(fill):
        replay.add(
            np.array([t % ACTIONS]),
            np.array([rng.normal()]),
            np.array([t % 1000 == 999]),
            rng.integers(0, 256, (1, 84, 84), dtype=np.uint8),
        )
    phases = Phases()
    replay.sample = phases.wrap("sample", replay.sample)  # type: ignore[method-assign]
    replay.update_priorities = phases.wrap(  # type: ignore[method-assign]
        "priorities", replay.update_priorities
    )
    # both networks on s' (online for the argmax, target for the distribution), then online on s
    phases.hook(
        agent.online, lambda: "online s (grad)" if torch.is_grad_enabled() else "s' (no grad)"
    )
    phases.hook(agent.target, lambda: "s' (no grad)")
    phases.optimizer(agent.optimizer)
    for _ in range(5):  # warm-up
        agent.update(replay, rng)

    def step() -> None:
        for _ in range(updates):
            agent.update(replay, rng)

    timed_updates(step, updates, phases, out)


def run_sb3(updates: int, fill: int, threads: int, out: mp.Queue) -> None:
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.logger import configure

    class Frames(gym.Env):  # only gives SB3 its spaces; the replay is filled directly
        observation_space = gym.spaces.Box(0, 255, OBS_SHAPE, np.uint8)
        action_space = gym.spaces.Discrete(ACTIONS)

    torch.set_num_threads(threads)
    model = DQN(
        "CnnPolicy",
        Frames(),
        learning_rate=1e-4,
        buffer_size=max(fill, 1000),
        learning_starts=0,
        batch_size=BATCH,
        train_freq=1,
        gradient_steps=1,
        target_update_interval=8192,
        device="cpu",
        seed=0,
    )
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (1, *OBS_SHAPE), dtype=np.uint8)
    for t in range(fill):
        nxt = rng.integers(0, 256, (1, *OBS_SHAPE), dtype=np.uint8)
        model.replay_buffer.add(
            obs,
            nxt,
            np.array([t % ACTIONS]),
            np.array([rng.normal()]),
            np.array([t % 1000 == 999]),
            [{}],
        )
        obs = nxt
    phases = Phases()
    buffer = model.replay_buffer
    assert buffer is not None
    buffer.sample = phases.wrap("sample", buffer.sample)  # type: ignore[method-assign]
    phases.hook(model.q_net, lambda: "online s (grad)")
    phases.hook(model.q_net_target, lambda: "s' (no grad)")
    phases.optimizer(model.policy.optimizer)
    model.train(gradient_steps=5, batch_size=BATCH)  # warm-up
    timed_updates(
        lambda: model.train(gradient_steps=updates, batch_size=BATCH), updates, phases, out
    )


Measured = tuple[float, float, dict[str, float]]  # updates/s, per CPU second, seconds by part


def measure(fn: Callable[..., None], updates: int, fill: int, threads: int) -> Measured:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(updates, fill, threads, q))
    proc.start()
    value = q.get()
    proc.join()
    return value


PARTS = ("sample", "s' (no grad)", "online s (grad)", "Adam", "priorities", "rest")


def breakdown(runs: list[Measured], updates: int) -> str:
    """Mean milliseconds per update in each part over the rounds."""
    total: dict[str, float] = {}
    for _, _, spent in runs:
        for k, v in spent.items():
            total[k] = total.get(k, 0.0) + v
    n = updates * len(runs)
    return ", ".join(f"{k} {1e3 * total[k] / n:.1f}" for k in PARTS if k in total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fill", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both")
    args = ap.parse_args()
    if importlib.util.find_spec("stable_baselines3") is None:
        print(
            "stable-baselines3 is missing: install the bench extra "
            "(`.venv/bin/pip install -e '.[bench]'` or `pip install stable-baselines3`)",
            file=sys.stderr,
        )
        return 2
    ours: list[Measured] = []
    sb3: list[Measured] = []
    for r in range(args.rounds):
        ours.append(measure(run_ours, args.updates, args.fill, args.threads))
        sb3.append(measure(run_sb3, args.updates, args.fill, args.threads))
        print(
            f"round {r + 1}: ours {ours[-1][0]:.2f} updates/s ({ours[-1][1]:.2f} per CPU s), "
            f"SB3 DQN {sb3[-1][0]:.2f} updates/s ({sb3[-1][1]:.2f} per CPU s)",
            flush=True,
        )
    o, s = statistics.median(m[0] for m in ours), statistics.median(m[0] for m in sb3)
    oc, sc = statistics.median(m[1] for m in ours), statistics.median(m[1] for m in sb3)
    print(
        f"breakdown, ms per update: ours: {breakdown(ours, args.updates)} | "
        f"SB3 DQN: {breakdown(sb3, args.updates)}"
    )
    print(
        f"median: ours {o:.2f} updates/s, SB3 DQN {s:.2f} updates/s "
        f"({args.updates} updates, batch {BATCH}, {args.threads} torch thread(s)); "
        f"per CPU second: ours {oc:.2f}, SB3 DQN {sc:.2f} (ratio {oc / sc:.3f})"
    )
    print(f"BENCH rainbow_speed ratio={o / s:.3f} target=1.0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
