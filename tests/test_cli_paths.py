"""The documented commands, run as a newcomer runs them: from a directory of their own, with
relative paths, through `sonic-maml` or `python -m`, and from a wheel installed in a venv."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.checkpoint import load_checkpoint
from evaluation.docker.packaging import SOURCE_PACKAGES, declared_requirement

ROOT = Path(__file__).resolve().parents[1]
LEVEL = "Airstriker-Genesis-v0:Level1"
SONIC_MAML = [sys.executable, "-m", "meta_train.console"]  # what the console script runs
TINY_PPO = [
    "--set",
    "nsteps=32",
    "--set",
    "nminibatches=2",
    "--set",
    "noptepochs=1",
    "--set",
    "tensorboard=false",
]
TINY_MAML = [
    "--set",
    "task.horizon=5",
    "--set",
    "meta_batch=2",
    "--set",
    "trajectories=2",
    "--set",
    "tensorboard=false",
    "--no-progress",
]


def in_dir(
    cwd: Path, *cmd: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def results(d: Path) -> dict:
    return json.loads((d / "results.json").read_text())


def test_readme_run_from_another_directory_writes_there(tmp_path: Path) -> None:
    proc = in_dir(
        tmp_path,
        sys.executable,
        "-m",
        "evaluation",
        "run",
        "--agent",
        "jerk",
        "--level",
        LEVEL,
        "--budget",
        "300",
        "--results-dir",
        "results/jerk",
        "--seed",
        "0",
        "--record",
    )
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path / "results" / "jerk")
    assert res["status"] == "budget" and res["timesteps"] == 300
    assert "status=budget" in proc.stdout and "results=results/jerk" in proc.stdout
    assert res["agent_log"] == "results/jerk/agent.log"  # the path the user gave
    video = in_dir(
        tmp_path,
        *SONIC_MAML,
        "video",
        "--run",
        "results/jerk",
        "--video",
        "gifs/best.gif",
        "--max-frames",
        "20",
    )
    assert video.returncode == 0, video.stderr
    assert (tmp_path / "gifs/best.gif").read_bytes()[:3] == b"GIF"


@pytest.mark.slow
def test_train_then_fine_tune_with_relative_checkpoint(tmp_path: Path) -> None:
    """agent.train --out and ppo2's --checkpoint after `--`, both relative to the user's
    directory; a wrong relative checkpoint ends the run agent_crashed with exit code 1, the
    status and the agent's last log lines on stderr."""
    proc = in_dir(
        tmp_path,
        *SONIC_MAML,
        "train",
        "--algo",
        "ppo",
        "--levels",
        LEVEL,
        "--timesteps",
        "64",
        "--workers",
        "1",
        "--out",
        "runs/joint",
        "--device",
        "cpu",
        *TINY_PPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(tmp_path / "runs/joint/checkpoint.pt")["timesteps"] == 64
    run = [*SONIC_MAML, "run", "--agent", "ppo2", "--level", LEVEL, "--budget", "100"]
    proc = in_dir(
        tmp_path,
        *run,
        "--out",
        "results/ft",
        "--",
        "--checkpoint",
        "runs/joint/checkpoint.pt",
        *TINY_PPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert results(tmp_path / "results/ft")["status"] == "budget"
    assert "fine-tun" in (tmp_path / "results/ft/agent.log").read_text().lower()

    proc = in_dir(tmp_path, *run, "--out", "results/bad", "--", "--init", "runs/nothere.pt")
    assert proc.returncode == 1, proc.stderr
    assert results(tmp_path / "results/bad")["status"] == "agent_crashed"
    assert (
        "status=agent_crashed" in proc.stderr
        and "runs/nothere.pt does not exist" in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_suite_relative_out_then_resume_flag(tmp_path: Path) -> None:
    suite = [*SONIC_MAML, "suite", "--out", "results/s"]
    proc = in_dir(
        tmp_path, *suite, "--agents", "random", "--levels", LEVEL, "--budget", "200", "--no-report"
    )
    assert proc.returncode == 0, proc.stderr
    runs = list((tmp_path / "results/s/runs").glob("*/*/seed0/results.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["status"] == "budget"
    again = in_dir(tmp_path, *suite, "--resume", "--no-report")
    assert again.returncode == 0 and "1 done, 0 to run" in again.stderr, again.stderr
    missing = in_dir(tmp_path, *SONIC_MAML, "suite", "--out", "results/none", "--resume")
    assert missing.returncode == 2 and "not a suite directory" in missing.stderr


def test_meta_train_named_config_and_evaluate_prefix(tmp_path: Path) -> None:
    proc = in_dir(
        tmp_path,
        *SONIC_MAML,
        "meta-train",
        "--config",
        "halfcheetah-vel",
        "--out",
        "runs/m",
        "--iterations",
        "1",
        "--meta-optimizer",
        "vpg",
        "--device",
        "cpu",
        *TINY_MAML,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs/m/checkpoint.pt").is_file()
    proc = in_dir(
        tmp_path,
        *SONIC_MAML,
        "evaluate",
        "--checkpoint",
        "runs/m/checkpoint.pt",
        "--tasks",
        "1",
        "--adapt-steps",
        "1",
        "--prefix",
        "eval/m",
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "eval/m.csv").is_file() and (tmp_path / "eval/m.json").is_file()
    bad = in_dir(tmp_path, *SONIC_MAML, "meta-train", "--config", "no-such", "--out", "x")
    assert bad.returncode == 2 and "halfcheetah-dir" in bad.stderr and "Traceback" not in bad.stderr


def test_console_lists_every_python_m_command() -> None:
    proc = in_dir(ROOT, *SONIC_MAML, "--help")
    assert proc.returncode == 0
    for name in (
        "roms",
        "serve",
        "run",
        "suite",
        "build",
        "docker",
        "video",
        "train",
        "meta-train",
        "evaluate",
        "pipeline",
        "agent",
    ):
        assert f"\n    {name}" in proc.stdout, name
    proc = in_dir(ROOT, *SONIC_MAML, "roms", "levels", "smoke")
    assert proc.returncode == 0 and proc.stdout.splitlines() == [
        "game,state",
        LEVEL.replace(":", ","),
    ]
    proc = in_dir(ROOT, *SONIC_MAML, "agent", "nosuch")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown agent")


def test_console_commands_show_their_console_usage(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from meta_train.console import console_prog, main

    for argv, usage in (
        (["evaluate", "--help"], "usage: sonic-maml evaluate "),
        (["docker", "up", "--help"], "usage: sonic-maml docker up "),
        (["roms", "import", "--help"], "usage: sonic-maml roms import "),
        (["run", "--help"], "usage: sonic-maml run "),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0 and capsys.readouterr().out.startswith(usage), argv
    # outside sonic-maml, the python -m spelling stays
    assert (
        argparse.ArgumentParser(prog="python -m evaluation run").prog == "python -m evaluation run"
    )
    assert (
        console_prog("python -m meta_train evaluate", "evaluate", ("evaluate",))
        == "sonic-maml evaluate"
    )


def test_broken_pipe_ends_quietly() -> None:
    """The reader is gone before the command writes (`true` reads nothing): no traceback, no
    "Exception ignored", the exit code of a SIGPIPE."""
    for cmd in (
        "roms_setup status --json",
        "evaluation docker status",
        "meta_train.console roms levels atari-train",
    ):
        proc = subprocess.run(
            ["bash", "-c", f"{sys.executable} -m {cmd} | true; echo ${{PIPESTATUS[0]}}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.stdout.strip() == "141" and proc.stderr == "", (cmd, proc.stderr)


def test_an_unusable_out_is_one_line_for_every_command(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    bad = "file/out"  # under a regular file: ENOTDIR
    for cmd in (
        ["meta-train", "--config", "halfcheetah-dir", "--out", bad, "--iterations", "1"],
        ["train", "--levels", "smoke", "--timesteps", "64", "--out", bad],
        ["suite", "--agents", "random", "--levels", "smoke", "--out", bad],
        ["pipeline", "--smoke", "--out", bad],
        ["run", "--agent", "random", "--level", LEVEL, "--budget", "10", "--out", bad],
    ):
        proc = in_dir(tmp_path, *SONIC_MAML, *cmd)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (cmd, proc.stderr[-1500:])
        assert lines[0].startswith("error: ") and "file/out" in lines[0], (cmd, lines)


def test_an_out_that_is_a_file_is_one_line_for_every_command(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    for cmd in (
        ["meta-train", "--config", "halfcheetah-dir", "--out", "file", "--iterations", "1"],
        ["suite", "--agents", "random", "--levels", "smoke", "--out", "file"],
        ["pipeline", "--smoke", "--out", "file"],
        ["run", "--agent", "random", "--level", LEVEL, "--budget", "10", "--out", "file"],
    ):
        proc = in_dir(tmp_path, *SONIC_MAML, *cmd)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (cmd, proc.stderr[-1500:])
        assert lines[0].startswith("error: ") and "file" in lines[0], (cmd, lines)
    assert (tmp_path / "file").read_text() == "mine"


def test_run_does_not_clear_a_directory_that_holds_no_run(tmp_path: Path) -> None:
    """A run clears what an earlier run left (agent/, movies/, ...): `--out .` in a source tree
    must not take the tree's agent/ for a run's."""
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "mycode.py").write_text("x = 1\n")
    (tmp_path / "movies").mkdir()
    run = ["run", "--agent", "random", "--level", LEVEL, "--budget", "10", "--out", "."]
    proc = in_dir(tmp_path, *SONIC_MAML, *run)
    assert proc.returncode == 2 and "no run's records" in proc.stderr, proc.stderr[-1500:]
    assert (tmp_path / "agent" / "mycode.py").read_text() == "x = 1\n"
    assert (tmp_path / "movies").is_dir() and not (tmp_path / "results.json").exists()
    # a directory a run wrote is a run's: the next run there replaces it
    out = tmp_path / "r"
    assert in_dir(tmp_path, *SONIC_MAML, *run[:-1], "r").returncode == 0
    (out / "agent" / "left-by-the-first.txt").write_text("")
    assert in_dir(tmp_path, *SONIC_MAML, *run[:-1], "r").returncode == 0
    assert not (out / "agent" / "left-by-the-first.txt").exists()
    assert json.loads((out / "results.json").read_text())["status"] == "budget"


# --- from a wheel, installed into a venv of its own ---------------------------------------------


def venv_with_wheel(tmp_path: Path) -> Path:
    """A venv holding the project's wheel (no dependencies: they come from this environment's
    site-packages, added by a .pth line, so no download). Returns its bin directory."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCE_PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "Dockerfile"):
        shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    here = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "zz_deps.pth").write_text(here + "\n")  # the dependencies, after the wheel
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin/python"),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            *map(str, wheels.glob("*.whl")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    return venv / "bin"


@pytest.fixture(scope="module")
def wheel_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheel build and venv for the module's wheel tests (each works in a directory of its
    own; the first checks that nothing is written into the venv)."""
    return venv_with_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.mark.slow
def test_wheel_install_runs_from_another_directory(tmp_path: Path, wheel_bin: Path) -> None:
    bin_dir = wheel_bin
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = in_dir(
        work,
        str(bin_dir / "python"),
        "-c",
        "import evaluation, agent.config as c; print(evaluation.__file__); "
        "print(c.find_config('meta_train/configs/halfcheetah-dir.yaml', "
        "c.CONFIG_DIR.parent.parent / 'meta_train' / 'configs'))",
        env=env,
    )
    assert where.returncode == 0, where.stderr
    assert str(bin_dir.parent) in where.stdout and str(ROOT) not in where.stdout
    assert where.stdout.split()[1].endswith("site-packages/meta_train/configs/halfcheetah-dir.yaml")
    proc = in_dir(
        work,
        str(bin_dir / "sonic-maml"),
        "run",
        "--agent",
        "jerk",
        "--level",
        LEVEL,
        "--budget",
        "200",
        "--out",
        "results/jerk",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert results(work / "results/jerk")["status"] == "budget"
    assert not list(bin_dir.parent.rglob("results.json"))  # nothing in site-packages

    # `evaluation build`'s context, made from the installed package: its Dockerfile, a
    # pyproject.toml that builds the same packages (configs included), torch pinned as here
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    code = (
        "import sys; from pathlib import Path; "
        "from evaluation.docker import packaging, images; "
        "packaging.copy_build_sources(Path(sys.argv[1])); "
        "print(packaging.in_checkout(), images.TORCH_REQUIREMENTS[0])"
    )
    made = in_dir(work, str(bin_dir / "python"), "-c", code, str(ctx), env=env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == ["False", declared_requirement("torch")]
    assert (ctx / "Dockerfile").read_bytes() == (ROOT / "Dockerfile").read_bytes()
    wheel = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "w2"),
            str(ctx),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wheel.returncode == 0, wheel.stderr
    with zipfile.ZipFile(next((tmp_path / "w2").glob("*.whl"))) as z:
        names = set(z.namelist())
    assert {
        "meta_train/configs/halfcheetah-dir.yaml",
        "agent/configs/ppo2.yaml",
        "roms_setup/data/smoke.csv",
        "agent/jerk.py",
    } <= names


@pytest.mark.slow
@pytest.mark.docker
def test_wheel_install_builds_an_image_that_plays(tmp_path: Path, wheel_bin: Path) -> None:
    """`sonic-maml build` from a wheel install (no checkout anywhere) makes an image that runs."""
    pytest.importorskip("docker")
    from tests.support import docker_client_or_skip

    client = docker_client_or_skip(timeout=120)
    bin_dir = wheel_bin
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    tag = "sonic-maml-test-wheel-random:latest"
    try:
        build = in_dir(
            work,
            str(bin_dir / "sonic-maml"),
            "build",
            "--agent",
            "random",
            "--tag",
            tag,
            env=env,
            timeout=1200,
        )
        assert build.returncode == 0, build.stderr[-2000:]
        run = in_dir(
            work,
            str(bin_dir / "sonic-maml"),
            "run",
            "--agent",
            "random",
            "--runtime",
            "docker",
            "--image",
            tag,
            "--level",
            LEVEL,
            "--budget",
            "300",
            "--out",
            "results/r",
            env=env,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert results(work / "results/r")["status"] == "budget"
    finally:
        with contextlib.suppress(Exception):
            client.images.remove(tag, force=True)
        client.close()


def test_packaged_dockerfile_is_the_top_level_one() -> None:
    """`evaluation build` from an installed package uses evaluation/docker/Dockerfile: the same
    file."""
    packaged = ROOT / "evaluation" / "docker" / "Dockerfile"
    assert packaged.read_bytes() == (ROOT / "Dockerfile").read_bytes()


def test_image_torch_pin_is_pyproject_s() -> None:
    import tomllib

    from evaluation.docker.images import TORCH_REQUIREMENTS

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert TORCH_REQUIREMENTS[0] in deps and TORCH_REQUIREMENTS[0].startswith("torch==")
