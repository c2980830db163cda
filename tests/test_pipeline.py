"""The main job (`python -m meta_train.pipeline`): the stage commands it makes, its resume rules,
and the whole pipeline at smoke scale end to end in Docker (meta-training on two Atari levels,
joint PPO and joint Rainbow, the agent images, the suite with Docker runs of the MAML agent and
the fine-tuned joint Rainbow, the report)."""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from agent.checkpoint import load_checkpoint
from meta_train.pipeline import (
    CONFIG_DIR,
    IMAGE_TAGS,
    Pipeline,
    joint_command,
    load_pipeline_config,
    maml_command,
    parse_args,
    pipeline_inputs,
    stage_joint,
    suite_command,
)
from sonic_common.errors import UserError
from tests.support import docker_client_or_skip

SMOKE = CONFIG_DIR / "pipeline-smoke.yaml"


def _agent_args(cmd: list[str]) -> dict[str, list[str]]:
    out = {}
    for i, item in enumerate(cmd):
        if item == "--agent-args":
            name, _, rest = cmd[i + 1].partition("=")
            out[name] = shlex.split(rest)
    return out


def test_suite_command_local_passes_checkpoints_docker_uses_baked_images(tmp_path: Path) -> None:
    cfg = load_pipeline_config(SMOKE)
    p = Pipeline(tmp_path, cfg, SMOKE)
    local = suite_command(p, "local")
    assert (
        local[local.index("--agents") + 1]
        == "maml,reptile=maml,joint=ppo2,joint_rainbow=rainbow,ppo2,jerk,random"
    )
    args = _agent_args(local)
    assert args["maml"][:2] == ["--checkpoint", str((tmp_path / "maml/checkpoint.pt").resolve())]
    assert args["joint"][:2] == ["--checkpoint", str((tmp_path / "joint/checkpoint.pt").resolve())]
    # joint Rainbow is fine-tuned with the suite's Rainbow settings, not PPO's
    assert args["joint_rainbow"] == [
        "--checkpoint",
        str((tmp_path / "joint_rainbow/checkpoint.pt").resolve()),
        *("--set", "learning_starts=200", "--set", "train_interval=4"),
        *("--set", "target_interval=64", "--set", "capacity=1000"),
    ]
    assert args["reptile"][:2] == [
        "--checkpoint",
        str((tmp_path / "reptile/checkpoint.pt").resolve()),
    ]
    # the three learners get the same PPO settings, so only their initialization differs
    assert (
        args["maml"][2:]
        == args["reptile"][2:]
        == args["joint"][2:]
        == args["ppo2"]
        == ["--set", "nsteps=64", "--set", "nminibatches=2", "--set", "noptepochs=1"]
    )
    assert "--image" not in local
    docker = suite_command(p, "docker")
    for name in ("maml", "reptile", "joint", "joint_rainbow"):
        assert f"{name}={IMAGE_TAGS[name]}" in docker
    assert "--checkpoint" not in " ".join(docker) and "--init" not in " ".join(docker)
    assert _agent_args(docker)["joint_rainbow"] == args["joint_rainbow"][2:]


def test_joint_rainbow_is_a_stage_of_its_own_only_when_listed(tmp_path: Path) -> None:
    """Its command trains Rainbow into OUT/joint_rainbow with its own section's settings; a
    config that does not list it trains nothing and keeps the digest it had before."""
    import agent.train

    p = Pipeline(tmp_path, load_pipeline_config(SMOKE), SMOKE)
    p.device = ["--device", "cpu"]
    args = agent.train.parse_args(joint_command(p, "joint_rainbow")[3:])
    assert (args.algo, args.timesteps, args.workers) == ("rainbow", 256, 2)
    assert args.out == str(tmp_path / "joint_rainbow") and args.resume
    assert args.overrides[:2] == ["learning_starts=128", "train_interval=2"]
    assert args.overrides[-1] == "device=cpu"
    assert agent.train.parse_args(joint_command(p)[3:]).algo == "ppo"

    atari = CONFIG_DIR / "pipeline-atari.yaml"
    cfg = load_pipeline_config(atari)
    assert "joint_rainbow" not in cfg["suite"]["agents"]
    assert stage_joint(Pipeline(tmp_path / "a", cfg, atari), "joint_rainbow") == {"skipped": True}
    assert not (tmp_path / "a" / "joint_rainbow").exists()
    # Rainbow's settings are an input only when joint Rainbow is trained
    from agent.configs import PPO2, RAINBOW, maml_defaults
    from meta_train.pipeline import digest_of

    before = {"ppo2": PPO2.as_dict(), "maml": maml_defaults()}
    assert pipeline_inputs(cfg)["agent settings"] == digest_of(before)
    agents = [*cfg["suite"]["agents"], "joint_rainbow"]
    listed = {**cfg, "suite": {**cfg["suite"], "agents": agents}}
    listed["joint_rainbow"] = {"timesteps": 100, "envs": 1}
    with_rainbow = digest_of({**before, "rainbow": RAINBOW.as_dict()})
    assert pipeline_inputs(listed)["agent settings"] == with_rainbow


