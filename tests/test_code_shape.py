"""The packages' functions fit a screen: none longer than 60 lines (`def` to its last line,
decorators aside), measured on the source as it is, so also after `ruff format`. Complexity (at
most 15 branches) is ruff's C901, in `ruff check`."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sonic_common", "roms_setup", "evaluation", "agent", "meta_train")
MAX_LINES = 60


def long_functions(source: str, name: str, limit: int = MAX_LINES) -> list[str]:
    """`name:line function length` for each function or method longer than `limit` lines."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append(f"{name}:{node.lineno} {node.name} {length}")
    return found


def test_no_function_in_the_packages_is_longer_than_60_lines() -> None:
    files = sorted(f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py"))
    assert len(files) > 50  # the packages were found
    found = [hit for f in files for hit in long_functions(f.read_text(), str(f.relative_to(ROOT)))]
    assert not found, (
        f"functions longer than {MAX_LINES} lines (file:line name length); split "
        "them into named steps:\n" + "\n".join(found)
    )


def test_the_measure_counts_from_def_to_the_last_line() -> None:
    def source(body_lines: int) -> str:
        body = "".join(f"x{i} = {i}\n" for i in range(body_lines))
        method = "async def g(self):\n" + textwrap.indent(body, "    ")
        return (
            "@decorator\ndef f():\n"
            + textwrap.indent(body, "    ")
            + "\n\nclass C:\n"
            + textwrap.indent(method, "    ")
        )

    assert long_functions(source(59), "m.py") == []  # def line + 59 = 60 lines: allowed
    assert long_functions(source(60), "m.py") == ["m.py:2 f 61", "m.py:66 g 61"]
