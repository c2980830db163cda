"""`python -m roms_setup import|status|levels`: install ROMs and see which level sets are ready."""

from __future__ import annotations

import argparse
import json
import sys

from roms_setup.importer import ImportResult, import_bundled, import_roms
from roms_setup.installed import game_playable
from roms_setup.levels import CONTEST_GAMES, level_set_csv
from roms_setup.patches import custom_games, expected_sha1s
from roms_setup.status import all_status, status_json
from sonic_common.errors import UserError, exit_on_user_error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m roms_setup",
        description="Install ROMs into stable-retro and list the contest's level sets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser(
        "import",
        help="install ROMs found under paths (matched by SHA-1; zips are searched)",
        description="Install every known ROM under the paths, then build the custom levels.",
    )
    imp.add_argument("paths", nargs="*", help="ROM files, folders (walked) or zips")
    imp.add_argument(
        "--bundled", action="store_true", help="install the Atari 2600 ROMs bundled with ale-py"
    )
    imp.add_argument("--json", action="store_true", help="print the result as JSON")

    st = sub.add_parser("status", help="how many levels of each set are playable now")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    lv = sub.add_parser("levels", help="print a level set as CSV (game,state)")
    lv.add_argument("set", help="level set name, e.g. sonic-validation")
    return parser


def _print_import(result: ImportResult, bundled: bool) -> None:
    print(f"scanned {result.scanned} files")
    found = result.found
    if not bundled:
        print("contest games:")
        for game in CONTEST_GAMES:
            if game in result.installed:
                line = f"installed from {result.installed[game]}"
            elif game in result.unchanged:
                line = f"already installed (same ROM in {result.unchanged[game]})"
            elif game_playable(game):
                line = "already installed (not in these paths)"
            else:
                line = f"MISSING: needs the ROM with SHA-1 {' or '.join(expected_sha1s(game))}"
            print(f"  {game:36} {line}")
        print("custom test levels (patched from the games above):")
        outcomes = {p.game: p for p in result.patches}
        for game in custom_games():
            p = outcomes.get(game)
            if p is None:
                line = "not attempted"
            elif p.status == "patched":
                line = f"patched from {p.base}"
            elif p.status == "already":
                line = "already installed"
            elif p.status == "base-missing":
                line = f"MISSING: needs {p.base}"
            else:
                line = f"FAILED: {p.detail}"
            print(f"  {game:42} {line}")
    shown = set(CONTEST_GAMES) | set(custom_games()) if not bundled else set()
    others = sorted(g for g in found if g not in shown)
    new = sum(1 for g in others if g in result.installed)
    print(
        f"other games: {len(others)} found ({new} newly installed, "
        f"{len(others) - new} already installed)"
    )
    if others:
        print("  " + ", ".join(others))


def cmd_import(args: argparse.Namespace) -> int:
    if args.bundled and args.paths:
        raise UserError("give either PATH... or --bundled, not both")
    if not args.bundled and not args.paths:
        raise UserError(
            "nothing to import: give ROM files/folders/zips (python -m roms_setup import PATH...)"
            " or use --bundled for the Atari 2600 ROMs that ship with ale-py"
        )
    result = import_bundled() if args.bundled else import_roms(args.paths)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_import(result, args.bundled)
    failed = [p for p in result.patches if p.status == "failed"]
    if failed:
        raise UserError(
            f"{len(failed)} custom level game(s) could not be patched; "
            f"{failed[0].game}: {failed[0].detail}"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(status_json(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Level sets (playable = ROM installed and state present)")
    table.add_column("set")
    table.add_column("playable", justify="right")
    table.add_column("missing games")
    table.add_column("fix")
    for s in all_status():
        missing = ", ".join(s.missing_games) or "-"
        if s.problems:
            missing += f" (+{len(s.problems)} bad levels: {', '.join(s.problems)})"
        table.add_row(s.name, f"{s.playable}/{s.total}", missing, s.fix or "-")
    Console(width=max(160, Console().width)).print(table)
    return 0


def cmd_levels(args: argparse.Namespace) -> int:
    sys.stdout.write(level_set_csv(args.set))
    return 0


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"import": cmd_import, "status": cmd_status, "levels": cmd_levels}
    return handlers[args.command](args)
