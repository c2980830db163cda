"""Fault injection against the real harness: the server, the runner and the suite, with real
processes, sockets and emulators (Airstriker), attacked as an agent or an unlucky user would.

Each test does the fault for real (truncates `ob`, SIGKILLs the runner or the server, escapes
with setsid(), forges results, fills a disk, deletes the results directory) and checks the
recorded status, the kept episodes, the exit code, and that no process or socket directory is
left behind. The numbers in the test names are those of the defects in issue 11.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evaluation.contest.records import read_monitor, score
from evaluation.contest.runner import RunSpec, run_one
from evaluation.suites.suite import RunKey, SuiteConfig, SuiteRunner, todo
from roms_setup.levels import Level
from tests.support import beside, lifelines, no_leftovers, processes_with, wait_until

ROOT = Path(__file__).resolve().parents[1]
LEVEL = Level.parse("Airstriker-Genesis-v0:Level1")

# An agent that plays `episodes` whole episodes, writes `played` in its output directory, then
# does `then` (Python statements; `env` is connected, `out` is the output directory). The
# marker comment puts the test's own token in the agent's command line, to find leftovers.
AGENT = """# {token}
import os, pathlib, signal, subprocess, sys, time
from evaluation.contest.client import BudgetExhausted, RemoteEnvClosed, connect_from_env
out = pathlib.Path(os.environ["AGENT_OUTPUT_DIR"])
env = connect_from_env()
env.action_space.seed(0)
for _ in range({episodes}):
    env.reset()
    while not env.step(env.action_space.sample())[2]:
        pass
(out / "played").write_text("yes")
{then}
"""

PLAY_ON = """
try:
    while True:
        env.reset()
        while not env.step(env.action_space.sample())[2]:
            pass
except RemoteEnvClosed:
    pass
"""


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="faults-"))
    yield path
    for pid in processes_with(str(path)):  # never leave a test's processes behind
        with_suppress_kill(pid)
    shutil.rmtree(path, ignore_errors=True)


def with_suppress_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def agent_cmd(base: Path, episodes: int, then: str = "") -> list[str]:
    return [sys.executable, "-c", AGENT.format(token=base, episodes=episodes, then=then)]


def suite_spec(cmd: list[str]) -> Any:
    """A SuiteRunner's make_spec: each run's agent is `cmd`."""

    def make_spec(cfg: SuiteConfig, run_key: RunKey, run_dir: Path) -> RunSpec:
        return RunSpec(
            agent=run_key.agent,
            level=LEVEL,
            seed=run_key.seed,
            budget=cfg.budget,
            results_dir=run_dir,
            agent_cmd=cmd,
        )

    return make_spec


def tail(path: Path, lines: int = 15) -> str:
    """The end of a log, for an assertion's message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({e})"


def argv_of(pid: int) -> list[bytes]:
    """The process's command line; empty when it has exited since it was listed."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def server_dirs(token: str) -> tuple[Path, Path]:
    """The socket directory and the private records directory of the run's server."""
    for pid in processes_with(token):
        argv = argv_of(pid)
        if b"serve" in argv and b"--socket" in argv:
            return (
                Path(argv[argv.index(b"--socket") + 1].decode()),
                Path(argv[len(argv) - 1 - argv[::-1].index(b"--out") + 1].decode()),
            )
    raise AssertionError("no server found")


def server_pid(token: str) -> int:
    for pid in processes_with(token):
        if b"serve" in (argv := argv_of(pid)) and b"evaluation" in argv:
            return pid
    raise AssertionError("no server found")


