"""The environment server on a real emulator (Airstriker), through raw sockets and RemoteEnv.

The raw client below is written from the original message format only (plain socket, JSON,
form feeds, np.memmap of `ob`), so it checks the wire, not our own client against itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
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

from evaluation.contest.client import BudgetExhausted, RemoteEnv, RemoteEnvClosed, RemoteEnvError
from evaluation.contest.records import read_monitor

ROOT = Path(__file__).resolve().parents[1]
LEVEL = "Airstriker-Genesis-v0:Level1"


class Server:
    def __init__(self, sock_dir: Path, results_dir: Path, *args: str, level: str = LEVEL) -> None:
        self.sock_dir = sock_dir
        self.results_dir = results_dir
        self.log = results_dir.parent / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "evaluation",
                    "serve",
                    "--level",
                    level,
                    "--socket",
                    str(sock_dir),
                    "--results-dir",
                    str(results_dir),
                    *args,
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        end = time.monotonic() + 120  # as the runner allows (SERVER_START_TIMEOUT_S)
        while not (sock_dir / "sock").exists():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < end, "server did not start"
            time.sleep(0.02)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def results(self) -> dict[str, Any]:
        return json.loads((self.results_dir / "results.json").read_text())


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path]]:
    base = Path(tempfile.mkdtemp(prefix="srv-"))  # short: Unix socket paths max 107 bytes
    yield base / "s", base / "r"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def start(dirs: tuple[Path, Path]) -> Iterator[Any]:
    servers: list[Server] = []

    def _start(*args: str, level: str = LEVEL) -> Server:
        server = Server(dirs[0], dirs[1], *args, level=level)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


class RawClient:
    """The original gym-remote client's bytes, by hand."""

    def __init__(self, sock_dir: Path) -> None:
        self.dir = sock_dir
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(sock_dir / "sock"))
        self.buffer = b""
        self.description = self.recv()
        assert self.description["type"] == "description"
        shape = eval(self.description["content"]["ob"][1], {}, {"dtype": np.dtype})
        # exactly as the original client: mode w+ (it truncates and re-extends the file)
        self.ob = np.memmap(sock_dir / "ob", mode="w+", dtype=shape[1], shape=shape[0])

    def send(self, type_: str, content: Any) -> None:
        self.sock.sendall(json.dumps({"type": type_, "content": content}).encode() + b"\f")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> dict[str, Any]:
        while b"\f" not in self.buffer:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError("server hung up")
            self.buffer += data
        message, _, self.buffer = self.buffer.partition(b"\f")
        return json.loads(message.decode("utf8"))

    def request(self, content: dict[str, Any]) -> dict[str, Any]:
        self.send("update", content)
        return self.recv()


def play_until_done(client: RawClient, rng: np.random.Generator) -> tuple[float, int, int]:
    total, steps = 0.0, 0
    ac = 0
    while True:
        ac = int(rng.integers(0, 4096))
        reply = client.request({"ac": ac})
        assert reply["type"] == "update", reply
        assert set(reply["content"]) == {"ob", "reward", "done"}
        total += reply["content"]["reward"]
        steps += 1
        if reply["content"]["done"]:
            return total, steps, ac


def test_description_play_until_done_and_reset(start: Any, dirs: tuple[Path, Path]) -> None:
    server = start("--seed", "1")
    sock_dir = dirs[0]
    assert stat.S_IMODE(os.stat(sock_dir / "sock").st_mode) == 0o666
    client = RawClient(sock_dir)
    assert stat.S_IMODE(os.stat(sock_dir / "ob").st_mode) == 0o666
    content = client.description["content"]
    assert content["ac"] == [
        "int_fold",
        "[2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],",
        {"n": "12", "type": "MultiBinary"},
    ]
    assert content["ob"] == [
        "np",
        '(224, 320, 3), dtype("|u1")',
        {"type": "Box", "shape": "(224, 320, 3)"},
    ]
    assert content["reward"][0] == "float" and content["done"][0] == "bool"
    assert content["reset"] == ["bool", None, {}]

    reply = client.request({"reset": True})
    assert reply == {
        "type": "update",
        "content": {"ob": True, "reset": False, "reward": 0, "done": False},
    }
    first = np.array(client.ob)
    assert first.any(), "the observation file should hold the first frame"
    rng = np.random.default_rng(0)
    total, steps, last_ac = play_until_done(client, rng)
    assert 10 < steps < 4500
    assert not np.array_equal(first, client.ob), "frames should change while playing"
    # The original client re-sends the last `ac` with the reset: that is a reset.
    reply = client.request({"ac": last_ac, "reset": True})
    assert reply["content"] == {"ob": True, "reset": False, "reward": 0, "done": False}
    client.request({"ac": 3})
    client.send("close", {"reason": None})  # the original client's goodbye
    assert server.wait() == 0
    results = server.results()
    assert results["status"] == "agent_exited"
    assert results["timesteps"] == steps + 3  # two resets and one step count too
    assert results["episodes"] == 1 and results["seed"] == 1
    meta, rows = read_monitor(dirs[1] / "monitor.csv")
    assert meta["level"] == LEVEL and meta["seed"] == 1
    assert rows[0].l == steps and rows[0].r == pytest.approx(total) and not rows[0].cut
    assert rows[1].cut and rows[1].l == 1
    assert results["score"] == pytest.approx(total)


