"""Normalized scores: per level `(score - random) / (reference - random)`.

Where the references come from (`Scale.source` says it in the report):

- Atari 2600 games: the published random and human scores (`data/atari_reference_scores.csv`,
  the Atari-57 table of DeepMind's dqn_zoo that rliable uses): 0 = random play, 1 = human.
- Sonic levels: the contest's own scale, which is the same on every level (9,000 for reaching the
  end plus up to 1,000 of time bonus, `contest.rules.MAX_EPISODE_RETURN`): random = 0, reference =
  10,000, so a normalized score is the fraction of the contest's maximum. (The paper's human
  score, 7,438.2 on the validation levels, is 0.74 on this scale.)
- Any other level: random = 0 and reference = the best agent of the suite on that level (its mean
  over seeds), flagged, since it changes with the agents compared; when no agent scores above 0,
  the scale is 1 (raw scores), also flagged.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypeVar

import numpy as np

from evaluation.contest.rules import MAX_EPISODE_RETURN
from roms_setup.levels import Level, is_contest_game

ATARI_CSV = Path(__file__).parent / "data" / "atari_reference_scores.csv"
ATARI_SUFFIX = "-Atari2600-v0"
ATARI_SOURCE = "random and human scores, the Atari-57 table of dqn_zoo and rliable"
SONIC_SOURCE = "the contest's scale: score / 10,000 (its maximum per episode)"
FALLBACK_SOURCE = "no published reference: 0 = zero score, 1 = the best agent of this report"
S = TypeVar("S", float, np.ndarray)


@dataclass(frozen=True)
class Scale:
    random: float
    reference: float
    source: str
    flagged: bool = False  # the reference is the suite's best agent, not a published score

    def __call__(self, score: S) -> S:
        """A score, or an array of scores, on this level's normalized scale."""
        return (score - self.random) / (self.reference - self.random)


@cache
def atari_references() -> dict[str, tuple[float, float]]:
    """{game without the -Atari2600-v0 suffix: (random, human)} from the shipped CSV."""
    with open(ATARI_CSV, newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {r["game"]: (float(r["random"]), float(r["human"])) for r in rows}


def published_scale(level: str) -> Scale | None:
    """The published scale of a level, or None when there is none."""
    game = Level.parse(level).game
    if game.endswith(ATARI_SUFFIX):
        ref = atari_references().get(game[: -len(ATARI_SUFFIX)])
        return None if ref is None else Scale(ref[0], ref[1], ATARI_SOURCE)
    if is_contest_game(game):
        return Scale(0.0, MAX_EPISODE_RETURN, SONIC_SOURCE)
    return None


def level_scales(best: Mapping[str, float]) -> dict[str, Scale]:
    """Every level's scale; `best` holds each level's best mean score over the agents (NaN when
    none), for the levels without a published reference."""
    out = {}
    for level, top in best.items():
        scale = published_scale(level)
        if scale is None:
            ok = not math.isnan(top) and top > 0
            scale = Scale(
                0.0,
                top if ok else 1.0,
                FALLBACK_SOURCE
                if ok
                else "no published reference and no agent above 0: raw scores",
                flagged=True,
            )
        out[level] = scale
    return out
