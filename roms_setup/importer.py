"""Find ROMs under paths (files, folders, zips within zips) and install them into stable-retro.

Files are matched by SHA-1 against stable-retro's integrations, so their names do not matter;
stable-retro's own `get_known_hashes` and `groom_rom` do the matching. Each ROM is written to a
temporary file in the game's directory and renamed into place, so an interrupted import never
leaves half a ROM behind.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import stable_retro.data as retro_data

from roms_setup.patches import PatchOutcome, patch_custom_games
from sonic_common.errors import UserError
from sonic_common.files import write_atomic

MAX_ROM_BYTES = 0x2000000  # 32 MiB, the largest ROM stable-retro supports (see groom_rom)
MAX_ZIP_BYTES = 1 << 30  # zips bigger than this are not opened


Opener = Callable[[], BinaryIO]


def bundled_roms_dir() -> Path:
    """The Atari 2600 ROMs that ship with ale-py."""
    try:
        import ale_py
    except ImportError:
        raise UserError("ale-py is not installed: run `pip install ale-py`") from None
    path = Path(ale_py.__file__).parent / "roms"
    if not path.is_dir():
        raise UserError(f"ale-py has no bundled ROM folder at {path}: reinstall ale-py")
    return path


@dataclass
class ImportResult:
    scanned: int = 0  # files looked at, zip members included
    installed: dict[str, str] = field(default_factory=dict)  # game -> source, newly written
    unchanged: dict[str, str] = field(default_factory=dict)  # game -> source, already there
    patches: list[PatchOutcome] = field(default_factory=list)

    @property
    def found(self) -> dict[str, str]:
        return {**self.unchanged, **self.installed}

    def to_json(self) -> dict[str, object]:
        return {
            "scanned": self.scanned,
            "installed": dict(sorted(self.installed.items())),
            "unchanged": dict(sorted(self.unchanged.items())),
            "patches": [vars(p) for p in self.patches],
        }


def _same_content(path: Path, sha1: str) -> bool:
    if not path.is_file():
        return False
    return hashlib.sha1(path.read_bytes()).hexdigest() == sha1


def install_rom(game_path: Path, ext: str, data: bytes) -> bool:
    """Write `rom<ext>` (and the FBNeo original name, if any); False if it was already there."""
    targets = [game_path / f"rom{ext}"]
    metadata = game_path / "metadata.json"
    if metadata.is_file():
        try:
            original = json.loads(metadata.read_text()).get("original_rom_name")
        except (json.JSONDecodeError, OSError, AttributeError):
            original = None
        if original:
            targets.append(game_path / original)
    # groom_rom hashes only the body of .nes files: compare with what would be written.
    written_sha = hashlib.sha1(data).hexdigest()
    changed = False
    for target in targets:
        if not _same_content(target, written_sha):
            write_atomic(target, data)
            changed = True
    return changed


def _zip_members(data: BinaryIO, label: str) -> Iterator[tuple[str, str, Opener]]:
    """(name for groom_rom, label, opener) for every file in a zip, nested zips expanded."""
    try:
        zf = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            member_label = f"{label}!{info.filename}"
            if info.filename.lower().endswith(".zip") and info.file_size <= MAX_ZIP_BYTES:
                try:
                    raw = zf.read(info)
                except (zipfile.BadZipFile, OSError, ValueError):
                    continue
                if len(raw) <= MAX_ROM_BYTES:  # an arcade set may be matched as the zip itself
                    yield info.filename, member_label, functools.partial(io.BytesIO, raw)
                yield from _zip_members(io.BytesIO(raw), member_label)
            elif info.file_size <= MAX_ROM_BYTES:
                yield info.filename, member_label, functools.partial(_read_member, zf, info)


def _open_file(path: Path) -> BinaryIO:
    return open(path, "rb")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> BinaryIO:
    return io.BytesIO(zf.read(info))


def iter_candidates(paths: list[Path]) -> Iterator[tuple[str, str, Opener]]:
    """Every file under the paths, and every member of every zip among them."""
    for root in paths:
        for path in [root] if root.is_file() else _walk_files(root):
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if path.suffix.lower() == ".zip":
                if size <= MAX_ROM_BYTES:  # an arcade set may be matched as the zip itself
                    yield path.name, str(path), functools.partial(_open_file, path)
                if size <= MAX_ZIP_BYTES:
                    try:
                        f = open(path, "rb")
                    except OSError:
                        continue
                    with f:
                        yield from _zip_members(f, str(path))
            elif size <= MAX_ROM_BYTES:
                yield path.name, str(path), functools.partial(_open_file, path)


def _walk_files(root: Path) -> Iterator[Path]:
    """Files under a folder in a stable order; like os.walk, symlinked folders are not entered."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file():
                yield path


def import_roms(paths: list[str | Path], apply_patches: bool = True) -> ImportResult:
    """Install every known ROM found under `paths`; then build the custom-level ROMs.

    Raises UserError for a path that does not exist and when nothing matched a known ROM.
    """
    if any(not str(p).strip() for p in paths):  # Path("") is "." (an unset $ROMS)
        raise UserError("an empty path was given: name the ROM files or folders to import")
    roots = [Path(p).expanduser() for p in paths]
    if not roots:
        raise UserError(
            "give the ROM files or folders to import (python -m roms_setup import PATH...), "
            "or --bundled for the Atari 2600 ROMs that ship with ale-py"
        )
    for root in roots:
        if not root.exists():
            raise UserError(f"{root} does not exist: give a ROM file, a folder or a zip of ROMs")

    known = retro_data.get_known_hashes()
    result = ImportResult()
    for name, label, opener in iter_candidates(roots):
        result.scanned += 1
        try:
            with opener() as f:
                data, sha1 = retro_data.groom_rom(name, f)
        except (OSError, ValueError, zipfile.BadZipFile):
            continue
        if sha1 not in known:
            continue
        game, ext, integration_dir = known[sha1]
        if install_rom(Path(integration_dir) / game, ext, data):
            result.installed[game] = label
            result.unchanged.pop(game, None)
        elif game not in result.installed:
            result.unchanged[game] = label

    if not result.found:
        where = ", ".join(str(r) for r in roots)
        raise UserError(
            f"no known ROM among {result.scanned} files scanned under {where}: point at the "
            "files, folders or zips holding your ROMs (matched by SHA-1, names do not matter), "
            "or run `python -m roms_setup import --bundled` for the free Atari 2600 games"
        )
    if apply_patches:
        result.patches = patch_custom_games()
    return result


def import_bundled() -> ImportResult:
    """Install the Atari 2600 ROMs that ship with ale-py (no Sonic patches to apply)."""
    return import_roms([bundled_roms_dir()], apply_patches=False)
