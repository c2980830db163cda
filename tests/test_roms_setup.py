"""ROM import (real stable-retro, ale-py's bundled ROMs), the CLI, and `status`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import stable_retro.data as retro_data

from roms_setup.importer import bundled_roms_dir, import_bundled, import_roms, install_rom
from roms_setup.installed import game_playable
from sonic_common.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roms_setup", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]


def breakout_rom() -> Path:
    """ale-py's Breakout ROM (its SHA-1 is the one stable-retro knows)."""
    path = bundled_roms_dir() / "breakout.bin"
    assert path.is_file()
    return path


# --- importer --------------------------------------------------------------------------------


def bundled_atari_games() -> set[str]:
    """Derived here, not counted once: stable-retro's Atari 2600 games whose rom.sha names the
    SHA-1 of a file in ale-py's ROM folder (32 with the pinned versions)."""
    import hashlib

    import stable_retro.data as retro_data

    shas = {
        hashlib.sha1(p.read_bytes()).hexdigest()
        for p in bundled_roms_dir().rglob("*")
        if p.is_file()
    }
    games = set()
    for game in retro_data.list_games(retro_data.Integrations.ALL):
        sha = retro_data.get_file_path(game, "rom.sha", retro_data.Integrations.ALL)
        if game.endswith("-Atari2600-v0") and sha and set(Path(sha).read_text().split()) & shas:
            games.add(game)
    return games


def test_import_bundled_makes_atari_games_playable():
    result = import_bundled()
    atari = {g for g in result.found if g.endswith("-Atari2600-v0")}
    assert atari == bundled_atari_games() and len(atari) > 20
    assert "Breakout-Atari2600-v0" in result.found
    assert result.scanned >= 100  # every file of ale-py's roms folder was looked at
    assert game_playable("Breakout-Atari2600-v0")
    assert game_playable("Pong-Atari2600-v0")
    assert result.patches == []  # --bundled has no Sonic base ROM to patch


def test_import_bundled_installs_a_missing_atari_rom():
    """Take one game's ROM away from stable-retro: --bundled must put it back, byte for byte."""
    game = "Asterix-Atari2600-v0"  # in atari-train; no other test plays it
    rom = Path(retro_data.get_romfile_path(game, retro_data.Integrations.ALL))
    original = rom.read_bytes()
    rom.unlink()
    try:
        assert not game_playable(game)
        result = import_bundled()
        assert game in result.installed  # newly written, not "already there"
        assert game_playable(game)
        assert rom.read_bytes() == original
    finally:  # put back also a wrong one (and `roms_setup import --bundled` mends a kill here)
        if not rom.is_file() or rom.read_bytes() != original:
            rom.write_bytes(original)


def test_import_nested_zip_with_renamed_rom(tmp_path: Path):
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.write(breakout_rom(), "some/dir/whatever-name.rom")
        zf.writestr("readme.txt", "not a rom")
    outer = tmp_path / "collection.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "nested/inner.zip")
    inner.unlink()
    result = import_roms([tmp_path], apply_patches=False)
    assert set(result.found) == {"Breakout-Atari2600-v0"}
    assert "inner.zip!some/dir/whatever-name.rom" in result.found["Breakout-Atari2600-v0"]
    assert result.scanned == 4  # outer zip, inner zip, the rom, the readme


def test_import_nonexistent_path_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        import_roms([tmp_path / "nope"])
    with pytest.raises(UserError, match="empty path"):  # not the current directory, walked
        import_roms(["", str(tmp_path)])


