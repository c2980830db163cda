"""Level ids (`Game:State`) and the level sets shipped as CSV package data."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sonic_common.errors import UserError

_DATA = "data"

# The three original contest games (their levels' reward is the contest's: progress to the end,
# 9 000, plus a time bonus up to 1 000, from each game's contest.json).
CONTEST_GAMES = (
    "SonicTheHedgehog-Genesis-v0",
    "SonicTheHedgehog2-Genesis-v0",
    "SonicAndKnuckles3-Genesis-v0",
)


def is_contest_game(game: str) -> bool:
    """One of CONTEST_GAMES, or a custom-level game patched from one (`SonicTheHedgehog2Custom
    Kevin-Genesis`): not other Sonic games (Sms, Sonic 3 alone), whose reward is the score."""
    if game in CONTEST_GAMES:
        return True
    return "Custom" in game[1:] and base_game(game) in CONTEST_GAMES  # [1:]: a prefix before it


def base_game(custom_game: str) -> str:
    """The original game a custom game patches: the name's prefix before `Custom`, plus -v0.

    `SonicTheHedgehog2CustomKevin-Genesis` -> `SonicTheHedgehog2-Genesis-v0`.
    """
    prefix, sep, rest = custom_game.partition("Custom")
    if not sep or not prefix:
        raise UserError(f"{custom_game!r} is not a custom level game (no 'Custom' in its name)")
    platform = rest.rsplit("-", 1)[-1] if "-" in rest else "Genesis"
    return f"{prefix}-{platform}-v0"


@dataclass(frozen=True, order=True)
class Level:
    game: str
    state: str

    @property
    def id(self) -> str:
        return f"{self.game}:{self.state}"

    @property
    def slug(self) -> str:
        """A file-system friendly name, e.g. for result directories."""
        return f"{self.game}_{self.state}".replace("/", "_").replace(":", "_")

    @classmethod
    def parse(cls, text: str) -> Level:
        game, sep, state = text.strip().partition(":")
        if not sep or not game or not state:
            raise UserError(
                f"bad level id {text!r}: write it as Game:State, e.g. Airstriker-Genesis-v0:Level1"
            )
        return cls(game, state)

    def __str__(self) -> str:
        return self.id


def level_set_names() -> list[str]:
    files = resources.files("roms_setup").joinpath(_DATA).iterdir()
    return sorted(f.name[: -len(".csv")] for f in files if f.name.endswith(".csv"))


def _parse_csv(text: str, source: str) -> list[Level]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != ["game", "state"]:
        raise UserError(
            f"{source} is not a level set: its first line must be the header game,state"
        )
    levels = [Level(row["game"].strip(), row["state"].strip()) for row in reader]
    if not levels:
        raise UserError(f"{source} lists no levels: add rows game,state below the header")
    return levels


def level_set_csv(name: str) -> str:
    if name not in level_set_names():
        raise UserError(f"unknown level set {name!r}: choose one of {', '.join(level_set_names())}")
    return resources.files("roms_setup").joinpath(_DATA, f"{name}.csv").read_text()


def load_level_set(name: str) -> list[Level]:
    return _parse_csv(level_set_csv(name), f"level set {name!r}")


def resolve_levels(spec: str) -> list[Level]:
    """Levels from a set name, a CSV path, or a comma-separated list of `Game:State` ids."""
    spec = spec.strip()
    if spec in level_set_names():
        return load_level_set(spec)
    if spec.endswith(".csv"):
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"level file {spec} does not exist: give a CSV with header game,state")
        return _parse_csv(path.read_text(), str(path))
    if ":" not in spec:
        raise UserError(
            f"{spec!r} is neither a level set nor a level id: use one of "
            f"{', '.join(level_set_names())}, a CSV file, or Game:State[,Game:State...]"
        )
    return [Level.parse(part) for part in spec.split(",") if part.strip()]
