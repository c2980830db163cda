"""The contest's custom levels: xdelta3 patches (`rom.delta`) applied to the original Sonic ROMs.

stable-retro ships the contrib games `...Custom...-Genesis` with a VCDIFF delta (made by xdelta3
with LZMA secondary compression) and the SHA-1 of the patched ROM, but never applies the delta.
We run Debian's `xdelta3` program on it and install the result atomically as `rom.md`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import stable_retro.data as retro_data

from roms_setup.installed import ALL_INTEGRATIONS, game_dir, game_playable, has_file
from roms_setup.levels import base_game
from sonic_common.errors import UserError
from sonic_common.files import atomic_path

XDELTA3 = "xdelta3"
PATCHED_ROM_NAME = "rom.md"  # stable-retro's extension for Genesis ROMs
XDELTA3_HINT = "install it with `apt-get install xdelta3`"


def sha1_of(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def xdelta3_path() -> str:
    """The xdelta3 program, or a one-line UserError naming the package to install."""
    exe = shutil.which(XDELTA3)
    if exe is None:
        raise UserError(f"xdelta3 is missing (needed for the custom Sonic levels): {XDELTA3_HINT}")
    return exe


def apply_delta(source: Path, delta: Path, out: Path, expected_sha1: str | None) -> str:
    """Decode `delta` against `source` into `out` atomically; return the SHA-1 of the result.

    The output goes to a temporary file next to `out` and is renamed into place only after its
    SHA-1 matched `expected_sha1` (when given), so `out` is either untouched or complete.
    """
    exe = xdelta3_path()
    for p, what in ((source, "base ROM"), (delta, "delta")):
        if not Path(p).is_file():
            raise UserError(f"{what} {p} does not exist: import the original ROM first")
    with atomic_path(out) as tmp:
        proc = subprocess.run(
            [exe, "-d", "-f", "-s", str(source), str(delta), str(tmp)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(
                f"xdelta3 could not apply {delta} to {source} ({reason}): the base ROM is "
                "probably a different revision; import the ROM whose SHA-1 stable-retro lists"
            )
        got = sha1_of(tmp)
        if expected_sha1 is not None and got != expected_sha1.strip().lower():
            raise UserError(
                f"patching {source} gave SHA-1 {got}, expected {expected_sha1.strip()}: the base "
                "ROM is the wrong revision; import the ROM whose SHA-1 stable-retro lists"
            )
    return got


# ---------------------------------------------------------------------------------------------
# The contrib custom games


@dataclass(frozen=True)
class PatchOutcome:
    game: str
    base: str
    status: str  # "patched", "already", "base-missing", "failed"
    detail: str = ""


def custom_games() -> list[str]:
    """Every stable-retro game that ships a `rom.delta` (the contest's custom levels)."""
    return [g for g in retro_data.list_games(ALL_INTEGRATIONS) if has_file(g, "rom.delta")]


def expected_sha1s(game: str) -> list[str]:
    path = retro_data.get_file_path(game, "rom.sha", ALL_INTEGRATIONS)
    if path is None:
        return []
    return Path(path).read_text().split()


def patch_custom_game(game: str) -> PatchOutcome:
    """Build the custom game's ROM from its installed base ROM, if needed and possible."""
    base = base_game(game)
    target_dir = Path(game_dir(game))
    out = target_dir / PATCHED_ROM_NAME
    shas = expected_sha1s(game)
    if out.is_file() and sha1_of(out) in shas:
        return PatchOutcome(game, base, "already")
    if not game_playable(base):
        return PatchOutcome(game, base, "base-missing", f"import {base} first")
    source = Path(retro_data.get_romfile_path(base, ALL_INTEGRATIONS))
    try:
        apply_delta(source, target_dir / "rom.delta", out, shas[0] if shas else None)
    except UserError as e:
        return PatchOutcome(game, base, "failed", str(e))
    return PatchOutcome(game, base, "patched")


def patch_custom_games(games: list[str] | None = None) -> list[PatchOutcome]:
    """Patch every custom game whose base ROM is installed; report the others as base-missing."""
    return [patch_custom_game(g) for g in (custom_games() if games is None else games)]
