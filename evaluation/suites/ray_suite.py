"""A suite on Ray (`suite --backend ray`): one Ray task per (agent, level, seed) run.

Each task runs the local backend's own attempt (`SuiteRunner._one`: clear the run directory,
`run_one`, record what it raised) on one node, so the run's server and agent (or its container)
share that node and behave exactly as they do locally. A task reserves what a run uses:
`cpus` CPUs (default 1), memory (the container's limit with Docker, 1 GiB locally), the GPUs
given to its agent with `--run-gpus NAME=N`, and one unit of the custom resource `docker` for
the Docker runtime, so that such runs only land on nodes started with `--resources
'{"docker": N}'` (N Docker runs at a time there).

Where results land: the driver leaves a marker file in the suite directory; a task that sees it
writes into the suite directory directly (a filesystem shared by the nodes). A task that does
not runs in a private directory on its node and returns the run's files; the driver writes them
into the suite directory, results.json last, so a half-copied run never looks finished.

Node loss: Ray re-runs a task whose node or worker died (`max_retries`); the new attempt clears
what the old one left. Ctrl-C: every task is cancelled; a running one stops its server (which
records `interrupted`) and returns, and its run is marked `interrupted`, to be redone on resume.
A cancel reaches a running task by two channels, either enough: Ray's (`ray.cancel`, delivered
as SIGINT to the task's main thread) and the driver's `CancelFlag` actor, which every task polls.
Under load, Ray's alone once reached two runs only after they had played their whole budget.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.contest import records
from evaluation.contest.records import Reading, capped_reading
from evaluation.suites.ray_backend import alive_nodes, connect
from evaluation.suites.suite import (
    LOCK_WAIT_S,
    Outcome,
    RunKey,
    SuiteConfig,
    SuiteRunner,
    check_agent_args,
    failure_results,
)
from sonic_common.errors import UserError
from sonic_common.files import write_atomic, write_json_atomic

GIB = 1024**3
LOCAL_RUN_MEMORY = 1 * GIB  # an emulator server and a small agent, measured well below this
DOCKER_RESOURCE = "docker"
MAX_RETRIES = 3  # re-runs of a task whose node or worker died
DRAIN_S = 60.0  # after Ctrl-C, how long the driver waits for the cancelled runs to report
FLAG_POLL_S = 1.0  # how often a running task reads the driver's CancelFlag
# what a run on a node without the shared filesystem sends back to the driver: a checkpoint
# fits (Rainbow's is 69 MB), an agent filling its disk does not
RETURN_MAX_BYTES = 512 * 2**20
RETURN_MAX_FILES = 10_000
NOT_RETURNED = "not-returned.txt"
NOT_RETURNED_LINES = 1000
RECORDS = frozenset({records.RESULTS, records.MONITOR, records.PROGRESS})


@dataclass
class RayOptions:
    address: str | None = None  # None: $RAY_ADDRESS, else a private one-node Ray
    cpus: float = 1.0  # CPUs one run reserves
    gpus: dict[str, float] = field(default_factory=dict)  # agent name -> GPUs per run
    shared: bool | None = None  # None: find out (the marker file); False: always copy back
    max_retries: int = MAX_RETRIES


def parse_run_gpus(items: list[str]) -> dict[str, float]:
    """`--run-gpus NAME=N` items -> {NAME: N}."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            gpus = float(value)
        except ValueError:
            gpus = -1.0
        if not sep or not name.strip() or not gpus >= 0:
            raise UserError(f"--run-gpus {item!r}: write it as NAME=N (GPUs per run, e.g. 1)")
        out[name.strip()] = gpus
    return out


