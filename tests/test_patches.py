"""The xdelta3 patch mechanics on synthetic files, and the custom-game bookkeeping."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from roms_setup.installed import game_known, game_playable
from roms_setup.patches import apply_delta, base_game, custom_games, patch_custom_games
from sonic_common.errors import UserError

pytestmark = pytest.mark.skipif(shutil.which("xdelta3") is None, reason="needs xdelta3")


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@pytest.fixture
def delta_files(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A random 'ROM', a target with a few edits, and the xdelta3 delta between them."""
    rng = random.Random(1234)
    source = bytes(rng.getrandbits(8) for _ in range(256 * 1024))
    target = bytearray(source)
    for offset in (10, 5000, 100_000, 200_000):
        target[offset : offset + 64] = bytes(rng.getrandbits(8) for _ in range(64))
    target += b"extra level data"
    src, tgt, delta = tmp_path / "src.bin", tmp_path / "target.bin", tmp_path / "rom.delta"
    src.write_bytes(source)
    tgt.write_bytes(bytes(target))
    subprocess.run(["xdelta3", "-e", "-s", str(src), str(tgt), str(delta)], check=True)
    tgt.unlink()
    assert delta.stat().st_size < len(target) // 10  # a real delta, not a copy
    return src, delta, bytes(target)


def test_apply_delta_rebuilds_target(delta_files: tuple[Path, Path, bytes], tmp_path: Path):
    src, delta, target = delta_files
    out = tmp_path / "game" / "rom.md"
    out.parent.mkdir()
    got = apply_delta(src, delta, out, _sha1(target))
    assert got == _sha1(target)
    assert out.read_bytes() == target
    assert os.listdir(out.parent) == ["rom.md"]  # no temp file left behind


def test_apply_delta_refuses_wrong_sha(delta_files: tuple[Path, Path, bytes], tmp_path: Path):
    src, delta, _ = delta_files
    out = tmp_path / "rom.md"
    with pytest.raises(UserError, match="wrong revision"):
        apply_delta(src, delta, out, "0" * 40)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["rom.delta", "src.bin"]


def test_apply_delta_keeps_old_output_on_failure(delta_files, tmp_path: Path):
    src, delta, _ = delta_files
    out = tmp_path / "rom.md"
    out.write_bytes(b"previous rom")
    with pytest.raises(UserError):
        apply_delta(src, delta, out, "0" * 40)
    assert out.read_bytes() == b"previous rom"


def test_apply_delta_wrong_source_is_a_user_error(delta_files, tmp_path: Path):
    _, delta, target = delta_files
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(256 * 1024))
    with pytest.raises(UserError, match="revision"):
        apply_delta(other, delta, tmp_path / "rom.md", _sha1(target))
    assert not (tmp_path / "rom.md").exists()


def test_missing_xdelta3_names_the_package(delta_files, tmp_path: Path, monkeypatch):
    src, delta, target = delta_files
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(UserError, match="apt-get install xdelta3"):
        apply_delta(src, delta, tmp_path / "rom.md", _sha1(target))


def test_custom_games_are_the_contest_six():
    assert sorted(custom_games()) == sorted(
        [
            "SonicTheHedgehogCustomKevin-Genesis",
            "SonicTheHedgehogCustomCathy-Genesis",
            "SonicTheHedgehog2CustomKevin-Genesis",
            "SonicAndKnuckles3CustomKevin-Genesis",
            "SonicTheHedgehogCustomLeaderboard-Genesis",
            "SonicTheHedgehog2CustomLeaderboard-Genesis",
        ]
    )


@pytest.mark.parametrize(
    ("custom", "base"),
    [
        ("SonicTheHedgehogCustomKevin-Genesis", "SonicTheHedgehog-Genesis-v0"),
        ("SonicTheHedgehogCustomCathy-Genesis", "SonicTheHedgehog-Genesis-v0"),
        ("SonicTheHedgehog2CustomKevin-Genesis", "SonicTheHedgehog2-Genesis-v0"),
        ("SonicTheHedgehog2CustomLeaderboard-Genesis", "SonicTheHedgehog2-Genesis-v0"),
        ("SonicAndKnuckles3CustomKevin-Genesis", "SonicAndKnuckles3-Genesis-v0"),
    ],
)
def test_base_game(custom: str, base: str):
    assert base_game(custom) == base
    assert game_known(base)


@pytest.mark.skipif(
    any(game_playable(b) for b in ("SonicTheHedgehog-Genesis-v0", "SonicTheHedgehog2-Genesis-v0")),
    reason="a Sonic ROM is installed here",
)
def test_without_sonic_roms_every_custom_game_waits_for_its_base():
    outcomes = patch_custom_games()
    assert len(outcomes) == 6
    assert {o.status for o in outcomes} == {"base-missing"}
    assert {o.base for o in outcomes} == {
        "SonicTheHedgehog-Genesis-v0",
        "SonicTheHedgehog2-Genesis-v0",
        "SonicAndKnuckles3-Genesis-v0",
    }
