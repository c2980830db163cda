"""`--seeds` as a count or a list, in the suite's and the pipeline's terms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evaluation.suites.seeds import parse_seeds, seeds_arg, seeds_text
from meta_train.configs import CONFIG_DIR
from meta_train.pipeline import Pipeline, load_pipeline_config, more_seeds, suite_command
from sonic_common.errors import UserError

SMOKE = CONFIG_DIR / "pipeline-smoke.yaml"


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("3", [0, 1, 2]),
        (" 1 ", [0]),
        ("3,4,5", [3, 4, 5]),
        ("7,", [7]),
        ("5,0", [5, 0]),
        (2, [0, 1]),
        ([4, 2], [4, 2]),
    ],
)
def test_a_count_or_a_list(text: str | int | list[int], seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds
    assert parse_seeds(seeds_arg(seeds)) == seeds  # what the pipeline passes to the suite


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0", "at least 1"),
        ("-2", "at least 1"),
        ("x", "a count (3) or a list"),
        ("1,a", "whole numbers"),
        ("1,-1", "0 or more"),
        ("2,2", "seed 2 twice"),
        (",", "0 or more"),
    ],
)
def test_bad_seeds_are_one_line_errors(text: str, says: str) -> None:
    with pytest.raises(UserError, match=re.escape(says)):
        parse_seeds(text)


def test_seeds_text() -> None:
    assert seeds_text([0, 1, 2, 3]) == "0..3" and seeds_text([3, 4]) == "3, 4"


def test_pipeline_seeds_reach_the_suite_and_more_extend_it(tmp_path: Path) -> None:
    cfg = load_pipeline_config(SMOKE)
    p = Pipeline(tmp_path, cfg, SMOKE)
    cmd = suite_command(p, "local")
    assert cmd[cmd.index("--seeds") + 1] == "0,"
    p.record("suite", 1.0, seeds=[0])
    assert not more_seeds(p)
    wider = {**cfg, "suite": {**cfg["suite"], "seeds": parse_seeds("0,1,2")}}
    q = Pipeline(tmp_path, wider, SMOKE)  # more seeds: the same pipeline, not another config
    assert more_seeds(q)
    assert suite_command(q, "local")[cmd.index("--seeds") + 1] == "0,1,2"
