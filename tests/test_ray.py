"""The Ray backend on a real 2-node Ray cluster (`ray.cluster_utils.Cluster`, started once per
session: one CPU and a 78 MiB object store per node, no dashboard, custom resources `node_a`
and `node_b` naming the nodes). Suites of the random agent on Airstriker at 200-20000 timesteps,
meta-training rollouts of HalfCheetah and Atari levels at a few steps.

Skipped only where Ray is not installed (`pip install -e ".[cluster]"`; setup installs it).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evaluation.reports.report import write_report
from evaluation.suites.ray_suite import RayOptions, RaySuiteRunner
from evaluation.suites.suite import SuiteConfig, open_suite

ROOT = Path(__file__).resolve().parents[1]
LEVEL = "Airstriker-Genesis-v0:Level1"
SLUG = "Airstriker-Genesis-v0_Level1"
MIB = 1024**2
NODE = {"num_cpus": 1, "object_store_memory": 78 * MIB}
# a lost node is noticed within seconds, not Ray's default half minute
FAST_HEALTH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
}


@pytest.fixture(scope="module")  # Ray stops before the next module's tests
def cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    (tmp / "ray").mkdir()  # cluster_utils.Cluster needs $RAY_TMPDIR/ray
    env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    c = Cluster(
        initialize_head=True,
        head_node_args={
            **NODE,
            "resources": {"node_a": 1},
            "include_dashboard": False,
            "_system_config": FAST_HEALTH,
        },
    )
    try:
        c.add_node(**NODE, resources={"node_b": 1})
        c.wait_for_nodes()
        ray.init(address=c.address, logging_level="WARNING")
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def node_ids() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def suite(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evaluation", "suite", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def new_suite(out: Path, agents: list[str], seeds: int, budget: int) -> SuiteConfig:
    given = {
        "agents": agents,
        "levels": [LEVEL],
        "levels_spec": LEVEL,
        "seeds": seeds,
        "budget": budget,
        "wallclock_s": 300.0,
        "runtime": "local",
        "agent_args": {},
        "record": False,
        "aliases": {a: "random" for a in agents if a != "random"},
        "images": {},
    }
    return open_suite(out, given)


def report_body(out: Path) -> list[str]:
    """report.md without its first lines (the date and the suite's path)."""
    return [
        line
        for line in (out / "report.md").read_text().splitlines()
        if not line.startswith("Generated ")
    ]


def summary(out: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((out / "summary.csv").open()))
    return [{k: v for k, v in r.items() if k != "wallclock_s"} for r in rows]


def results(out: Path, agent: str, seed: int) -> dict[str, Any]:
    return json.loads((out / "runs" / agent / SLUG / f"seed{seed}" / "results.json").read_text())


# ---------------------------------------------------------------- suites


def test_suite_on_two_nodes_reports_like_the_local_backend(cluster: Any, tmp_path: Path) -> None:
    """Runs land on both nodes; with results copied back by the driver (as when the suite
    directory is not shared), the report and summary equal the local backend's."""
    local = tmp_path / "local"
    proc = suite(
        "--agents",
        "random,random_b=random",
        "--levels",
        LEVEL,
        "--seeds",
        "2",
        "--budget",
        "200",
        "--wallclock",
        "300",
        "--workers",
        "2",
        "--out",
        local,
    )
    assert proc.returncode == 0, proc.stderr

    out = tmp_path / "ray"
    config = new_suite(out, ["random", "random_b"], 2, 200)
    runner = RaySuiteRunner(config, out, RayOptions(address=cluster.address, shared=False))
    outcome = runner.run(list(config.run_keys()))
    assert not outcome.interrupted and len(outcome.done) == 4
    assert set(runner.placements.values()) == node_ids()  # both nodes ran runs
    write_report(out)
    assert summary(out) == summary(local)
    assert {r["status"] for r in summary(out)} == {"budget"}
    assert report_body(out) == report_body(local)
    for run in (out / "runs").glob("*/*/seed*"):  # every file of a run came back
        assert {"results.json", "monitor.csv", "progress.csv", "server.log", "agent.log"} <= {
            p.name for p in run.iterdir()
        }


def test_a_node_lost_mid_suite_reruns_its_runs_elsewhere(cluster: Any, tmp_path: Path) -> None:
    """Both runs start on a third node (the other two are kept busy); the node is removed
    mid-run; the runs are redone on the remaining nodes and the suite completes."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    before = node_ids()

    @ray.remote(num_cpus=1)
    class Blocker:
        def ping(self) -> bool:
            return True

    blockers = [
        Blocker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
        for n in sorted(before)
    ]
    ray.get([b.ping.remote() for b in blockers])
    doomed = cluster.add_node(num_cpus=2, object_store_memory=78 * MIB)
    cluster.wait_for_nodes()
    out = tmp_path / "s"
    # 6000 steps (≈ 8 s of stepping alone): the node goes one second after the runs start,
    # while they play, also on an idle machine (2000 steps could end first)
    config = new_suite(out, ["random"], 2, 6000)
    runner = RaySuiteRunner(config, out, RayOptions(address=cluster.address))
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(runner.run(list(config.run_keys()))))
    thread.start()
    try:
        logs = [out / "runs" / "random" / SLUG / f"seed{s}" / "server.log" for s in (0, 1)]
        deadline = time.monotonic() + 120
        while not all(p.is_file() for p in logs):  # both runs started, on the third node
            assert time.monotonic() < deadline and thread.is_alive(), "the runs did not start"
            time.sleep(0.2)
        time.sleep(1.0)
        cluster.remove_node(doomed, allow_graceful=False)
    finally:
        for b in blockers:
            ray.kill(b)
        thread.join(300)
    assert not thread.is_alive() and not done[0].interrupted
    assert len(done[0].done) == 2
    assert set(runner.placements.values()) <= before  # the final attempts ran elsewhere
    for seed in (0, 1):
        res = results(out, "random", seed)
        assert res["status"] == "budget" and res["timesteps"] == 6000
    write_report(out)
    assert [r["status"] for r in summary(out)] == ["budget", "budget"]


def test_resume_after_the_driver_is_interrupted(cluster: Any, tmp_path: Path) -> None:
    out = tmp_path / "s"
    args = ["--backend", "ray", "--address", cluster.address]
    # 6000 steps: long enough (≈ 8 s of stepping alone) that Ctrl-C one second after the runs
    # start lands while they play, also on an idle machine (1500 steps could end first)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evaluation",
            "suite",
            "--agents",
            "random",
            "--levels",
            LEVEL,
            "--seeds",
            "2",
            "--budget",
            "6000",
            "--out",
            str(out),
            *args,
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    logs = [out / "runs" / "random" / SLUG / f"seed{s}" / "server.log" for s in (0, 1)]
    deadline = time.monotonic() + 120
    while not all(p.is_file() for p in logs):
        assert time.monotonic() < deadline and proc.poll() is None, "the runs did not start"
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    statuses = [results(out, "random", s)["status"] for s in (0, 1)]
    assert statuses == ["interrupted", "interrupted"], err

    proc2 = suite("--resume", out, *args)
    assert proc2.returncode == 0, proc2.stderr
    assert "0 done, 2 to run" in proc2.stderr
    for seed in (0, 1):
        assert results(out, "random", seed)["status"] == "budget"


@pytest.mark.parametrize("channel", ["flag", "ray"])
def test_ctrl_c_stops_the_runs_by_either_cancel_channel(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channel: str
) -> None:
    """Faults: `ray.cancel` reaches no task (as seen once under load: "flag" keeps only the
    driver's cancel flag), or the tasks get no flag ("ray" keeps only Ray's cancel). Either
    channel alone stops both running runs: they record `interrupted` before their budget."""
    import _thread

    import ray

    if channel == "flag":
        monkeypatch.setattr(ray, "cancel", lambda *args, **kwargs: None)
    else:
        submit = RaySuiteRunner._submit
        monkeypatch.setattr(
            RaySuiteRunner, "_submit", lambda self, task, key, flag: submit(self, task, key, None)
        )
    budget = 20000  # ≈ 27 s of play on the idle machine: Ctrl-C lands mid-run
    out = tmp_path / "s"
    config = new_suite(out, ["random"], 2, budget)
    runner = RaySuiteRunner(config, out, RayOptions(address=cluster.address))
    logs = [out / "runs" / "random" / SLUG / f"seed{s}" / "server.log" for s in (0, 1)]
    finished = threading.Event()

    def ctrl_c_once_both_run() -> None:
        deadline = time.monotonic() + 120
        while not all(p.is_file() for p in logs) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        if not finished.is_set():
            _thread.interrupt_main()

    # a shell that starts pytest in the background makes it ignore SIGINT, and interrupt_main
    # then does nothing: Ctrl-C raises KeyboardInterrupt here as in a terminal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    thread = threading.Thread(target=ctrl_c_once_both_run, daemon=True)
    thread.start()
    try:
        try:
            outcome = runner.run(list(config.run_keys()))
        finally:
            finished.set()
            thread.join()
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C came after the suite had ended")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert outcome.interrupted
    for seed in (0, 1):
        res = results(out, "random", seed)
        assert res["status"] == "interrupted" and res["timesteps"] < budget, res
    assert sorted(r["status"] for _, r in outcome.done) == ["interrupted", "interrupted"]


def test_a_relative_out_means_the_drivers_directory(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out rel/s` on Ray is the driver's rel/s: the runs land there whether the nodes write
    into it (a path they share) or the driver copies their files back (nodes elsewhere)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation",
            "suite",
            "--agents",
            "random",
            "--levels",
            LEVEL,
            "--seeds",
            "1",
            "--budget",
            "100",
            "--out",
            "rel/s",
            "--backend",
            "ray",
            "--address",
            cluster.address,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert results(tmp_path / "rel" / "s", "random", 0)["status"] == "budget"

    monkeypatch.chdir(tmp_path)  # the driver's directory; Ray's workers run in their own
    for name, shared in (("written", True), ("copied", False)):
        config = new_suite(Path(name), ["random"], 1, 100)
        runner = RaySuiteRunner(
            config, Path(name), RayOptions(address=cluster.address, shared=shared)
        )
        outcome = runner.run(list(config.run_keys()))
        assert not outcome.interrupted and len(outcome.done) == 1
        assert results(tmp_path / name, "random", 0)["status"] == "budget"


def test_backend_options_are_checked(tmp_path: Path) -> None:
    proc = suite(
        "--agents",
        "random",
        "--levels",
        LEVEL,
        "--budget",
        "10",
        "--address",
        "auto",
        "--out",
        tmp_path / "s",
    )
    assert proc.returncode == 2 and "--backend ray" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_run_resources_follow_the_runtime_and_the_agents() -> None:
    from evaluation.suites.ray_suite import parse_run_gpus, run_resources
    from sonic_common.errors import UserError

    base = {
        "agents": ["ppo2", "jerk"],
        "levels": [LEVEL],
        "levels_spec": LEVEL,
        "seeds": 1,
        "budget": 10,
        "wallclock_s": 60.0,
    }
    opts = RayOptions(cpus=2.0, gpus=parse_run_gpus(["ppo2=0.5"]))
    docker = run_resources(SuiteConfig(**base, runtime="docker"), "ppo2", opts)
    assert docker["resources"] == {"docker": 1} and docker["num_gpus"] == 0.5
    assert docker["memory"] == 4 * 1024**3 and docker["num_cpus"] == 2.0  # the container's limit
    local = run_resources(SuiteConfig(**base, runtime="local"), "jerk", opts)
    assert local["resources"] == {} and local["num_gpus"] == 0.0
    assert local["memory"] == 1024**3
    # Rainbow's 500 000-transition replay: its container's own limit, also under an alias
    rainbow = {**base, "agents": ["rb"], "aliases": {"rb": "rainbow"}}
    for runtime in ("docker", "local"):
        assert run_resources(SuiteConfig(**rainbow, runtime=runtime), "rb", opts)["memory"] == (
            6 * 1024**3
        )
    assert local["max_retries"] >= 1 and local["retry_exceptions"] is False
    for bad in ("ppo2", "ppo2=x", "=1", "ppo2=-1"):
        with pytest.raises(UserError, match="NAME=N"):
            parse_run_gpus([bad])


def test_copied_back_files_write_results_json_last(tmp_path: Path) -> None:
    """A copy that fails half-way leaves no results.json: the run does not look finished."""
    from evaluation.suites.ray_suite import write_run_files

    run = tmp_path / "run"
    good = {"results.json": b"{}", "monitor.csv": b"r,l,t\n", "agent/model.pt": b"w"}
    write_run_files(run, good)
    assert {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()} == set(good)
    broken = {"results.json": b"{}", "agent": b"a file", "agent/model.pt": b"w"}
    with pytest.raises(OSError):
        write_run_files(run, broken)
    assert not (run / "results.json").exists() and not (run / "monitor.csv").exists()


def test_files_read_back_from_a_private_run_leave_the_resume_point(tmp_path: Path) -> None:
    """Without a shared filesystem a run is never continued from its private directory: the
    agent's resume point (a replay of hundreds of MB) stays on the node; the rest comes back."""
    from evaluation.suites.ray_suite import read_tree

    files = {
        "results.json": b"{}",
        "monitor.csv": b"r,l,t\n",
        "agent/checkpoint.pt": b"w",
        "agent/learning.csv": b"steps\n",
        "agent/resume.json": b'{"steps": 1, "episodes": 1}',
        "agent/resume-1200.pt": b"learner",
        "agent/resume-1200.npz": b"replay",
        "agent/.resume-9.tmp/x": b"half",
        "agent/sub/resume-keep.txt": b"not the point",
        "resume-notes.txt": b"not the agent's",
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    back = read_tree(tmp_path)
    assert set(back) == {
        "results.json",
        "monitor.csv",
        "agent/checkpoint.pt",
        "agent/learning.csv",
        "agent/sub/resume-keep.txt",
        "resume-notes.txt",
    }
    assert back["agent/checkpoint.pt"] == b"w"


def test_a_private_run_sends_back_its_records_first_and_not_what_an_agent_inflated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's sparse terabyte would fail the task (MemoryError) and have its run recorded
    interrupted, redone at the agent's wish: it is left out and listed instead, and the
    server's records come back whatever the agent wrote beside them."""
    from evaluation.suites import ray_suite

    monkeypatch.setattr(ray_suite, "RETURN_MAX_BYTES", 1000)
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent.log").write_bytes(b"x" * 990)  # sorts before the records
    (tmp_path / "agent" / "huge").touch()
    os.truncate(tmp_path / "agent" / "huge", 2**40)  # sparse: no disk used
    (tmp_path / "agent" / "small").write_bytes(b"s" * 5)
    for name in ("results.json", "monitor.csv", "progress.csv"):
        (tmp_path / name).write_bytes(b"r" * 10)
    back = ray_suite.read_tree(tmp_path)
    assert set(back) == {
        "results.json",
        "monitor.csv",
        "progress.csv",
        "agent/small",
        ray_suite.NOT_RETURNED,
    }
    listed = dict(
        line.split(": ", 1) for line in back[ray_suite.NOT_RETURNED].decode().splitlines()
    )
    assert set(listed) == {"agent.log", "agent/huge"}
    assert listed["agent/huge"].startswith(f"{2**40} bytes")


def test_the_pipeline_passes_the_backend_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meta_train.configs import CONFIG_DIR
    from meta_train.pipeline import Pipeline, load_pipeline_config, main, suite_command

    smoke = CONFIG_DIR / "pipeline-smoke.yaml"
    p = Pipeline(tmp_path, load_pipeline_config(smoke), smoke)
    assert "--backend" not in suite_command(p, "local")  # the local default: unchanged
    p.backend = ["--backend", "ray", "--address", "HEAD:6379"]
    cmd = suite_command(p, "local")
    assert cmd[cmd.index("--backend") : cmd.index("--backend") + 4] == p.backend
    with pytest.raises(SystemExit) as e:
        main(["--smoke", "--out", str(tmp_path / "p"), "--address", "HEAD:6379"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--address is for --backend ray" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p").exists()


# ---------------------------------------------------------------- meta-training rollouts


def same(a: Any, b: Any) -> None:
    for field in ("obs", "actions", "rewards", "dones"):
        x, y = getattr(a, field), getattr(b, field)
        if x is None or y is None:
            assert x is None and y is None, field
        else:
            np.testing.assert_array_equal(x, y, err_msg=field)


def test_ray_sampler_equals_the_local_sampler_halfcheetah(cluster: Any) -> None:
    from agent.config import load_config
    from agent.policies import build_policy
    from meta_train.configs import CONFIG_DIR, DEFAULTS
    from meta_train.loop import policy_spec
    from meta_train.ray_sampler import RaySampler
    from meta_train.sampler import Sampler

    cfg = load_config(CONFIG_DIR / "halfcheetah-dir.yaml", ["task.horizon=6"], defaults=DEFAULTS)
    torch.manual_seed(0)
    policy = build_policy(policy_spec(cfg))
    params = {k: v.detach() for k, v in policy.named_parameters() if not k.startswith("vf.")}
    other = {k: v + 0.01 for k, v in params.items()}
    jobs = [
        (
            params if i % 2 else other,
            {"kind": "halfcheetah-dir", "horizon": 6, "direction": float(1 - 2 * (i % 2))},
            100 + i,
        )
        for i in range(5)
    ]
    with Sampler(policy, workers=0) as local:
        want = local.sample(jobs, 2)
    with RaySampler(policy, {**cfg, "workers": 0}, 2, address=cluster.address) as remote:
        assert set(remote.nodes) == node_ids()  # one actor per node
        chunks = remote.submit(jobs, 2)
        assert len(chunks) > 2  # spread over both actors
        got = remote.sample(jobs, 2)
    assert len(got) == len(want)
    for a, b in zip(want, got, strict=True):
        same(a, b)


def test_a_lost_sampler_actor_is_a_one_line_error(cluster: Any) -> None:
    import ray

    from agent.config import load_config
    from agent.policies import build_policy
    from meta_train.configs import CONFIG_DIR, DEFAULTS
    from meta_train.loop import policy_spec
    from meta_train.ray_sampler import RaySampler
    from sonic_common.errors import UserError

    cfg = load_config(CONFIG_DIR / "halfcheetah-dir.yaml", ["task.horizon=4"], defaults=DEFAULTS)
    policy = build_policy(policy_spec(cfg))
    params = {k: v.detach() for k, v in policy.named_parameters() if not k.startswith("vf.")}
    jobs = [
        (params, {"kind": "halfcheetah-dir", "horizon": 4, "direction": 1.0}, i) for i in range(4)
    ]
    with RaySampler(policy, {**cfg, "workers": 0}, 2, address=cluster.address) as remote:
        ray.kill(remote.actors[0])
        with pytest.raises(UserError, match="--resume"):
            for _, fut in remote.submit(jobs, 2):
                fut.result(timeout=120)


def test_ray_sampler_equals_the_local_sampler_levels(cluster: Any, atari_roms: None) -> None:
    from agent.config import load_config
    from agent.policies import build_policy
    from meta_train.configs import CONFIG_DIR, DEFAULTS
    from meta_train.level_sampler import LevelSampler
    from meta_train.loop import policy_spec
    from meta_train.ray_sampler import RaySampler

    cfg = load_config(
        CONFIG_DIR / "atari-train.yaml",
        ["task.horizon=8", "trajectories=2", "workers=2"],
        defaults=DEFAULTS,
    )
    torch.manual_seed(0)
    policy = build_policy(policy_spec(cfg))
    params = {k: v.detach() for k, v in policy.named_parameters() if not k.startswith("vf.")}
    task = {
        "kind": "levels",
        "horizon": 8,
        "discretizer": "auto",
        "backtracking": True,
        "reward_scale": 0.01,
    }
    jobs = [
        (params, {**task, "level": lv}, seed)
        for lv, seed in (("Breakout-Atari2600-v0:Start", 3), ("Qbert-Atari2600-v0:Start", 4))
    ]
    with LevelSampler(policy, envs=2) as local:
        want = local.sample(jobs, 2)
    with RaySampler(policy, cfg, 2, address=cluster.address) as remote:
        got = remote.sample(jobs, 2)
    for a, b in zip(want, got, strict=True):
        same(a, b)


def test_meta_training_on_ray_equals_local(cluster: Any, tmp_path: Path) -> None:
    """`python -m meta_train --backend ray`: the same metrics as the local run."""
    from meta_train.cli import main
    from meta_train.configs import CONFIG_DIR

    common = [
        "--config",
        str(CONFIG_DIR / "halfcheetah-dir.yaml"),
        "--set",
        "iterations=1",
        "--set",
        "meta_batch=3",
        "--set",
        "trajectories=2",
        "--set",
        "task.horizon=6",
        "--set",
        "tensorboard=false",
        "--no-progress",
    ]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert (
        main(
            [
                *common,
                "--out",
                str(tmp_path / "ray"),
                "--backend",
                "ray",
                "--address",
                cluster.address,
            ]
        )
        == 0
    )
    rows = [list(csv.DictReader((tmp_path / d / "metrics.csv").open())) for d in ("local", "ray")]
    keys = [k for k in rows[0][0] if k.startswith(("return_", "loss_", "kl"))]
    assert [{k: r[k] for k in keys} for r in rows[0]] == [{k: r[k] for k in keys} for r in rows[1]]


def test_agent_args_are_checked_on_a_node_before_any_run(cluster: Any, tmp_path: Path) -> None:
    """A setting the agent refuses is one line before any run, checked in a task on the
    cluster (where the runs start the agents), and the refused new suite leaves nothing."""
    out = tmp_path / "s"
    args = ["--levels", LEVEL, "--seeds", "2", "--budget", "100", "--out", out]
    ray = ["--backend", "ray", "--address", cluster.address]
    proc = suite("--agents", "ppo2", "--agent-args", "ppo2=--set nsteps=abc", *args, *ray)
    assert proc.returncode == 2, proc.stderr
    said = proc.stderr.strip().splitlines()
    assert said[-1].startswith("error: agent ppo2 refuses its --agent-args (--set nsteps=abc)")
    assert "nsteps" in said[-1] and not out.exists()


def test_the_eta_counts_the_runs_the_live_nodes_hold_at_once(cluster: Any, tmp_path: Path) -> None:
    """Without a shared directory the driver sees no running run: the ETA's count of runs
    played together comes from the nodes' resources and a run's request, not from the runs
    finished so far."""
    from evaluation.suites.ray_suite import ray_slots, run_resources, runs_that_fit

    config = new_suite(tmp_path / "s", ["random", "big"], 1, 200)
    assert ray_slots(config, RayOptions(cpus=1.0)) == 2  # 2 nodes of 1 CPU
    assert ray_slots(config, RayOptions(cpus=0.5)) == 4
    assert ray_slots(config, RayOptions(cpus=0.5, gpus={"big": 1.0})) is None  # no GPU node
    need = run_resources(config, "big", RayOptions(cpus=1.0))  # 1 CPU, 1 GiB locally
    assert runs_that_fit({"CPU": 8.0, "memory": 3.5 * 1024**3}, need) == 3  # memory binds
    assert runs_that_fit({"CPU": 8.0, "memory": 8.0 * 1024**3, "docker": 1.0}, need) == 8
    docker = {**need, "resources": {"docker": 1}}
    assert runs_that_fit({"CPU": 8.0, "memory": 8.0 * 1024**3, "docker": 2.0}, docker) == 2
    assert runs_that_fit({"CPU": 8.0, "memory": 8.0 * 1024**3}, docker) == 0


def test_what_the_agent_made_unreadable_is_listed_not_raised() -> None:
    """Read as an unprivileged user (root reads everything): a directory that cannot be
    searched or listed, a file that cannot be read, a pipe; none fails the task (which would
    record the run `interrupted`, redone at the agent's wish)."""
    from evaluation.suites.ray_suite import NOT_RETURNED, read_tree

    root = Path(tempfile.mkdtemp(prefix="tree-", dir="/tmp"))
    try:
        root.chmod(0o755)
        (root / "results.json").write_text("{}")
        (root / "agent" / "unsearchable").mkdir(parents=True)
        (root / "agent" / "unsearchable" / "y").write_text("y")
        (root / "agent" / "unsearchable").chmod(0o644)
        (root / "agent" / "unlistable").mkdir()
        (root / "agent" / "unlistable").chmod(0o000)
        (root / "agent" / "secret").write_text("s")
        (root / "agent" / "secret").chmod(0o000)
        os.mkfifo(root / "agent" / "pipe")
        (root / "agent" / "fine").write_text("f")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no threads, no logging, only this
            try:
                os.setgid(65534)
                os.setuid(65534)
                back = {k: v.decode() for k, v in read_tree(root).items()}
                os.write(write, json.dumps(back).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            back = json.loads(f.read())
        os.waitpid(pid, 0)
    finally:
        for d in ("unsearchable", "unlistable"):
            (root / "agent" / d).chmod(0o755)
        shutil.rmtree(root)
    assert set(back) == {"results.json", "agent/fine", NOT_RETURNED}, back
    listed = dict(line.split(": ", 1) for line in back[NOT_RETURNED].splitlines())
    assert set(listed) == {"agent/unsearchable/y", "agent/unlistable/", "agent/secret"}, listed
    assert all("ermission" in why for why in listed.values()), listed
