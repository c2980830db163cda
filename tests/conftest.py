"""Shared fixtures. stable-retro allows one emulator per process: every test closes its env."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import gymnasium as gym
import pytest


@pytest.fixture(scope="session")
def atari_roms() -> None:
    """The Atari 2600 ROMs bundled with ale-py, imported into stable-retro (idempotent)."""
    subprocess.run(
        [sys.executable, "-m", "roms_setup", "import", "--bundled"], check=True, capture_output=True
    )


@pytest.fixture
def closing() -> Iterator[Callable[[gym.Env], gym.Env]]:
    """Register an env to be closed after the test, whatever happens."""
    envs: list[gym.Env] = []

    def register(env: gym.Env) -> gym.Env:
        envs.append(env)
        return env

    yield register
    for env in envs:
        env.close()
