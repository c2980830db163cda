"""The client environment's contract as a Gymnasium library meets it, and the adapter that lets
one (Gymnasium's checker, Stable-Baselines3) run in the contest: real server, real emulator."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEVEL = "Airstriker-Genesis-v0:Level1"

CHECK = """
import sys
import gymnasium as gym
from gymnasium.wrappers import TimeLimit
from agent.connection import BudgetExhausted, make_env
from agent.sb3_adapter import contest_gym_env
raw = make_env()
env = contest_gym_env(raw) if sys.argv[1] == "adapted" else raw
# what a library does: a time limit, and a vector env that resets when an episode ends
venv = gym.vector.SyncVectorEnv([lambda: TimeLimit(env, max_episode_steps=50)])
venv.reset(seed=1)
cuts = 0
try:
    while True:
        cuts += int(venv.step(venv.action_space.sample())[3][0])
        if sys.argv[1] == "adapted":
            print("cuts:", cuts, "continued:", env.get_wrapper_attr("continued"), flush=True)
except BudgetExhausted:
    print("budget spent", flush=True)
"""


def run(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation", "run", "--level", LEVEL, "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, json.loads((out / "results.json").read_text())


def test_a_library_that_resets_at_will_fails_raw_and_runs_adapted(tmp_path: Path) -> None:
    script = tmp_path / "lib.py"
    script.write_text(CHECK)
    cmd = shlex.join([sys.executable, str(script)])
    proc, res = run(
        tmp_path, "raw", "--agent", "lib", "--budget", "600", "--agent-cmd", cmd + " raw"
    )
    log = (tmp_path / "raw" / "agent.log").read_text()
    assert proc.returncode == 1 and res["status"] == "agent_crashed", res
    assert "RemoteEnvError: RESET (5): reset before the episode is done" in log, log[-2000:]
    assert "status=agent_crashed" in proc.stderr and "RESET (5)" in proc.stderr

    proc, res = run(
        tmp_path, "adapted", "--agent", "lib", "--budget", "600", "--agent-cmd", cmd + " adapted"
    )
    log = (tmp_path / "adapted" / "agent.log").read_text()
    assert proc.returncode == 0 and res["status"] == "budget", log[-2000:]
    assert "budget spent" in log
    last = [ln.split() for ln in log.splitlines() if ln.startswith("cuts:")][-1]
    cuts, continued = int(last[1]), int(last[3])
    assert cuts >= 5 and continued >= cuts - res["resets"]  # the time limit's resets went on
    assert res["timesteps"] == 600


def test_stable_baselines3_ppo_learns_in_the_contest(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3", reason="Stable-Baselines3 is the bench extra")
    proc, res = run(
        tmp_path,
        "sb3",
        "--agent",
        "sb3_ppo",
        "--budget",
        "150",
        "--",
        "--n-steps",
        "64",
        "--batch-size",
        "32",
        "--device",
        "cpu",
    )
    log = (tmp_path / "sb3" / "agent.log").read_text()
    assert proc.returncode == 0 and res["status"] == "budget", log[-2000:]
    assert res["timesteps"] == 150
    (spent,) = re.findall(r"budget spent after (\d+) steps, (\d+) updates", log)
    # two whole rollouts of 64 steps fit the 150 timesteps (resets count), one epoch each
    assert int(spent[0]) >= 128 and int(spent[1]) == 2, log[-2000:]