def test_budget_is_exact(start: Any, dirs: tuple[Path, Path]) -> None:
    server = start("--budget", "50")
    client = RawClient(dirs[0])
    served, done = 0, True
    rng = np.random.default_rng(1)
    while True:
        reply = client.request({"reset": True} if done else {"ac": int(rng.integers(0, 4096))})
        if reply["type"] != "update":
            break
        served += 1
        done = reply["content"]["done"]
    assert reply == {
        "type": "close",
        "content": {"reason": "timestep budget of 50 used up", "exception": 1},
    }
    assert served == 50
    assert server.wait() == 0
    results = server.results()
    assert results["status"] == "budget" and results["timesteps"] == 50
    assert results["steps"] + results["resets"] == 50
    _, rows = read_monitor(dirs[1] / "monitor.csv")
    assert sum(row.l for row in rows) == results["steps"]


def test_early_reset_and_step_after_done_are_exceptions(
    start: Any, dirs: tuple[Path, Path]
) -> None:
    server = start()
    client = RawClient(dirs[0])
    assert client.request({"ac": 1})["content"]["exception"] == 5  # a step before any reset
    assert client.request({"reset": True})["type"] == "update"
    assert client.request({"ac": 1})["type"] == "update"
    reply = client.request({"ac": 1, "reset": True})
    assert reply["type"] == "exception" and reply["content"]["exception"] == 5
    assert "reset" in reply["content"]["reason"]
    # the connection goes on
    _, steps, _ = play_until_done(client, np.random.default_rng(2))
    reply = client.request({"ac": 2})
    assert reply["type"] == "exception" and reply["content"]["exception"] == 5
    assert client.request({"reset": True})["type"] == "update"
    client.sock.close()
    assert server.wait() == 0
    results = server.results()
    assert results["status"] == "agent_exited"
    assert results["timesteps"] == 1 + 1 + steps + 1  # exceptions are not timesteps
    assert results["close_exception"] == 3  # ClientDisconnectError


def test_remote_env_client(start: Any, dirs: tuple[Path, Path]) -> None:
    server = start("--budget", "30", "--seed", "4")
    env = RemoteEnv(dirs[0])
    assert env.action_space.n == 12 and env.observation_space.shape == (224, 320, 3)
    ob, info = env.reset()
    assert ob.dtype == np.uint8 and ob.shape == (224, 320, 3) and info == {}
    ob2, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert ob is not ob2  # copies: the first frame must not change under the agent
    with pytest.raises(RemoteEnvError) as err:
        env.reset()
    assert err.value.exception_id == 5
    with pytest.raises(BudgetExhausted) as closed:
        for _ in range(100):
            env.step(env.action_space.sample())
    assert isinstance(closed.value, RemoteEnvClosed) and closed.value.exception_id == 1
    with pytest.raises(BudgetExhausted):
        env.step(env.action_space.sample())  # stays closed
    env.close()
    assert server.wait() == 0
    assert server.results()["timesteps"] == 30


def test_wallclock_limit(start: Any, dirs: tuple[Path, Path]) -> None:
    server = start("--wallclock", "6")  # well past the start on a loaded machine
    env = RemoteEnv(dirs[0])
    with pytest.raises(BudgetExhausted) as closed:
        env.reset()
        while True:
            _, _, done, _, _ = env.step(env.action_space.sample())
            if done:
                env.reset()
    assert closed.value.exception_id == 2
    assert server.wait() == 0
    results = server.results()
    assert results["status"] == "wallclock" and results["timesteps"] > 0
    assert results["wallclock_limit_s"] == 6.0  # the limit it was given
    assert results["wallclock_s"] >= 5.0  # not before it, by the server's own clock


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"\x00\xff\xfegarbage\f", "not UTF-8 JSON"),
        (b'{"type": "bogus", "content": {}}\f', "unknown message type"),
        (b'{"type": "update", "content": {"ac": 4096}}\f', "bad action"),
        (b'{"type": "update", "content": {"ac": "left"}}\f', "bad action"),
        (b'{"type": "update", "content": {"ob": 1}}\f', "unknown channel"),
    ],
)
def test_malformed_messages_end_the_run_cleanly(
    start: Any, dirs: tuple[Path, Path], payload: bytes, fragment: str
) -> None:
    server = start()
    client = RawClient(dirs[0])
    client.request({"reset": True})
    client.send_raw(payload)
    reply = client.recv()
    assert reply["type"] == "close" and reply["content"]["exception"] == 0
    assert server.wait() == 0
    results = server.results()
    assert results["status"] == "protocol_error"
    assert fragment in results["error"]
    assert "Traceback" not in server.log.read_text()