def test_device_reaches_the_training_stages_and_their_parsers(tmp_path: Path) -> None:
    import agent.train
    import meta_train.cli

    p = Pipeline(tmp_path, load_pipeline_config(SMOKE), SMOKE)
    assert "--device" not in maml_command(p, "maml") + joint_command(p)  # configs decide
    assert parse_args(["--smoke", "--device", "cpu"]).device == "cpu"
    with pytest.raises(SystemExit):
        parse_args(["--smoke", "--device", "tpu"])
    p.device = ["--device", "cpu"]
    maml, reptile, joint = maml_command(p, "maml"), maml_command(p, "reptile"), joint_command(p)
    # the commands as the stages run them (after `python -m MODULE`) parse to device=cpu
    for cmd in (maml, reptile):
        assert "device=cpu" in meta_train.cli.parse_train(cmd[3:]).overrides
    assert "device=cpu" in agent.train.parse_args(joint[3:]).overrides


def test_another_config_in_the_same_out_is_refused(tmp_path: Path) -> None:
    cfg = load_pipeline_config(SMOKE)
    Pipeline(tmp_path, cfg, SMOKE).save()
    changed = {**cfg, "suite": {**cfg["suite"], "budget": 999}}
    with pytest.raises(UserError, match="made from another pipeline config"):
        Pipeline(tmp_path, changed, SMOKE)
    # the MAML config it names, changed under the same name (as atari-train.yaml's backtracking)
    maml_yaml = tmp_path / "maml.yaml"
    maml_yaml.write_text((CONFIG_DIR / "atari-train.yaml").read_text())
    levels = tmp_path / "train.csv"
    levels.write_text("game,state\nQbert-Atari2600-v0,Start\n")
    mine = {**cfg, "train_levels": str(levels), "maml": {**cfg["maml"], "config": str(maml_yaml)}}
    (tmp_path / "m").mkdir()
    Pipeline(tmp_path / "m", mine, SMOKE).save()
    maml_yaml.write_text(maml_yaml.read_text() + "# a comment changes nothing it computes\n")
    Pipeline(tmp_path / "m", mine, SMOKE)  # the same inputs: resumed
    maml_yaml.write_text(maml_yaml.read_text().replace("backtracking: auto", "backtracking: true"))
    with pytest.raises(UserError, match="made from another MAML config"):
        Pipeline(tmp_path / "m", mine, SMOKE)
    maml_yaml.write_text((CONFIG_DIR / "atari-train.yaml").read_text())
    Pipeline(tmp_path / "m", mine, SMOKE)
    levels.write_text("game,state\nHero-Atari2600-v0,Start\n")  # the level set's file changed
    with pytest.raises(UserError, match="made from another level sets"):
        Pipeline(tmp_path / "m", mine, SMOKE)
    state = tmp_path / "m" / "pipeline.json"  # as an earlier version wrote it: no inputs
    state.write_text(json.dumps({"config": str(SMOKE), "digest": "0123", "stages": {}}))
    with pytest.raises(UserError, match="earlier version of this pipeline"):
        Pipeline(tmp_path / "m", mine, SMOKE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("agents: [maml,", "agents: [nosuch, maml,"))
    with pytest.raises(UserError, match="unknown agent"):
        load_pipeline_config(bad)
    bad.write_text(SMOKE.read_text().replace("  budget: 300\n", ""))
    with pytest.raises(UserError, match="suite has no budget"):
        load_pipeline_config(bad)


