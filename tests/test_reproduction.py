"""meta_train.reproduction: the results of a set of runs (tiny real runs here): summary.json
entries with the fields the issue names, the joint run as the pretrained row, the oracle read
from its oracle.json, and an evaluation redone only when the run moved on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meta_train.cli import main as meta_train_main
from meta_train.reproduction import against_oracle, curve_groups, label_changes, run_info
from meta_train.reproduction import main as reproduction_main

CONFIG = str(Path(__file__).resolve().parent.parent / "meta_train/configs/halfcheetah-dir.yaml")
TINY = [
    "--set",
    "meta_batch=2",
    "--set",
    "trajectories=2",
    "--set",
    "task.horizon=8",
    "--set",
    "tensorboard=false",
    "--no-progress",
]


def test_summary_table_and_curves_from_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    meta_train_main(
        ["--config", CONFIG, "--out", str(runs / "dir-trpo-s1"), "--iterations", "2", *TINY]
    )
    # the same optimizer with a changed setting: its own group, not a second seed of TRPO
    meta_train_main(
        [
            "--config",
            CONFIG,
            "--out",
            str(runs / "dir-trpo-kl-s1"),
            "--iterations",
            "1",
            "--set",
            "trpo.max_kl=0.05",
            *TINY,
        ]
    )
    meta_train_main(
        [
            "--config",
            CONFIG,
            "--out",
            str(runs / "dir-joint-s1"),
            "--joint",
            "--iterations",
            "1",
            *TINY,
        ]
    )
    oracle = tmp_path / "oracle" / "dir"
    oracle.mkdir(parents=True)
    oracle.joinpath("oracle.json").write_text(
        json.dumps(
            {
                "kind": "halfcheetah-dir",
                "tasks": [{"value": 1.0, "return": 100.0}, {"value": -1.0, "return": 50.0}],
            }
        )
    )
    out = tmp_path / "out"
    args = [
        "--runs",
        str(runs),
        "--oracles",
        str(tmp_path / "oracle"),
        "--out",
        str(out),
        "--eval-tasks",
        "4",
        "--workers",
        "0",
    ]  # in-process: no sampler processes to start
    assert reproduction_main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    # the joint run is a baseline only
    assert [s["name"] for s in summary] == ["dir-trpo-kl-s1", "dir-trpo-s1"]
    assert [s["changes"] for s in summary] == ["trpo.max_kl=0.05", ""]
    infos = [run_info(runs / s["name"]) for s in summary]
    label_changes(infos)
    groups = curve_groups(infos, "halfcheetah-dir")
    assert {k: [i["name"] for i in v] for k, v in groups.items()} == {
        "MAML-TRPO": ["dir-trpo-s1"],
        "MAML-TRPO (trpo.max_kl=0.05)": ["dir-trpo-kl-s1"],
    }
    assert "MAML-TRPO (trpo.max_kl=0.05), seed 1" in (out / "table.md").read_text()
    entry = summary[1]
    assert entry["task"] == "halfcheetah-dir" and entry["meta_optimizer"] == "trpo"
    assert entry["seed"] == 1 and entry["env_steps"] == 2 * 2 * 2 * 8 * 2
    evaluated = json.loads((out / "eval" / "dir-trpo-s1.json").read_text())
    assert entry["return_0"] == evaluated["returns"]["maml"][0]
    assert entry["return_1"] == evaluated["returns"]["maml"][1]
    assert "pretrained" in evaluated["returns"]
    directions = [float(t[3:]) for t in evaluated["task_list"]]
    expected = sum(100.0 if d > 0 else 50.0 for d in directions) / len(directions)
    assert abs(entry["oracle"] - expected) < 1e-9
    assert entry["oracle_fraction"] == entry["return_1"] / entry["oracle"]
    assert (out / "curves.png").stat().st_size > 0
    assert "| oracle |" in (out / "table.md").read_text()
    stamp = (out / "eval" / "dir-trpo-s1.json").stat().st_mtime_ns
    assert reproduction_main(args) == 0  # nothing new: not evaluated again
    assert (out / "eval" / "dir-trpo-s1.json").stat().st_mtime_ns == stamp
    # the joint baseline moved on: the runs it is the baseline of are evaluated again
    meta_train_main(
        ["--config", CONFIG, "--out", str(runs / "dir-joint-s1"), "--joint", "--resume"]
        + ["--iterations", "2", *TINY]
    )
    assert reproduction_main(args) == 0
    redone = json.loads((out / "eval" / "dir-trpo-s1.json").read_text())
    assert redone["pretrained_iterations"] == 2
    assert redone["returns"]["maml"] == evaluated["returns"]["maml"]  # same tasks and seeds


def test_repeated_metrics_rows_are_counted_once(tmp_path: Path) -> None:
    """Two processes that resumed the same run write the same iterations twice; a crash can
    leave a row past the checkpoint. Neither shifts the steps, iterations or wall time."""
    run = tmp_path / "dir-trpo-s1"
    meta_train_main(["--config", CONFIG, "--out", str(run), "--iterations", "3", *TINY])
    clean = run_info(run)
    lines = (run / "metrics.csv").read_text().splitlines()
    extra = lines[-1].split(",")
    extra[0] = "3"  # an iteration the checkpoint does not have
    (run / "metrics.csv").write_text(
        "\n".join([*lines[:3], lines[2], *lines[3:], ",".join(extra)]) + "\n"
    )
    info = run_info(run)
    assert len(info["metrics"]) == 3 == info["iterations"]
    assert [r["iteration"] for r in info["metrics"]] == ["0", "1", "2"]
    assert info["wall_s"] == clean["wall_s"]
    assert info["metrics"][-1]["env_steps"] == str(info["env_steps"])


def _info(name: str, kind: str, opt: str, **changed: float) -> dict[str, Any]:
    config: dict[str, Any] = {"task": {"kind": kind, "action_scale": 10.0}, "meta_batch": 40}
    for key, value in changed.items():
        section, field = key.split("__")
        config.setdefault(section, {})[field] = value
    return {"name": name, "task": kind, "meta_optimizer": opt, "config": config, "joint": False}


def test_a_familys_only_run_still_names_its_changed_setting() -> None:
    """The velocity family's one run used max_kl 0.06: that is its label, though no other
    velocity run differs; the scale every run shares (meta_batch 40, actions ×10) and the
    family itself are not."""
    infos = [
        _info("dir-trpo-s1", "halfcheetah-dir", "trpo"),
        _info("dir-ppo-s1", "halfcheetah-dir", "ppo"),
        _info("dir-trpo-kl06-s1", "halfcheetah-dir", "trpo", trpo__max_kl=0.06),
        _info("vel-trpo-kl06-s1", "halfcheetah-vel", "trpo", trpo__max_kl=0.06),
    ]
    label_changes(infos)
    assert [i["changes"] for i in infos] == ["", "", "trpo.max_kl=0.06", "trpo.max_kl=0.06"]


def test_one_step_against_the_oracle() -> None:
    # before −50, after 100, oracle 150: 2/3 of the oracle, 3/4 of the gap (150 of 200)
    assert against_oracle([-50.0, 100.0], 150.0) == {
        "oracle_fraction": 100.0 / 150.0,
        "gap_closed": 0.75,
    }
    assert against_oracle([-50.0, 100.0], None) == {"oracle_fraction": None, "gap_closed": None}
    assert against_oracle([200.0, 210.0], 150.0)["gap_closed"] is None  # no gap to close
    # velocity: returns below 0, a fraction of a negative oracle means nothing; the gap does
    assert against_oracle([-60.0, -30.0], -17.0) == {"oracle_fraction": None, "gap_closed": 30 / 43}


def test_no_runs_leave_the_written_summary_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--runs` naming a directory without runs (a typo of the runs' folder) must not replace
    the published table with an empty one."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.json").write_text('[{"run": "kept"}]')
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit) as e:
        reproduction_main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--no-eval"])
    assert e.value.code == 2 and "holds no run" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == '[{"run": "kept"}]'