def run_resources(config: SuiteConfig, agent: str, opts: RayOptions) -> dict[str, Any]:
    """The Ray task options of one run of `agent`: what the run uses on its node. Memory: the
    container's limit with Docker (the default, or the agent's own: Rainbow's replay needs 6g),
    locally the larger of a small run's and that same figure for an agent that asks for more."""
    from evaluation.agents import AGENTS
    from evaluation.contest.agent_process import parse_memory
    from evaluation.docker.runtime import DEFAULT_MEMORY

    docker = config.runtime == "docker"
    entry = AGENTS.get(config.entry(agent))
    own = entry.memory if entry is not None else None
    memory = parse_memory(own or DEFAULT_MEMORY) if docker else LOCAL_RUN_MEMORY
    if not docker and own is not None:
        memory = max(LOCAL_RUN_MEMORY, parse_memory(own) or 0)
    return {
        "num_cpus": opts.cpus,
        "num_gpus": opts.gpus.get(agent, 0.0),
        "memory": int(memory or LOCAL_RUN_MEMORY),
        "resources": {DOCKER_RESOURCE: 1} if docker else {},
        "max_retries": opts.max_retries,
        "retry_exceptions": False,
    }


def runs_that_fit(have: dict[str, float], need: dict[str, Any]) -> int:
    """How many runs asking `need` (run_resources' options) a node with resources `have`
    (ray.nodes()'s "Resources") holds at once."""
    asks = {"CPU": need["num_cpus"], "GPU": need["num_gpus"], "memory": need["memory"]}
    asks.update(need["resources"])
    # 1e-9: 1.0 / 0.1 is 9.99... in floats, and Ray fits 10
    return min(
        (math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in asks.items() if v > 0), default=0
    )


def ray_slots(config: SuiteConfig, opts: RayOptions) -> int | None:
    """How many of the suite's runs the cluster's live nodes hold at once (each node counted
    for the agent whose runs fit it least): the ETA's count of runs played together. None when
    none fits or Ray cannot say (it is only shown)."""
    try:
        ray = connect(opts.address)
        needs = [run_resources(config, agent, opts) for agent in config.agents]
        nodes = [n.get("Resources", {}) for n in alive_nodes(ray)]
        return sum(min(runs_that_fit(have, need) for need in needs) for have in nodes) or None
    except Exception:
        return None


# ---------------------------------------------------------------- on the node


class _NodeRunner(SuiteRunner):
    """The local backend's attempt at one run; with GPUs reserved, a container gets them."""

    def __init__(self, config: SuiteConfig, out: Path, gpus: bool) -> None:
        super().__init__(config, out, 1)
        self.gpus = gpus

    def spec(self, run_key: RunKey) -> Any:
        spec = super().spec(run_key)
        if self.gpus:
            spec.gpus = True
        return spec