def test_a_config_that_would_fail_a_later_stage_is_refused_at_the_start(tmp_path: Path) -> None:
    """Hours of meta-training must not end in a bad budget or a mistyped agent setting."""
    text = SMOKE.read_text()
    bad = tmp_path / "bad.yaml"
    for old, new, said in (
        ("  budget: 300\n", "  budget: -5\n", "suite.budget is -5"),
        ("  timesteps: 256\n", "  timesteps: lots\n", "joint.timesteps is 'lots'"),
        ("  workers: 2\n  ppo_set", "  workers: 0\n  ppo_set", "suite.workers is 0"),
        ("  wallclock: 600\n", "  wallclock: -1\n", "suite.wallclock is -1"),
        ("set: [nsteps=64, nminibatches=2, noptepochs=1, save", "set: [nstepz=64, save", "nstepz"),
        ("ppo_set: [nsteps=64,", "ppo_set: [nsteps=abc,", "nsteps takes a whole number"),
        ("test_levels:", "extra_typo_key: 1\ntest_levels:", "unknown key(s) extra_typo_key"),
        ("ppo_set: [nsteps=64,", "ppo_set: [workers=2, nsteps=64,", "for maml.yaml: unknown"),
        ("  wallclock: 600\n", "  wallclock: .inf\n", "suite.wallclock is inf"),
        ("  maml_set: []\n", "  maml_set: adapt_steps=2\n", "give a list"),
        ("set: [learning_starts=128,", "set: [nsteps=128,", "joint_rainbow.set for rainbow.yaml"),
        ("  envs: 2\n  set: [learning", "  envs: 0\n  set: [learning", "joint_rainbow.envs is 0"),
        ("  envs: 2\n  set: [learning", "  set: [learning", "joint_rainbow has no envs"),
        ("joint_rainbow:  ", "unused:\n  a:  ", "lists joint_rainbow but there is no joint_"),
        ("rainbow_set: [learning_starts=200", "rainbow_set: [nsteps=1", "rainbow_set for rainbow"),
        ("agents: [maml,", "agents: [ppo2, maml,", "suite.agents names ppo2 twice"),
        (
            "rainbow_set: [learning_starts=200",
            "rainbow_set: [discretizer=sonic8, learning_starts=200",
            "joint_rainbow.set trains joint_rainbow with discretizer=auto but "
            "suite.rainbow_set fine-tunes it with discretizer=sonic8",
        ),
        (
            "  set: [nsteps=64, nminibatches=2, noptepochs=1, save",
            "  set: [discretizer=atari, nsteps=64, nminibatches=2, noptepochs=1, save",
            "joint.set trains joint with discretizer=atari but suite.ppo_set",
        ),
    ):
        assert old in text, old
        bad.write_text(text.replace(old, new, 1))
        with pytest.raises(UserError, match=re.escape(said)):
            load_pipeline_config(bad)
    assert load_pipeline_config(SMOKE)["suite"]["budget"] == 300
    # joint_rainbow unlisted: its section may be left empty (or out)
    unlisted = text.replace("joint, joint_rainbow, ppo2", "joint, ppo2")
    section = unlisted[unlisted.index("joint_rainbow:  ") : unlisted.index("suite:")]
    bad.write_text(unlisted.replace(section, "joint_rainbow:\n\n"))
    assert "joint_rainbow" not in load_pipeline_config(bad)


def test_rainbow_settings_reach_the_rainbow_agents_listed_and_no_other(tmp_path: Path) -> None:
    cfg = load_pipeline_config(SMOKE)  # rainbow_set given, rainbow not listed
    args = _agent_args(suite_command(Pipeline(tmp_path, cfg, SMOKE), "docker"))
    assert "rainbow" not in args and args["joint_rainbow"][:2] == ["--set", "learning_starts=200"]
    cfg["suite"]["agents"] = [*cfg["suite"]["agents"], "rainbow"]
    args = _agent_args(suite_command(Pipeline(tmp_path / "r", cfg, SMOKE), "docker"))
    assert args["rainbow"] == args["joint_rainbow"]


