"""Helpers shared by the tests, imported normally (`from tests.support import AIRSTRIKER`; the
repository root is on the path through pytest's `pythonpath`); fixtures stay in conftest.py."""

AIRSTRIKER = "Airstriker-Genesis-v0:Level1"  # ships with stable-retro
BREAKOUT = "Breakout-Atari2600-v0:Start"  # an Atari 2600 ROM bundled with ale-py