class CancelFlag:
    """A Ray actor the driver sets on Ctrl-C and every running task reads."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def _flag_is_set(ray: Any, flag: Any) -> bool:
    """The flag's value; set too once its actor is dead (gone with the driver: its runs must
    stop). An unreadable moment (a timeout, a restarting actor) reads as unset."""
    from ray.exceptions import ActorDiedError

    try:
        return bool(ray.get(flag.is_set.remote(), timeout=10.0))
    except ActorDiedError:
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _stoppable(runner: SuiteRunner, flag: Any) -> Iterator[None]:
    """While the block runs, a cancel by either channel (Ray's SIGINT, or `flag` set; None: no
    flag) stops the run as Ctrl-C stops a local one: no new run starts, and the server gets
    SIGTERM (again each second until the block ends), records `interrupted` and tells its
    agent."""
    import ray

    def stop() -> None:
        runner.stop.set()
        with contextlib.suppress(OSError):
            runner.interrupt_children()

    done = threading.Event()

    def watch() -> None:
        while not done.wait(FLAG_POLL_S):
            if runner.stop.is_set() or (flag is not None and _flag_is_set(ray, flag)):
                stop()

    main = threading.current_thread() is threading.main_thread()  # where Ray runs tasks
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop()) if main else None
    watcher = threading.Thread(target=watch, name="cancel-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        if main:
            signal.signal(signal.SIGINT, previous)


def _attempt(runner: SuiteRunner, run_key: RunKey) -> dict[str, Any]:
    """The local backend's attempt at the run; a run cut short by a cancel is `interrupted`
    (`_one` marks it so), one cancelled before it started too."""
    res = runner._one(run_key)
    if res is not None:
        return res
    run_dir = run_key.dir(runner.out)
    res = failure_results(run_key, runner.config, "cancelled before the run started")
    res["status"] = "interrupted"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / records.RESULTS, res)
    return res


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under `root`, by its path relative to `root`, but the agent's resume
    point (a replay buffer is hundreds of megabytes to send through the object store): a run
    stopped on a node without the shared filesystem is played again from its start. The
    server's records first; then what fits RETURN_MAX_BYTES and RETURN_MAX_FILES (the agent can
    write anything, a sparse terabyte too); what is left out, or could not be read, is listed
    in NOT_RETURNED. Never raises for what the agent left: its run must not fail by it."""
    left_out: list[str] = []

    def unlisted(e: OSError) -> None:  # a directory the agent made unreadable
        left_out.append(f"{os.path.relpath(e.filename or root, root)}/: {e.strerror}")

    paths = [
        Path(top) / name for top, _, names in os.walk(root, onerror=unlisted) for name in names
    ]
    files: dict[str, bytes] = {}
    total = 0
    for p in sorted(paths, key=lambda p: (p.parent != root or p.name not in RECORDS, p)):
        rel = p.relative_to(root)
        if _resume_point_file(rel):
            continue
        try:
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):  # links, pipes, sockets: not the run's files
                continue
            if len(files) >= RETURN_MAX_FILES or total + st.st_size > RETURN_MAX_BYTES:
                left_out.append(f"{rel}: {st.st_size} bytes, over what a run sends back")
                continue
            with open(p, "rb") as f:
                files[str(rel)] = f.read(st.st_size)
        except OSError as e:  # e.g. a file the agent made unreadable
            left_out.append(f"{rel}: {e.__class__.__name__}: {e.strerror}")
            continue
        total += len(files[str(rel)])
    if left_out:
        shown = left_out[:NOT_RETURNED_LINES]
        if len(left_out) > len(shown):
            shown.append(f"... and {len(left_out) - len(shown)} more")
        files[NOT_RETURNED] = "".join(f"{line}\n" for line in shown).encode()
    return files


def _resume_point_file(rel: Path) -> bool:
    """A file of the agent's resume point: agent/resume* (resume.json and the files it names,
    by the agents' convention) and what is under agent/.resume-* (their temporary files)."""
    parts = rel.parts
    return len(parts) > 1 and parts[0] == "agent" and parts[1].startswith(("resume", ".resume-"))


def run_task(
    config_json: dict[str, Any],
    run_key: tuple[str, str, int],
    out: str,
    marker: str,
    shared: bool | None,
    gpus: bool,
    flag: Any = None,
) -> dict[str, Any]:
    """One run on this node: into the suite directory when it is shared, else into a private
    directory whose files are returned. `flag`: the driver's CancelFlag (None: Ray's cancel
    only). The cancel handler covers the whole task, the copy of the files included."""
    import ray

    config, c = SuiteConfig.from_json(config_json), RunKey(*run_key)
    node = ray.get_runtime_context().get_node_id()
    direct = (Path(out) / marker).is_file() if shared is None else shared
    base = Path(out) if direct else Path(tempfile.mkdtemp(prefix="suite-run-"))
    runner = _NodeRunner(config, base, gpus)
    try:
        with _stoppable(runner, flag):
            res = _attempt(runner, c)
            files = None if direct else read_tree(c.dir(base))
        return {"results": res, "files": files, "node": node}
    finally:
        if not direct:
            shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- the driver


def write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """A run's returned files into its directory (emptied first), results.json last."""
    lock = records.lock_dir(run_dir, wait_s=LOCK_WAIT_S) if run_dir.exists() else None
    try:
        if run_dir.exists():
            shutil.rmtree(run_dir)
    finally:
        if lock is not None:
            lock.close()
    run_dir.mkdir(parents=True)
    for rel, data in sorted(files.items(), key=lambda kv: kv[0] == records.RESULTS):
        path = run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)


OnDone = Callable[[RunKey, dict[str, Any]], None]