def test_oversized_message_is_cut_off(start: Any, dirs: tuple[Path, Path]) -> None:
    server = start()
    client = RawClient(dirs[0])
    try:
        client.send_raw(b"a" * (3 << 20))  # 3 MiB, no form feed
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may hang up before all of it is sent
    reply = client.recv()
    assert reply["type"] == "close" and reply["content"]["exception"] == 0
    assert server.wait() == 0
    results = server.results()
    assert results["status"] == "protocol_error" and "larger than" in results["error"]


def test_one_client_only(start: Any, dirs: tuple[Path, Path]) -> None:
    server = start("--budget", "5")
    client = RawClient(dirs[0])
    second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    second.settimeout(5)
    with pytest.raises(OSError):  # refused (or hung up on without a description)
        second.connect(str(dirs[0] / "sock"))
        if not second.recv(4096):
            raise ConnectionResetError("closed without a description")
    second.close()
    assert client.request({"reset": True})["type"] == "update"  # the first goes on
    client.sock.close()
    assert server.wait() == 0


def test_idle_timeout(start: Any, dirs: tuple[Path, Path]) -> None:
    server = start("--idle-timeout", "1")
    client = RawClient(dirs[0])
    client.request({"reset": True})
    t0 = time.monotonic()
    reply = client.recv()  # stay silent
    assert reply["type"] == "close" and reply["content"]["exception"] == 0
    assert time.monotonic() - t0 > 0.9  # not before its limit (no upper bound: load only delays)
    assert server.wait() == 0
    assert server.results()["status"] == "idle_timeout"


def trickle(client: RawClient, stop: threading.Event) -> None:
    """A message never finished: one byte (JSON's whitespace) every 0.1 s."""
    client.send_raw(b'{"type": "update", "content": {"reset": true}')
    while not stop.wait(0.1):
        try:
            client.send_raw(b" ")
        except OSError:
            return


@pytest.mark.parametrize(
    "args, status",
    [
        (("--wallclock", "4"), "wallclock"),
        (("--idle-timeout", "1"), "idle_timeout"),
        ((), "interrupted"),
    ],
)
def test_an_agent_trickling_a_message_does_not_stop_the_servers_checks(
    start: Any, dirs: tuple[Path, Path], args: tuple[str, ...], status: str
) -> None:
    """Bytes that keep the connection readable, never a whole message: the wall clock, the
    idle time (whole messages count as hearing from the agent) and a SIGTERM still end it."""
    server = start(*args)
    client = RawClient(dirs[0])
    client.request({"reset": True})
    stop = threading.Event()
    threading.Thread(target=trickle, args=(client, stop), daemon=True).start()
    try:
        if status == "interrupted":
            time.sleep(1.0)
            server.proc.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        stop.set()
    assert server.results()["status"] == status


def test_sigterm_writes_results_and_the_cut_episode(start: Any, dirs: tuple[Path, Path]) -> None:
    server = start()
    client = RawClient(dirs[0])
    client.request({"reset": True})
    for _ in range(7):
        client.request({"ac": 0})
    server.proc.send_signal(signal.SIGTERM)
    reply = client.recv()
    assert reply["type"] == "close" and reply["content"]["exception"] == 4
    assert server.wait() == 0
    results = server.results()
    assert results["status"] == "interrupted" and results["timesteps"] == 8
    assert results["episodes"] == 0 and results["score"] == results["cut_episode"]["r"]
    _, rows = read_monitor(dirs[1] / "monitor.csv")
    assert [(row.l, row.cut) for row in rows] == [(7, True)]
    assert not (dirs[0] / "sock").exists() and not (dirs[0] / "ob").exists()


def test_bad_level_is_a_one_line_error(dirs: tuple[Path, Path]) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation",
            "serve",
            "--level",
            "NoSuchGame-Genesis-v0:Level1",
            "--socket",
            str(dirs[0]),
            "--results-dir",
            str(dirs[1]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown game") and "Traceback" not in proc.stderr


def test_atari_game_is_described_from_its_spaces(
    start: Any, dirs: tuple[Path, Path], atari_roms: None
) -> None:
    server = start("--budget", "3", level="Breakout-Atari2600-v0:Start")
    env = RemoteEnv(dirs[0])
    assert env.description["ac"] == [
        "int_fold",
        "[2, 2, 2, 2, 2, 2, 2, 2],",
        {"n": "8", "type": "MultiBinary"},
    ]
    assert env.observation_space.shape == (210, 160, 3)
    ob, _ = env.reset()
    assert ob.shape == (210, 160, 3)
    env.step(env.action_space.sample())
    env.step(env.action_space.sample())
    with pytest.raises(BudgetExhausted):
        env.step(env.action_space.sample())
    env.close()
    assert server.wait() == 0 and server.results()["timesteps"] == 3
