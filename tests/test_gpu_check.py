"""scripts/gpu-check: the device comparison and its exit codes. On a machine without CUDA, the
comparison itself runs CPU against CPU (`--device cpu`); a negative tolerance makes the same
comparison fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu-check"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_a_check_compares_the_device_with_the_cpu_and_sets_the_exit_code() -> None:
    ok = run("--device", "cpu", "--checks", "maml-agent-adaptation")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   maml-agent-adaptation: max relative difference 0.00e+00" in ok.stdout
    assert "1 of 1 checks passed" in ok.stdout
    bad = run("--device", "cpu", "--checks", "maml-agent-adaptation", "--tolerance", "-1")
    assert bad.returncode == 1 and "FAIL maml-agent-adaptation" in bad.stdout


def test_no_device_or_an_unknown_check_is_a_one_line_error() -> None:
    unknown = run("--device", "cpu", "--checks", "nope")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "unknown check(s) nope" in unknown.stderr
    if not torch.cuda.is_available():
        missing = run()
        assert missing.returncode == 2 and missing.stderr.startswith("error: this PyTorch")
        assert missing.stderr.count("\n") == 1