class RaySuiteRunner:
    """Runs a list of runs (their RunKeys) as Ray tasks; the same `run` as `SuiteRunner`."""

    def __init__(self, config: SuiteConfig, out: Path, opts: RayOptions | None = None) -> None:
        self.config = config
        self.out = Path(out)
        self.opts = opts or RayOptions()
        self.placements: dict[RunKey, str] = {}  # the node (id) each finished run ran on
        self._marker = f".ray-{uuid.uuid4().hex}"
        self._started = time.time()  # set again when `run` starts, by its marker file

    def _submit(self, task: Any, run_key: RunKey, flag: Any) -> Any:
        options = run_resources(self.config, run_key.agent, self.opts)
        return task.options(name=f"run {run_key}", **options).remote(
            self.config.to_json(),
            (run_key.agent, run_key.level, run_key.seed),
            str(self.out.resolve()),
            self._marker,
            self.opts.shared,
            options["num_gpus"] > 0,
            flag,
        )

    @staticmethod
    def _cancel_flag(ray: Any) -> Any:
        """A CancelFlag on the driver's node, with the driver (a dead flag stops the runs). The
        affinity must be hard: a soft one put it on other nodes (measured on a 3-node cluster),
        and a lost node then stopped every run."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        actor = ray.remote(num_cpus=0)(CancelFlag)
        return actor.options(name=f"cancel-{uuid.uuid4().hex}", scheduling_strategy=here).remote()

    def run(
        self,
        run_keys: list[RunKey],
        on_done: OnDone = lambda c, r: None,
        on_tick: Callable[[dict[RunKey, Reading]], None] = lambda readings: None,
        tick_s: float = 1.0,
    ) -> Outcome:
        ray = connect(self.opts.address)
        task = ray.remote(run_task)
        marker = self.out / self._marker
        marker.write_text("the suite's driver is running on Ray\n")
        self._started = marker.stat().st_mtime  # the shared filesystem's clock, as the runs'
        outcome = Outcome()
        flag = self._cancel_flag(ray)
        refs = {self._submit(task, c, flag): c for c in run_keys}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=tick_s)
                for ref in ready:
                    self._collect(ray, ref, refs[ref], outcome, on_done)
                on_tick(self.progress_readings([refs[r] for r in pending]))
        except KeyboardInterrupt:
            outcome.interrupted = True
            flag.set.remote()
            self._cancel(ray, pending, refs, outcome, on_done)
        except BaseException:  # the driver fails: its runs must not play on
            flag.set.remote()
            for ref in pending:
                ray.cancel(ref)
            raise
        finally:
            marker.unlink(missing_ok=True)
            ray.kill(flag)
        return outcome

    def _cancel(
        self,
        ray: Any,
        pending: list[Any],
        refs: dict[Any, RunKey],
        outcome: Outcome,
        on_done: OnDone,
    ) -> None:
        """After Ctrl-C: cancel every task and collect what the running ones report."""
        print(
            f"stopping: {len(pending)} runs cancelled; the running ones record `interrupted`",
            file=sys.stderr,
        )
        for ref in pending:
            ray.cancel(ref)
        deadline = time.monotonic() + DRAIN_S
        while pending and time.monotonic() < deadline:
            try:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            except KeyboardInterrupt:
                continue  # a second Ctrl-C: keep collecting
            for ref in ready:
                self._collect(ray, ref, refs[ref], outcome, on_done)
        for ref in pending:  # not back in time: force them
            ray.cancel(ref, force=True)

    def _collect(
        self, ray: Any, ref: Any, run_key: RunKey, outcome: Outcome, on_done: OnDone
    ) -> None:
        from ray.exceptions import RayError, TaskCancelledError

        try:
            value = ray.get(ref)
        except TaskCancelledError:
            return  # cancelled before it started: nothing to record, resume runs it
        except RayError as e:  # the node was lost more often than max_retries, ...
            res = failure_results(
                run_key,
                self.config,
                f"Ray: {type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}",
            )
            res["status"] = "interrupted"  # not the agent's doing: redone on resume
            write_run_files(run_key.dir(self.out), {records.RESULTS: _json_bytes(res)})
            value = {"results": res, "files": None, "node": None}
        if value["files"] is not None:
            try:
                write_run_files(run_key.dir(self.out), value["files"])
            except OSError as e:  # the driver's disk: the result is still counted and shown
                print(f"suite: could not write {run_key.dir(self.out)}: {e}", file=sys.stderr)
        if value["node"] is not None:
            self.placements[run_key] = value["node"]
        outcome.done.append((run_key, value["results"]))
        on_done(run_key, value["results"])

    def progress_readings(self, pending: list[RunKey]) -> dict[RunKey, Reading]:
        """The last progress line of each unfinished run that shows running in the suite
        directory (a shared one; a run on a node without it shows only when it is done)."""
        since = self._started
        return {
            c: capped_reading(c.dir(self.out), self.config.budget)
            for c in pending
            if shows_running(c.dir(self.out), since)
        }


def shows_running(run_dir: Path, since: float) -> bool:
    """`run_dir` was made, or its results written, since `since` (wall clock: a queued run's
    directory may hold an attempt of an earlier suite), and its results say running or are
    not there yet."""
    results = run_dir / records.RESULTS
    try:
        if not results.exists():
            return run_dir.stat().st_mtime >= since
        fresh = results.stat().st_mtime >= since
    except OSError:
        return False
    return fresh and (records.read_results(run_dir) or {}).get("status") == "running"


def _json_bytes(data: dict[str, Any]) -> bytes:
    import json

    return (json.dumps(data, indent=2) + "\n").encode()


def check_agent_args_on_ray(config: SuiteConfig, agents: set[str], address: str | None) -> None:
    """`check_agent_args` in a task on a node of the cluster, where the runs will start the
    agents (its files, its environment): a setting an agent refuses is one line before any run,
    not every run crashed."""
    if not any(config.agent_args.get(a) for a in agents):
        return
    ray = connect(address)
    task = ray.remote(num_cpus=0, max_retries=0)(_check_agent_args_task)
    try:
        ray.get(task.remote(config.to_json(), sorted(agents)))
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):
            raise UserError(str(e.cause)) from None
        raise


def _check_agent_args_task(config_json: dict[str, Any], agents: list[str]) -> None:
    check_agent_args(SuiteConfig.from_json(config_json), set(agents))


# ---------------------------------------------------------------- the command line


def add_backend_arguments(ap: Any) -> None:
    """`suite`'s --backend options."""
    ap.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="where runs execute: here, --workers at a time (local, default), or "
        "on a Ray cluster, as many at a time as its resources allow (ray)",
    )
    ap.add_argument(
        "--address",
        help="ray: the cluster to join: auto (started by `ray start` "
        "here), HOST:6379 or ray://HOST:10001 (default: $RAY_ADDRESS, else a "
        "one-node Ray on this machine)",
    )
    ap.add_argument(
        "--run-cpus",
        type=float,
        default=1.0,
        metavar="N",
        help="ray: CPUs each run reserves (default 1)",
    )
    ap.add_argument(
        "--run-gpus",
        action="append",
        default=[],
        metavar="NAME=N",
        help="ray: GPUs each run of agent NAME reserves (repeatable)",
    )


def check_backend(args: Any) -> None:
    """One-line errors for --backend options before anything is written."""
    if getattr(args, "backend", "local") == "local":
        if getattr(args, "address", None) or getattr(args, "run_gpus", None):
            raise UserError(
                "--address and --run-gpus are for --backend ray: add it, or leave them out"
            )
        return
    from evaluation.suites.ray_backend import require_ray

    require_ray()
    if not args.run_cpus > 0:
        raise UserError(f"--run-cpus must be above 0, got {args.run_cpus}")
    parse_run_gpus(args.run_gpus)


def make_runner(
    config: SuiteConfig, out: Path, workers: int, args: Any = None
) -> SuiteRunner | RaySuiteRunner:
    """The runner `--backend` names (local when `args` has none)."""
    check_backend(args)
    if getattr(args, "backend", "local") == "local":
        return SuiteRunner(config, out, workers)
    opts = RayOptions(
        address=args.address, cpus=float(args.run_cpus), gpus=parse_run_gpus(args.run_gpus)
    )
    unknown = sorted(set(opts.gpus) - set(config.agents))
    if unknown:
        raise UserError(f"--run-gpus for {', '.join(unknown)}, which is not in --agents")
    return RaySuiteRunner(config, out, opts)
