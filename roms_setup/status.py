"""Which levels of each set can be played right now, and the command that fixes the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

import stable_retro.data as retro_data

from roms_setup.installed import ALL_INTEGRATIONS, game_known, game_playable, has_file
from roms_setup.levels import Level, level_set_names, load_level_set

ATARI_FIX = "python -m roms_setup import --bundled"
SONIC_FIX = "python -m roms_setup import PATH_TO_YOUR_ROMS"
CUSTOM_NOTE = (
    "the custom levels are patched from the original ROMs with xdelta3 (apt-get install xdelta3)"
)


def level_problem(level: Level) -> str | None:
    """None if the level can be played now, else why not: unknown-game, no-rom or no-state."""
    if not game_known(level.game):
        return "unknown-game"
    if not game_playable(level.game):
        return "no-rom"
    if level.state not in retro_data.list_states(level.game, ALL_INTEGRATIONS):
        return "no-state"
    return None


def fix_command(games: list[str]) -> str | None:
    if not games:
        return None
    commands = []
    if any("Atari2600" in g for g in games):
        commands.append(ATARI_FIX)
    others = [g for g in games if "Atari2600" not in g]
    if others:
        command = SONIC_FIX
        if any(has_file(g, "rom.delta") for g in others):
            command += f" ({CUSTOM_NOTE})"
        commands.append(command)
    return "; ".join(commands)


@dataclass
class SetStatus:
    name: str
    total: int
    playable: int
    missing_games: list[str] = field(default_factory=list)  # games without a ROM
    problems: dict[str, str] = field(default_factory=dict)  # level id -> problem, all others
    fix: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "playable": self.playable,
            "missing_games": self.missing_games,
            "problems": self.problems,
            "fix": self.fix,
        }


def set_status(name: str) -> SetStatus:
    levels = load_level_set(name)
    problems = {lv.id: p for lv in levels if (p := level_problem(lv)) is not None}
    missing = sorted({lv.game for lv in levels if problems.get(lv.id) == "no-rom"})
    other = {k: v for k, v in problems.items() if v != "no-rom"}
    return SetStatus(
        name=name,
        total=len(levels),
        playable=len(levels) - len(problems),
        missing_games=missing,
        problems=other,
        fix=fix_command(missing),
    )


def all_status() -> list[SetStatus]:
    return [set_status(name) for name in level_set_names()]


def status_json() -> dict[str, object]:
    return {"sets": {s.name: s.to_json() for s in all_status()}}
