"""The agent registry (evaluation/agents.py): every entry names a real entry point, and the
commands that take an agent name read it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.agents import AGENTS, agent_entry
from sonic_common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_registered_module_is_an_entry_point(name: str) -> None:
    spec = importlib.util.find_spec(AGENTS[name].module)
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    assert 'if __name__ == "__main__":' in source
    assert Path(spec.origin).resolve().is_relative_to(ROOT / "agent")


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_agent_answers_help_and_refuses_an_unknown_argument(name: str) -> None:
    """Before it connects: --help shows its options, a stray argument (`--agent-args`) is an
    error rather than ignored."""
    module = AGENTS[name].module
    for args, code, said in ((["--help"], 0, "usage: "), (["--no-such-option"], 2, "usage: ")):
        proc = subprocess.run(
            [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == code and said in proc.stdout + proc.stderr, proc.stderr[-800:]


def test_an_unknown_name_is_a_one_line_error_naming_the_known_agents() -> None:
    with pytest.raises(UserError) as e:
        agent_entry("nosuch")
    assert "\n" not in str(e.value)
    assert all(name in str(e.value) for name in AGENTS)


def test_build_refuses_what_the_registry_rules_out() -> None:
    """A local-only agent has no image; an agent that loads no checkpoint gets none (both
    checked before any Docker call)."""
    local_only = next(n for n, e in AGENTS.items() if not e.image)
    no_ckpt = next(n for n, e in AGENTS.items() if e.image and not e.checkpoint)
    for args, message in (
        ([local_only], "has no image"),
        ([no_ckpt, "--checkpoint", "x.pt"], "loads no checkpoint"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "evaluation", "build", "--agent", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1
