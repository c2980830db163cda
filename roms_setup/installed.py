"""What stable-retro knows and what is playable: the check every environment maker runs first."""

from __future__ import annotations

import os

import stable_retro.data as retro_data

from roms_setup.levels import Level
from sonic_common.errors import UserError

# Stable, contrib (the contest's custom levels) and experimental integrations alike.
ALL_INTEGRATIONS = retro_data.Integrations.ALL


def game_known(game: str) -> bool:
    """stable-retro has an integration (data files) for this game."""
    try:
        return retro_data.get_file_path(game, "rom.sha", ALL_INTEGRATIONS) is not None
    except Exception:
        return False


def game_playable(game: str) -> bool:
    """The game's ROM is installed, so an emulator can be made."""
    try:
        path = retro_data.get_romfile_path(game, ALL_INTEGRATIONS)
    except (FileNotFoundError, ValueError):
        return False
    return path is not None and os.path.isfile(path)


def game_dir(game: str) -> str:
    sha = retro_data.get_file_path(game, "rom.sha", ALL_INTEGRATIONS)
    if sha is None:
        raise UserError(f"stable-retro has no game {game!r}: check the spelling (ids end in -v0)")
    return os.path.dirname(sha)


def has_file(game: str, name: str) -> bool:
    return retro_data.get_file_path(game, name, ALL_INTEGRATIONS) is not None


def import_hint(game: str) -> str:
    if "Atari2600" in game:
        return "python -m roms_setup import --bundled"
    return "python -m roms_setup import PATH_TO_YOUR_ROMS"


def require_playable(level: Level) -> None:
    """Raise a one-line UserError unless the level can be played right now."""
    if not game_known(level.game):
        raise UserError(
            f"unknown game {level.game!r}: stable-retro has no such integration "
            "(check the spelling; stable games end in -v0)"
        )
    if not game_playable(level.game):
        raise UserError(
            f"game {level.game} is not imported (no ROM): run `{import_hint(level.game)}`"
        )
    if level.state not in retro_data.list_states(level.game, ALL_INTEGRATIONS):
        states = ", ".join(retro_data.list_states(level.game, ALL_INTEGRATIONS)[:8])
        raise UserError(f"game {level.game} has no state {level.state!r}: known states: {states}")