def test_joint_rainbow_image_and_report_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its checkpoint is baked into its own image over the rainbow one; the report shows its
    curve, and a joint stage that logged no row yet says so. (Docker and the build stand in
    here for speed; test_smoke_pipeline_end_to_end_in_docker builds and runs the image.)"""
    import meta_train.pipeline as pipeline

    p = Pipeline(tmp_path, load_pipeline_config(SMOKE), SMOKE)
    built: list[list[str]] = []
    monkeypatch.setattr(pipeline, "docker_available", lambda: (True, "daemon up"))
    monkeypatch.setattr(pipeline, "run_command", lambda cmd, what: built.append(cmd))
    pipeline.stage_images(p, "docker")
    (cmd,) = [c for c in built if "--checkpoint" in c and "rainbow" in c]
    assert cmd[cmd.index("--agent") + 1] == "rainbow"
    assert cmd[cmd.index("--checkpoint") + 1] == str(tmp_path / "joint_rainbow" / "checkpoint.pt")
    assert cmd[cmd.index("--tag") + 1] == IMAGE_TAGS["joint_rainbow"]

    (tmp_path / "joint").mkdir()
    (tmp_path / "joint" / "learning.csv").write_text("timesteps,episodes,mean_return\n")
    (tmp_path / "joint_rainbow").mkdir()
    (tmp_path / "joint_rainbow" / "learning.csv").write_text(
        "timesteps,episodes,mean_return\n64,1,2.0\n128,3,4.5\n"
    )
    report = pipeline.stage_report(p, sonic=False).read_text()
    assert "MAML, joint PPO and joint Rainbow on" in report
    assert "No rows in joint/learning.csv yet (one every log_interval updates)" in report
    rainbow = report[report.index("## Joint Rainbow") :]
    assert "128 timesteps and 3 episodes" in rainbow and "all levels together): 4.5" in rainbow
    assert "![joint Rainbow](joint_rainbow.png)" in rainbow
    assert (tmp_path / "joint_rainbow.png").stat().st_size > 0


def test_fresh_removes_only_a_pipeline_s_directory(tmp_path: Path) -> None:
    from meta_train.pipeline import open_pipeline

    others = tmp_path / "results"
    (others / "suite").mkdir(parents=True)
    (others / "suite" / "report.md").write_text("someone's")
    with pytest.raises(UserError, match="not a pipeline's directory"):
        open_pipeline(parse_args(["--smoke", "--fresh", "--out", str(others)]))
    assert (others / "suite" / "report.md").read_text() == "someone's"
    mine = tmp_path / "pipe"
    open_pipeline(parse_args(["--smoke", "--out", str(mine)]))
    (mine / "maml").mkdir()
    bad = tmp_path / "bad.yaml"  # a MAML setting it lacks: found before anything is removed
    bad.write_text(SMOKE.read_text().replace("set: [iterations=1,", "set: [iteratons=1,"))
    with pytest.raises(UserError, match="iteratons"):
        open_pipeline(parse_args(["--config", str(bad), "--fresh", "--out", str(mine)]))
    assert (mine / "maml").is_dir()
    open_pipeline(parse_args(["--smoke", "--fresh", "--out", str(mine)]))
    assert (mine / "pipeline.json").is_file() and not (mine / "maml").exists()


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_smoke_pipeline_end_to_end_in_docker(tmp_path: Path, atari_roms: None) -> None:
    docker_client_or_skip(timeout=600)
    out = tmp_path / "pipe"
    cmd = [
        sys.executable,
        "-m",
        "meta_train.pipeline",
        "--smoke",
        "--runtime",
        "docker",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads((out / "pipeline.json").read_text())
    assert [s for s in state["stages"] if state["stages"][s]["status"] == "done"] == [
        "roms",
        "maml",
        "reptile",
        "joint",
        "joint_rainbow",
        "images",
        "suite",
    ]
    assert state["stages"]["images"]["runtime"] == "docker"
    for stage in ("maml", "reptile"):
        with open(out / stage / "metrics.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == 1  # one meta-iteration each
    assert load_checkpoint(out / "reptile" / "checkpoint.pt")["meta_optimizer"] == "reptile"
    joint_rainbow = load_checkpoint(out / "joint_rainbow" / "checkpoint.pt")
    assert joint_rainbow["policy_spec"]["kind"] == "rainbow" and joint_rainbow["updates"] > 0
    runs = out / "suite" / "runs"
    for agent in ("maml", "reptile", "joint", "joint_rainbow", "ppo2", "jerk", "random"):
        (res,) = runs.glob(f"{agent}/*/seed0/results.json")
        data = json.loads(res.read_text())
        assert data["status"] == "budget" and data["timesteps"] == 300, (agent, data)
        assert data["runtime"] == "docker"
    # the MAML agent adapted in its container: one row per inner step, parameters moved
    (adapt,) = runs.glob("maml/*/seed0/agent/adaptation.csv")
    with open(adapt, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 1 and all(float(r["steps"]) > 0 for r in rows)
    # joint Rainbow's network, baked into its image, was fine-tuned there with a fresh replay
    (tuned,) = runs.glob("joint_rainbow/*/seed0/agent/checkpoint.pt")
    assert load_checkpoint(tuned)["init"] == "/opt/agent/checkpoint.pt"
    assert "fine-tuning" in next(runs.glob("joint_rainbow/*/seed0/agent.log")).read_text()
    report = (out / "report.md").read_text()
    for agent in ("maml", "reptile", "joint", "joint_rainbow", "ppo2", "jerk", "random"):
        assert f"| {agent} |" in report
    assert "in Docker containers" in report
    assert "## Joint Rainbow" in report and (out / "joint_rainbow.png").is_file()
    # rerunning resumes: every stage is skipped
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("done before, skipped") == 7


def test_sonic_without_roms_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "meta_train.pipeline",
            "--sonic",
            "--runtime",
            "local",
            "--out",
            str(tmp_path / "p"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "roms_setup import" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p" / "maml").exists()  # stopped before meta-training
