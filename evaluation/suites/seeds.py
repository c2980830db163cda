"""`--seeds`: a count K (seeds 0..K-1) or a comma-separated list of seeds (`3,4,5`; `7,` is the
single seed 7). One parser for every command that takes it (suite, pipeline)."""

from __future__ import annotations

from collections.abc import Sequence

from sonic_common.errors import UserError


def parse_seeds(text: str | int | Sequence[int]) -> list[int]:
    """The seeds `text` names, in the order given, each once.

    >>> parse_seeds("3"), parse_seeds("3,4,5"), parse_seeds("7,"), parse_seeds([2, 0])
    ([0, 1, 2], [3, 4, 5], [7], [2, 0])
    """
    if isinstance(text, bool):
        raise UserError(f"--seeds {text!r}: give a count (3) or a list of seeds (3,4,5)")
    if isinstance(text, int):
        return _count(text, str(text))
    if not isinstance(text, str):
        return _listed([str(s) for s in text], str(list(text)))
    s = text.strip()
    if "," not in s:
        try:
            return _count(int(s), text)
        except ValueError:
            raise UserError(
                f"--seeds {text!r}: give a count (3) or a list of seeds (3,4,5)"
            ) from None
    return _listed([p for p in s.split(",") if p.strip()], text)


def _count(k: int, text: str) -> list[int]:
    if k < 1:
        raise UserError(f"--seeds {text}: a count must be at least 1 (or list seeds: 0,1,2)")
    return list(range(k))


def _listed(parts: list[str], text: str) -> list[int]:
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"--seeds {text!r}: a list holds whole numbers, e.g. 3,4,5") from None
    if not seeds or any(x < 0 for x in seeds):
        raise UserError(f"--seeds {text!r}: list seeds of 0 or more, e.g. 3,4,5")
    twice = sorted({x for x in seeds if seeds.count(x) > 1})
    if twice:
        raise UserError(f"--seeds {text!r} names seed {twice[0]} twice: list each seed once")
    return seeds


def seeds_text(seeds: Sequence[int]) -> str:
    """`0..2` for a range from 0, else the list: how reports name a suite's seeds."""
    seeds = list(seeds)
    if seeds and seeds == list(range(len(seeds))) and len(seeds) > 2:
        return f"0..{len(seeds) - 1}"
    return ", ".join(str(s) for s in seeds)


def seeds_arg(seeds: Sequence[int]) -> str:
    """The `--seeds` argument that names exactly `seeds` (`7,` for the single seed 7)."""
    text = ",".join(str(x) for x in seeds)
    return text if len(seeds) != 1 else text + ","
