"""`python -m agent.ppo2` through the real contest server on Airstriker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.checkpoint import load_checkpoint
from evaluation.contest.runner import RunSpec, run_one
from roms_setup.levels import Level

ROOT = Path(__file__).resolve().parents[1]
LEVEL = Level.parse("Airstriker-Genesis-v0:Level1")
SMALL = ["--set", "nsteps=64", "--set", "nminibatches=2", "--set", "noptepochs=1"]


def test_ppo2_imports_neither_stable_retro_nor_meta_train() -> None:
    code = (
        "import sys, agent.ppo2; "
        "print(sorted(m for m in ('stable_retro', 'meta_train', 'retro') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_ppo2_learns_until_the_budget_then_fine_tunes(tmp_path: Path) -> None:
    results = run_one(
        RunSpec(
            agent="ppo2",
            level=LEVEL,
            seed=1,
            budget=200,
            results_dir=tmp_path / "scratch",
            agent_args=SMALL,
        )
    )
    log = (tmp_path / "scratch" / "agent.log").read_text()
    assert results["status"] == "budget", log
    assert results["agent_exit_code"] == 0 and results["timesteps"] == 200
    assert "learning from scratch" in log and "budget spent after" in log
    ckpt = tmp_path / "scratch" / "agent" / "checkpoint.pt"
    data = load_checkpoint(ckpt)
    # 200 served requests = resets + steps; every full rollout of 64 steps was learned from
    assert data["updates"] >= 2 and data["timesteps"] >= 128
    assert data["policy_spec"]["body"] == "cnn"
    assert data["policy_spec"]["action"] == {"type": "discrete", "n": 7}
    assert data["config"]["nsteps"] == 64
    progress = (tmp_path / "scratch" / "agent" / "learning.csv").read_text().splitlines()
    assert progress[0].startswith("timesteps,") and len(progress) - 1 == data["updates"]

    results = run_one(
        RunSpec(
            agent="ppo2",
            level=LEVEL,
            seed=2,
            budget=100,
            results_dir=tmp_path / "tuned",
            agent_args=[*SMALL, "--init", str(ckpt)],
        )
    )
    log = (tmp_path / "tuned" / "agent.log").read_text()
    assert results["status"] == "budget" and results["agent_exit_code"] == 0, log
    assert f"fine-tuning {ckpt}" in log
    tuned = load_checkpoint(tmp_path / "tuned" / "agent" / "checkpoint.pt")
    assert tuned["init"] == str(ckpt)


def test_ppo2_bad_init_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.ppo2", "--init", str(tmp_path / "x.pt")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: checkpoint") and "Traceback" not in proc.stderr
