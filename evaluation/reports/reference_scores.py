"""Published scores on the contest's 11 validation levels (the paper's test set), 1M steps each.

From "Gotta Learn Fast" (Nichol et al. 2018, arXiv:1804.03720).
The numbers marked `verified=False` come from memory of the paper and could not be re-read:
the report prints them with "(unverified)".
"""

from __future__ import annotations

from dataclasses import dataclass

REFERENCE_LEVEL_SET = "sonic-validation"
SOURCE = "Nichol et al. 2018, Gotta Learn Fast (11 validation levels, 1M steps each)"


@dataclass(frozen=True)
class ReferenceScore:
    agent: str
    score: float
    std: float | None  # spread the paper gives, where it gives one
    verified: bool

    def text(self) -> str:
        spread = f" ± {self.std:.1f}" if self.std is not None else ""
        mark = "" if self.verified else " (unverified)"
        return f"{self.score:.1f}{spread}{mark}"


SONIC_VALIDATION: tuple[ReferenceScore, ...] = (
    ReferenceScore("PPO (from scratch)", 1488.8, None, verified=False),
    ReferenceScore("JERK", 1904.0, 21.9, verified=True),
    ReferenceScore("Rainbow", 2748.6, 102.2, verified=True),
    ReferenceScore("Joint Rainbow", 2969.2, None, verified=False),
    ReferenceScore("Joint PPO", 3127.9, None, verified=False),
    ReferenceScore("Human", 7438.2, None, verified=False),
)