def test_import_junk_folder_says_how_many_files_were_scanned(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    for i in range(3):
        (tmp_path / "sub" / f"junk{i}.md").write_bytes(os.urandom(1000 + i))
    with zipfile.ZipFile(tmp_path / "junk.zip", "w") as zf:
        zf.writestr("a.bin", os.urandom(500))
    with pytest.raises(UserError, match=r"no known ROM among 5 files scanned") as e:
        import_roms([tmp_path])
    assert "--bundled" in str(e.value)


def test_install_rom_is_atomic_and_idempotent(tmp_path: Path):
    data = os.urandom(4096)
    assert install_rom(tmp_path, ".a26", data) is True
    assert (tmp_path / "rom.a26").read_bytes() == data
    assert install_rom(tmp_path, ".a26", data) is False  # same bytes: nothing rewritten
    assert os.listdir(tmp_path) == ["rom.a26"]  # no temp file left


# --- a whole Sonic-like import, with a made-up game in a custom integration folder ------------


@pytest.fixture
def fake_integration(tmp_path: Path) -> Iterator[Path]:
    """A custom stable-retro integration: a base game and a custom game patched from it."""
    root = tmp_path / "integrations"
    base_dir = root / "FakeHedgehog-Genesis-v0"
    custom_dir = root / "FakeHedgehogCustomTest-Genesis"
    base_dir.mkdir(parents=True)
    custom_dir.mkdir()
    base = os.urandom(128 * 1024)
    target = bytearray(base)
    target[1000:1100] = os.urandom(100)
    rom = tmp_path / "my roms" / "totally-not-sonic.bin"
    rom.parent.mkdir()
    rom.write_bytes(base)
    (tmp_path / "target.bin").write_bytes(bytes(target))
    (base_dir / "rom.sha").write_text(hashlib.sha1(base).hexdigest() + "\n")
    (custom_dir / "rom.sha").write_text(hashlib.sha1(bytes(target)).hexdigest() + "\n")
    if shutil.which("xdelta3"):
        subprocess.run(
            [
                "xdelta3",
                "-e",
                "-s",
                str(rom),
                str(tmp_path / "target.bin"),
                str(custom_dir / "rom.delta"),
            ],
            check=True,
        )
    retro_data.Integrations.add_custom_path(str(root))
    try:
        yield tmp_path
    finally:
        retro_data.Integrations.CUSTOM_PATHS.remove(str(root))


@pytest.mark.skipif(shutil.which("xdelta3") is None, reason="needs xdelta3")
def test_import_installs_base_rom_and_patches_custom_game(fake_integration: Path):
    result = import_roms([fake_integration / "my roms"])
    assert set(result.installed) == {"FakeHedgehog-Genesis-v0"}
    assert game_playable("FakeHedgehog-Genesis-v0")
    outcome = {p.game: p for p in result.patches}["FakeHedgehogCustomTest-Genesis"]
    assert (outcome.status, outcome.base) == ("patched", "FakeHedgehog-Genesis-v0")
    patched = fake_integration / "integrations" / "FakeHedgehogCustomTest-Genesis" / "rom.md"
    assert patched.read_bytes() == (fake_integration / "target.bin").read_bytes()
    assert game_playable("FakeHedgehogCustomTest-Genesis")
    # A second import changes nothing.
    again = import_roms([fake_integration / "my roms"])
    assert set(again.unchanged) == {"FakeHedgehog-Genesis-v0"} and not again.installed
    outcome = {p.game: p for p in again.patches}["FakeHedgehogCustomTest-Genesis"]
    assert outcome.status == "already"


# --- CLI -------------------------------------------------------------------------------------


def test_cli_import_bundled_reports_atari_games():
    proc = run_cli("import", "--bundled")
    assert proc.returncode == 0, proc.stderr
    assert f"other games: {len(bundled_atari_games())} found" in proc.stdout
    assert "Breakout-Atari2600-v0" in proc.stdout


def test_cli_import_reports_contest_games(tmp_path: Path):
    shutil.copy(breakout_rom(), tmp_path / "x.bin")
    proc = run_cli("import", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "SonicTheHedgehog-Genesis-v0" in proc.stdout
    if not game_playable("SonicTheHedgehog-Genesis-v0"):
        assert "MISSING: needs the ROM with SHA-1 69e102855d4389c3fd1a8f3dc7d193f8eee5fe5b" in (
            proc.stdout
        )
    assert "SonicTheHedgehogCustomKevin-Genesis" in proc.stdout
    assert "other games: 1 found" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("import", "/definitely/not/here"), ("does not exist",)),
        (("import",), ("--bundled", "PATH")),
        (("import", "--bundled", "somewhere"), ("either PATH... or --bundled",)),
        (("levels", "no-such-set"), ("sonic-train", "atari-heldout")),
    ],
)
def test_cli_errors_are_one_line(args: tuple[str, ...], needles: tuple[str, ...]):
    assert_one_line_error(run_cli(*args), *needles)


def test_cli_import_junk_is_one_line_error(tmp_path: Path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.bin").write_bytes(os.urandom(64))
    assert_one_line_error(run_cli("import", str(tmp_path)), "2 files scanned", "--bundled")


def test_cli_levels_prints_csv_exactly():
    proc = run_cli("levels", "smoke")
    assert proc.returncode == 0
    assert proc.stdout == (REPO / "roms_setup" / "data" / "smoke.csv").read_text()
    assert proc.stdout.splitlines()[0] == "game,state"


def test_cli_status_json():
    import_bundled()
    proc = run_cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    sets = json.loads(proc.stdout)["sets"]
    assert set(sets) == {
        "smoke",
        "atari-train",
        "atari-heldout",
        "sonic-train",
        "sonic-validation",
        "sonic-custom-test",
        "sonic-leaderboard",
    }
    assert (sets["smoke"]["playable"], sets["smoke"]["total"]) == (1, 1)
    assert (sets["atari-train"]["playable"], sets["atari-train"]["total"]) == (16, 16)
    assert sets["atari-heldout"]["fix"] is None
    assert sets["sonic-train"]["total"] == 47
    assert sets["sonic-validation"]["total"] == 11
    if not game_playable("SonicTheHedgehog-Genesis-v0"):
        train = sets["sonic-train"]
        assert train["playable"] == 0
        assert train["missing_games"] == [
            "SonicAndKnuckles3-Genesis-v0",
            "SonicTheHedgehog-Genesis-v0",
            "SonicTheHedgehog2-Genesis-v0",
        ]
        assert train["fix"] == "python -m roms_setup import PATH_TO_YOUR_ROMS"
        assert "xdelta3" in sets["sonic-custom-test"]["fix"]


def test_cli_status_table():
    proc = run_cli("status")
    assert proc.returncode == 0, proc.stderr
    assert "sonic-train" in proc.stdout and "/47" in proc.stdout
    assert "1/1" in proc.stdout  # smoke