def run_cli(
    *args: str | Path, cwd: Path = ROOT, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evaluation", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def finished_rows(results_dir: Path) -> list[Any]:
    _, rows = read_monitor(results_dir / "monitor.csv")
    return rows


def results_of(results_dir: Path) -> dict[str, Any]:
    return json.loads((results_dir / "results.json").read_text())


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    # `serve` says "serving LEVEL on SOCKET" before it starts: the error is the line after
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("serving ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


# ------------------------------------------------------------------------------ 1: ob truncated


def test_1_agent_truncating_ob_does_not_kill_the_server(base: Path) -> None:
    """The agent truncates the shared observation file between steps, again and again."""
    then = """
ob = os.path.join(os.environ["CONTEST_SOCKET_DIR"], "ob")
try:
    while True:
        env.reset()
        done = False
        while not done:
            os.truncate(ob, 0)
            done = env.step(env.action_space.sample())[2]
except RemoteEnvClosed:
    pass
"""
    d = base / "r"
    proc = run_cli(
        "run",
        "--agent",
        "trunc",
        "--level",
        LEVEL.id,
        "--budget",
        "1500",
        "--results-dir",
        d,
        "--agent-cmd",
        " ".join(map(quote, agent_cmd(base, 1, then))),
    )
    assert proc.returncode == 0, proc.stderr
    res = results_of(d)
    assert res["status"] == "budget" and res["timesteps"] == 1500, res
    rows = finished_rows(d)
    assert res["episodes"] == len([r for r in rows if not r.cut]) >= 1
    assert res["score"] == pytest.approx(score(rows))
    no_leftovers(str(base))


def quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


# --------------------------------------------------------------- 2: the runner SIGKILLed


def test_2_sigkill_of_run_leaves_no_process_and_records_interrupted(base: Path) -> None:
    d = base / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evaluation",
            "run",
            "--agent",
            "k",
            "--level",
            LEVEL.id,
            "--budget",
            "1000000",
            "--results-dir",
            str(d),
            "--agent-cmd",
            " ".join(map(quote, agent_cmd(base, 2, PLAY_ON))),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: (d / "agent" / "played").exists(), 120, "two episodes")
        sock_dir, records = server_dirs(str(base))
        # one pipe, closed once by the runner's death: when the guard kills the agent for it,
        # the server already sees the runner gone (not "the agent hung up")
        guard_stdin, server_lifeline = lifelines(str(base))
        assert guard_stdin == server_lifeline and guard_stdin.startswith("pipe:")
        proc.kill()
        proc.wait()
        no_leftovers(str(base))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not sock_dir.exists() and not records.exists()
    res = results_of(d)
    assert res["status"] == "interrupted" and "runner" in res["error"], res
    assert res["episodes"] >= 2 and res["episodes"] == len(
        [r for r in finished_rows(d) if not r.cut]
    )
    # a process leaves /proc's cmdline empty a moment before its descriptors close
    wait_until(lambda: not (d / ".run.lock").exists() or _lock_free(d), 10, "the lock's release")


def _lock_free(d: Path) -> bool:
    import fcntl

    with open(d / ".run.lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


def test_2_sigkill_of_suite_then_resume_is_not_written_into(base: Path) -> None:
    """A killed suite's children end; a quick resume redoes the run, and no previous attempt
    writes into it: its results match its own monitor.csv."""
    out = base / "s"
    args = [
        "suite",
        "--agents",
        "random",
        "--levels",
        LEVEL.id,
        "--seeds",
        "1",
        "--budget",
        "20000",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "evaluation", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    run_dir = out / "runs" / "random" / LEVEL.slug / "seed0"
    try:
        wait_until(lambda: (run_dir / "monitor.csv").exists(), 120, "the run to start")
        time.sleep(1.0)
        proc.kill()
        proc.wait()
        no_leftovers(str(out), timeout=30.0)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = results_of(run_dir)  # they ended because the suite died, not at the budget
    assert killed["status"] == "interrupted" and killed["timesteps"] < 20000, killed
    resumed = run_cli("suite", "--resume", out, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    no_leftovers(str(out))
    res = results_of(run_dir)
    rows = finished_rows(run_dir)
    why = {k: res.get(k) for k in ("status", "timesteps", "error", "agent_exit_code")}
    logs = {n: tail(run_dir / n) for n in ("agent.log", "server.log")}
    assert res["status"] == "budget" and res["timesteps"] == 20000, (why, logs)
    assert res["episodes"] == len([r for r in rows if not r.cut])
    assert sum(r.l for r in rows) == res["steps"]
    assert res["score"] == pytest.approx(score(rows))


# --------------------------------------------------------------- 3: the server dies


def test_3_sigkilled_server_is_env_error_and_keeps_its_episodes(base: Path) -> None:
    d = base / "r"
    spec = RunSpec(
        agent="victim",
        level=LEVEL,
        seed=0,
        budget=1_000_000,
        results_dir=d,
        wallclock_s=300,  # ends the run should the fault never come
        agent_cmd=agent_cmd(base, 3, PLAY_ON),
    )

    def kill_server_after_three_episodes() -> None:
        wait_until(lambda: (d / "agent" / "played").exists(), 120, "three episodes")
        os.kill(server_pid(str(base)), signal.SIGKILL)

    result = beside(kill_server_after_three_episodes, lambda: run_one(spec))
    assert result["status"] == "env_error" and "SIGKILL" in result["error"], result
    rows = finished_rows(d)
    assert result["episodes"] == len([r for r in rows if not r.cut]) >= 3
    assert result["score"] == pytest.approx(score(rows))
    assert result["timesteps"] >= sum(r.l for r in rows)
    assert results_of(d) == result
    no_leftovers(str(base))


def test_3_hung_server_caught_by_the_backstop_keeps_its_episodes(base: Path) -> None:
    d = base / "r"
    spec = RunSpec(
        agent="victim",
        level=LEVEL,
        seed=0,
        budget=1_000_000,
        results_dir=d,
        wallclock_s=40.0,  # room for the start and one episode on a loaded machine
        wallclock_grace_s=1.0,
        agent_cmd=agent_cmd(base, 1, PLAY_ON),
    )

    def stop_server() -> None:  # before the wall clock, or the server ends the run itself
        wait_until(lambda: (d / "agent" / "played").exists(), 37, "one episode")
        os.kill(server_pid(str(base)), signal.SIGSTOP)  # hung: never ends by itself

    result = beside(stop_server, lambda: run_one(spec))
    assert result["status"] == "env_error" and "wall-clock" in result["error"], result
    assert result["episodes"] >= 1 and result["score"] is not None
    assert result["score"] == pytest.approx(score(finished_rows(d)))
    no_leftovers(str(base))


# --------------------------------------------------------------- 4: early failure in a suite


def test_4_agent_failing_before_it_connects_is_not_retried_forever(base: Path) -> None:
    out = base / "s"
    config = SuiteConfig(["broken"], [LEVEL.id], LEVEL.id, [0], 1000, 600.0)

    crash = [sys.executable, "-c", f"# {base}\nimport sys; sys.exit(3)"]
    runner = SuiteRunner(config, out, 1, make_spec=suite_spec(crash))
    outcome = runner.run(list(config.run_keys()))
    [(_, res)] = outcome.done
    assert res["status"] == "agent_crashed" and res["agent_exit_code"] == 3, res
    assert "SIGTERM" not in res["error"]
    do, done = todo(config, out, retry_failed=False)
    assert do == [] and len(done) == 1  # kept, not redone on resume
    no_leftovers(str(base))


# --------------------------------------------------------------- 5: a local agent forges


def test_5_local_agent_cannot_forge_its_result(base: Path) -> None:
    forge = """
def forge():
    fake = {"status": "budget", "score": 99999.0, "episodes": 99, "timesteps": 1}
    (out.parent / "results.json").write_text(json.dumps(fake))
    with open(out.parent / "monitor.csv", "a") as f:
        f.write("99999.0,1,0.1,0\\n")
import json
forge()
try:
    while True:
        env.reset()
        while not env.step(env.action_space.sample())[2]:
            pass
except BudgetExhausted:
    pass
forge()  # after the budget, too, like the attack in the issue
time.sleep(0.5)
"""
    d = base / "r"
    proc = run_cli(
        "run",
        "--agent",
        "forger",
        "--level",
        LEVEL.id,
        "--budget",
        "2000",
        "--results-dir",
        d,
        "--agent-cmd",
        " ".join(map(quote, agent_cmd(base, 1, forge))),
    )
    assert proc.returncode == 0, proc.stderr
    assert "99999" not in proc.stdout
    res = results_of(d)
    rows = finished_rows(d)
    assert res["status"] == "budget" and res["timesteps"] == 2000, res
    assert all(r.r != 99999.0 for r in rows)
    assert res["score"] == pytest.approx(score(rows)) and res["score"] != 99999.0
    assert res["episodes"] == len([r for r in rows if not r.cut])
    no_leftovers(str(base))


# --------------------------------------------------------------- 6: setsid escape


def test_6_child_that_calls_setsid_does_not_survive(base: Path) -> None:
    escape = f"""
child = subprocess.Popen([sys.executable, "-c", "# {base}\\nimport time; time.sleep(300)"],
                         start_new_session=True)
(out / "child.pid").write_text(str(child.pid))
"""
    d = base / "r"
    res = run_one(
        RunSpec(
            agent="escaper",
            level=LEVEL,
            seed=0,
            budget=100_000,
            results_dir=d,
            agent_cmd=agent_cmd(base, 1, escape),
        )
    )
    assert res["status"] == "agent_exited", res
    pid = int((d / "agent" / "child.pid").read_text())
    assert pid not in processes_with(str(base)), "the setsid child survived its agent"
    no_leftovers(str(base))


# --------------------------------------------------------------- 7: a second server


def serve_cmd(sock: Path, results: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "evaluation",
        "serve",
        "--level",
        LEVEL.id,
        "--socket",
        str(sock),
        "--results-dir",
        str(results),
        *extra,
    ]


def test_7_second_server_does_not_take_the_first_ones_client(base: Path) -> None:
    sock, r1, r2 = base / "s", base / "r1", base / "r2"
    first = subprocess.Popen(
        serve_cmd(sock, r1, "--budget", "300"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (sock / "sock").exists(), 60, "the first server")
        second = subprocess.run(
            serve_cmd(sock, r2), cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        one_line_error(second, "already")
        env = _connect(sock)
        try:
            steps = _play(env, 300)
        finally:
            env.close()
        assert first.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    res = results_of(r1)
    assert res["status"] == "budget" and res["timesteps"] == 300 == steps, res


def _connect(sock: Path) -> Any:
    from evaluation.contest.client import RemoteEnv

    return RemoteEnv(sock, connect_timeout=30)


def _play(env: Any, budget: int) -> int:
    from evaluation.contest.client import BudgetExhausted

    n = 0
    try:
        while True:
            env.reset()
            n += 1
            while True:
                n += 1
                if env.step(env.action_space.sample())[2]:
                    break
    except BudgetExhausted:
        return n - 1  # the request that met the close was not served


# --------------------------------------------------------------- 8: started in a results dir


def test_8_run_from_a_results_directory_with_results_dir_dot(base: Path) -> None:
    d = base / "r"
    (d / "agent").mkdir(parents=True)  # what a previous run leaves
    proc = run_cli(
        "run",
        "--agent",
        "random",
        "--level",
        LEVEL.id,
        "--budget",
        "300",
        "--results-dir",
        ".",
        cwd=d,
    )
    assert proc.returncode == 0, proc.stderr
    assert results_of(d)["status"] == "budget"
    assert not (ROOT / "agent" / "agent").exists()


# --------------------------------------------------------------- 9: socket before listen


def test_9_the_socket_file_appears_only_once_the_server_listens(base: Path) -> None:
    """Like the 2018 client: wait only for the file to exist, then connect at once."""
    refused = 0
    for i in range(15):
        sock, res = base / f"s{i}", base / f"r{i}"
        server = subprocess.Popen(
            serve_cmd(sock, res, "--idle-timeout", "20"),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            end = time.monotonic() + 60
            while not os.path.exists(sock / "sock"):
                assert time.monotonic() < end and server.poll() is None
                time.sleep(0.005)  # not spinning: the starting server needs the core
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                client.connect(str(sock / "sock"))
            except ConnectionRefusedError:
                refused += 1
            finally:
                client.close()
        finally:
            server.terminate()
            server.wait(30)
    assert refused == 0, f"{refused} of 15 immediate connections were refused"


# --------------------------------------------------------------- 10: status names


@pytest.mark.parametrize(
    "raw, what",
    [
        (b'{"type": "update", "content": ' + b"[" * 200_000 + b"\f", "deeply nested JSON"),
        ('{"type": "update", "content": {"reset": true}}'.encode("utf-16") + b"\f", "UTF-16"),
    ],
)
def test_10_malformed_json_is_a_protocol_error(base: Path, raw: bytes, what: str) -> None:
    sock, res = base / "s", base / "r"
    server = subprocess.Popen(
        serve_cmd(sock, res), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: (sock / "sock").exists(), 60, "the server")
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(30)
        client.connect(str(sock / "sock"))
        client.sendall(raw)
        assert server.wait(30) == 0
        client.close()
    finally:
        if server.poll() is None:
            server.kill()
    result = results_of(res)
    assert result["status"] == "protocol_error", (what, result)
    assert result["timesteps"] == 0


# --------------------------------------------------------------- 11: values refused up front

BAD_VALUES = [
    (["run", "--wallclock", "nan"], "--wallclock"),
    (["run", "--idle-timeout", "nan"], "--idle-timeout"),
    (["run", "--memory", "lots"], "--memory"),
    (["run", "--agent-cmd", '"x'], "--agent-cmd"),
    (["run", "--seed", "-3"], "--seed"),
    (["serve", "--wallclock", "nan"], "--wallclock"),
    (["serve", "--idle-timeout", "nan"], "--idle-timeout"),
    (["serve", "--seed", "-3"], "--seed"),
    (["suite", "--wallclock", "nan"], "--wallclock"),
    (["suite", "--agents", ","], "--agents"),
    (["suite", "--levels", f"{LEVEL.id},{LEVEL.id}", "--workers", "2"], "more than once"),
    (["build", "--agent", "../evaluation/contest/server"], "no agent named"),
]


@pytest.mark.parametrize("args, word", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_11_bad_values_are_a_one_line_error(base: Path, args: list[str], word: str) -> None:
    command, rest = args[0], args[1:]
    defaults = {
        "run": [
            "--agent",
            "random",
            "--level",
            LEVEL.id,
            "--budget",
            "100",
            "--results-dir",
            str(base / "r"),
        ],
        "serve": [
            "--level",
            LEVEL.id,
            "--socket",
            str(base / "s"),
            "--results-dir",
            str(base / "r"),
        ],
        "suite": [
            "--agents",
            "random",
            "--levels",
            LEVEL.id,
            "--budget",
            "100",
            "--out",
            str(base / "o"),
        ],
        "build": [],
    }[command]
    argv = dict(zip(defaults[::2], defaults[1::2], strict=True))
    argv.update(dict(zip(rest[::2], rest[1::2], strict=True)))
    proc = run_cli(command, *[x for kv in argv.items() for x in kv], timeout=120)
    one_line_error(proc, word)
    assert not (base / "r" / "results.json").exists()
    assert not (base / "o" / "suite.json").exists()
    assert not processes_with(str(base))


def test_11_meta_train_set_of_a_non_number_is_a_one_line_error(base: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "meta_train",
            "--config",
            "meta_train/configs/halfcheetah-dir.yaml",
            "--out",
            str(base / "m"),
            "--set",
            "iterations=abc",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_line_error(proc, "iterations")


# --------------------------------------------------------------- 12: reused and shared dirs


def test_12_reused_results_dir_keeps_nothing_of_the_previous_run(base: Path) -> None:
    d = base / "r"
    first = run_cli(
        "run",
        "--agent",
        "random",
        "--level",
        LEVEL.id,
        "--budget",
        "400",
        "--results-dir",
        d,
        "--record",
    )
    assert first.returncode == 0, first.stderr
    assert list((d / "movies").glob("*.bk2"))
    (d / "agent" / "old.txt").write_text("from the previous run")
    second = run_cli(
        "run", "--agent", "random", "--level", LEVEL.id, "--budget", "300", "--results-dir", d
    )
    assert second.returncode == 0, second.stderr
    assert not (d / "movies").exists() and not (d / "agent" / "old.txt").exists()
    assert results_of(d)["timesteps"] == 300


def test_12_two_runs_into_one_directory_are_refused(base: Path) -> None:
    d = base / "r"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evaluation",
            "run",
            "--agent",
            "random",
            "--level",
            LEVEL.id,
            "--budget",
            "1000000",
            "--results-dir",
            str(d),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (d / "results.json").exists(), 120, "the first run")
        second = run_cli(
            "run", "--agent", "random", "--level", LEVEL.id, "--budget", "300", "--results-dir", d
        )
        one_line_error(second, "another run")
        assert first.poll() is None
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 130
    finally:
        if first.poll() is None:
            first.kill()
    res = results_of(d)
    assert res["status"] == "interrupted" and res["budget"] == 1_000_000
    header = (d / "monitor.csv").read_text().splitlines()
    assert sum(1 for line in header if line.startswith("#")) == 1  # one run's rows only


# --------------------------------------------------------------- 13: full disk, deleted dir


@pytest.fixture
def small_disk(base: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root: the project's machines run tests as root)."""
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = base / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> None:
    """Take every free page of the file system (tmpfs allocates page by page); nothing once it
    is unmounted (the directory below is then the host's disk)."""
    if not os.path.ismount(disk):
        return
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 4096):
            try:
                while True:
                    os.write(fd, b"\1" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["results dir", "results and temporary dirs"])
def test_13_full_disk_ends_with_a_clear_error_and_keeps_the_records(
    base: Path, small_disk: Path, where: str
) -> None:
    """The disk of the results directory fills up mid-run; in the second case the server's
    private records and socket directory (TMPDIR) are on it too."""
    d = small_disk / "r"
    env = dict(os.environ)
    if where != "results dir":
        env["TMPDIR"] = str(small_disk)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evaluation",
            "run",
            "--agent",
            "filler",
            "--level",
            LEVEL.id,
            "--budget",
            "4000",
            "--results-dir",
            str(d),
            "--agent-cmd",
            " ".join(map(quote, agent_cmd(base, 1, "time.sleep(1)\n" + PLAY_ON))),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    wait_until(lambda: (d / "agent" / "played").exists(), 120, "one episode")
    # the server's `ob` (215 kB, on this disk with TMPDIR) held open: its pages are not freed
    # when the server ends, and the runner's writes after it find the disk full too
    held = [os.open(ob, os.O_RDONLY) for ob in small_disk.glob("contest-*/ob")]
    stop = threading.Event()

    def keep_full() -> None:  # and whatever else is freed (tmpfs's per-CPU slack) is taken
        while not stop.is_set():
            fill(small_disk)
            time.sleep(0.01)

    def finish() -> tuple[str, str]:
        try:
            return proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            stop.set()

    try:
        out, err = beside(keep_full, finish)
    finally:
        for fd in held:
            os.close(fd)
    assert where == "results dir" or held, "no `ob` on the disk to hold"
    assert "Traceback" not in err
    assert proc.returncode == 2, (out, err)
    lines = [ln for ln in err.strip().splitlines() if "elapsed" not in ln]  # not progress lines
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    kept = Path(lines[0].rsplit("kept in ", 1)[1])
    rows = finished_rows(kept)
    episodes = len([r for r in rows if not r.cut])
    assert episodes >= 1 and f"episodes={episodes}," in lines[0]
    if where == "results dir":
        res = results_of(kept)
        assert res["status"] == "budget" and res["timesteps"] == 4000, res
        assert res["episodes"] == episodes and "status=budget " in lines[0]
    shutil.rmtree(kept, ignore_errors=True)
    no_leftovers(str(base))


FILL_THEN_PLAY = (
    """
try:
    with open(out / "filler", "ab") as f:
        while True:
            f.write(b"\\1" * 65536)
            f.flush()
except OSError:
    pass
"""
    + PLAY_ON
)


def test_13_an_agent_filling_the_suites_disk_does_not_stop_the_suite(
    base: Path, small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The agent fills the disk of the suite directory from its output directory: each run
    ends with the reason, and the suite goes on to its next run instead of raising."""
    config = SuiteConfig(["filler"], [LEVEL.id], LEVEL.id, [0, 1], 1000, 600.0)
    runner = SuiteRunner(
        config, small_disk / "s", 1, make_spec=suite_spec(agent_cmd(base, 1, FILL_THEN_PLAY))
    )
    outcome = runner.run(list(config.run_keys()))
    got = {key.seed: res for key, res in outcome.done}
    assert sorted(got) == [0, 1], got
    assert all(res["status"] in ("env_error", "interrupted") for res in got.values()), got
    assert "No space left" in got[0]["error"], got[0]  # the next one's server may not start
    assert "suite: could not write" in capsys.readouterr().err
    no_leftovers(str(base))


def test_13_a_run_directory_that_cannot_be_made_is_redone_not_raised(base: Path) -> None:
    out = base / "s"
    config = SuiteConfig(["filler"], [LEVEL.id], LEVEL.id, [0], 1000, 600.0)
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "filler").write_text("a file where the agent's directory goes")
    outcome = SuiteRunner(
        config, out, 1, make_spec=suite_spec(agent_cmd(base, 1, FILL_THEN_PLAY))
    ).run(list(config.run_keys()))
    [(_, res)] = outcome.done
    assert res["status"] == "interrupted" and "could not prepare" in res["error"], res
    assert todo(config, out, retry_failed=False)[0] == list(config.run_keys())  # redone


def test_13_results_dir_deleted_mid_run_is_recreated_with_everything(base: Path) -> None:
    d = base / "r"
    delete = "shutil.rmtree(out.parent)\n"
    proc = run_cli(
        "run",
        "--agent",
        "deleter",
        "--level",
        LEVEL.id,
        "--budget",
        "2000",
        "--results-dir",
        d,
        "--agent-cmd",
        " ".join(map(quote, agent_cmd(base, 1, "import shutil\n" + delete + PLAY_ON))),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    res = results_of(d)
    rows = finished_rows(d)
    assert res["status"] == "budget" and res["timesteps"] == 2000, res
    assert res["episodes"] == len([r for r in rows if not r.cut]) >= 1
    assert sum(r.l for r in rows) == res["steps"]
    no_leftovers(str(base))


# --------------------------------------------------------------- 14: checkpoint validated


@pytest.mark.parametrize("content", ["random bytes", "zip without a policy"])
def test_14_build_refuses_a_checkpoint_that_is_not_one(base: Path, content: str) -> None:
    ckpt = base / "checkpoint.pt"
    if content == "random bytes":
        ckpt.write_bytes(os.urandom(4096))
    else:
        import torch

        torch.save({"weights": torch.zeros(3)}, ckpt)
    proc = run_cli(
        "build",
        "--agent",
        "maml",
        "--checkpoint",
        ckpt,
        "--tag",
        "sonic-maml-test-never-built:latest",
        timeout=120,
    )
    one_line_error(proc, "checkpoint")


def test_13_serve_whose_results_dir_is_deleted_ends_with_a_clear_status(base: Path) -> None:
    """The standalone server: its results directory vanishes mid-run; the run goes on to the
    budget and ends `env_error`, saying why, with no traceback."""
    sock, res = base / "s", base / "r"
    server = subprocess.Popen(
        serve_cmd(sock, res, "--budget", "1500"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (sock / "sock").exists(), 60, "the server")
        env = _connect(sock)
        try:
            env.reset()
            while not env.step(env.action_space.sample())[2]:
                pass
            shutil.rmtree(res)
            assert _play(env, 1500) > 0
        finally:
            env.close()
        out, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0 and "Traceback" not in err, err
    summary = out.strip().splitlines()[-1]
    assert "status=env_error" in summary and "cannot write the records" in summary, summary
    assert "timesteps=1500" in summary
