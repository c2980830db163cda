"""A suite: every (agent, level, seed) run, W at a time, resumable, then the report.

Layout of a suite directory DIR:

- `DIR/suite.json`: the suite's arguments (agents, levels, seeds, budget, ...), written when the
  suite is made; rerunning it (same arguments, or `--resume DIR`) continues where it stopped,
  and more agents or seeds given then extend it (the runs it has are kept);
- `DIR/runs/<agent>/<level slug>/seed<k>/`: one run's results directory (results.json,
  monitor.csv, progress.csv, ...), as `evaluation.contest.runner.run_one` leaves it;
- `DIR/report.md`, `DIR/summary.csv`, `DIR/curves/`: see `evaluation.reports.report`.

Seeds are 0..K-1 for `--seeds K`, or the listed ones (`--seeds 3,4,5`). A run is done, and
skipped on resume, when its results.json exists with a
final status other than `interrupted`; a stopped run (`interrupted`, or `running` when the suite
was killed) is done again, from its agent's resume point when it left one
(evaluation/contest/resume.py); failed runs (FAILED) are kept unless `retry_failed`,
which runs them again. Each `run_one` starts its own server and agent processes, so a thread
pool of W threads runs W runs at once. Ctrl-C sends SIGTERM to the running runs' processes (the
server then records `interrupted`), waits for them, and keeps every finished run.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from evaluation.agents import AGENTS, agent_entry
from evaluation.contest import records
from evaluation.contest.records import Reading, capped_reading
from evaluation.contest.resume import ResumePoint
from evaluation.suites.seeds import parse_seeds
from roms_setup.levels import Level
from sonic_common.agent_env import CHECK_ONLY_ENV, OUTPUT_DIR_ENV, RESUME_FILE, SOCKET_DIR_ENV
from sonic_common.errors import UserError
from sonic_common.files import write_atomic, write_json_atomic

SUITE_JSON = "suite.json"
SUITE_VERSION = 1
# statuses after which a run is redone with retry_failed (budget, wallclock and agent_exited are
# legitimate ends of a contest run and always kept)
FAILED = frozenset({"agent_crashed", "protocol_error", "oom", "env_error", "idle_timeout"})
REDO = records.STOPPED  # always run again ("running": the suite died)
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LOCK_WAIT_S = 60.0  # how long a run waits for a previous attempt to let go of its directory
CHECK_ARGS_S = 300.0  # an agent started with its --agent-args before the runs (torch's import)


@dataclass
class SuiteConfig:
    agents: list[str]
    levels: list[str]  # level ids, Game:State
    levels_spec: str  # what the user wrote: a set name, a CSV path or a list
    seeds: list[int]  # `--seeds K` gives 0..K-1 (an int in suite.json of old suites)
    budget: int
    wallclock_s: float
    runtime: str = "local"
    agent_args: dict[str, list[str]] = field(default_factory=dict)
    record: bool = False
    # NAME=ENTRY in --agents: NAME runs agent ENTRY (python -m agent.ENTRY, or its image)
    aliases: dict[str, str] = field(default_factory=dict)
    # docker: NAME's image, when not the default sonic-maml-agent-<ENTRY>:latest (e.g. an image
    # with a checkpoint baked in, made by `evaluation build --checkpoint ... --tag TAG`)
    images: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.agents:
            raise UserError("--agents names no agent: give e.g. --agents random,jerk")
        if not self.levels:
            raise UserError("--levels names no level: give a level set, a CSV or Game:State")
        twice = sorted({lv for lv in self.levels if self.levels.count(lv) > 1})
        if twice:
            raise UserError(
                f"--levels names {', '.join(twice)} more than once: list each "
                "level once (--seeds gives repeated runs)"
            )
        for a in self.agents:
            if not AGENT_NAME.match(a):
                raise UserError(f"agent name {a!r}: use letters, digits, '_', '.', '-'")
        if len(set(self.agents)) != len(self.agents):
            raise UserError(f"--agents {','.join(self.agents)} names an agent twice")
        unknown = sorted(set(self.agent_args) - set(self.agents))
        if unknown:
            raise UserError(f"--agent-args for {', '.join(unknown)}, which is not in --agents")
        self.seeds = parse_seeds(self.seeds)
        if self.budget < 1:
            raise UserError(f"--budget {self.budget}: give at least 1 timestep per run")
        if not (math.isfinite(self.wallclock_s) and self.wallclock_s > 0):
            raise UserError(
                f"--wallclock {self.wallclock_s}: give a finite number of seconds above 0"
            )
        if self.runtime not in ("local", "docker"):
            raise UserError(f"--runtime {self.runtime!r}: choose local or docker")
        for name, entry in self.aliases.items():
            if name not in self.agents or not AGENT_NAME.match(entry):
                raise UserError(f"agent alias {name}={entry}: write NAME=ENTRY in --agents")
        unknown = sorted(set(self.images) - set(self.agents))
        if unknown:
            raise UserError(f"--image for {', '.join(unknown)}, which is not in --agents")

    def entry(self, agent: str) -> str:
        """The agent program NAME runs (itself unless NAME=ENTRY was given)."""
        return self.aliases.get(agent, agent)

    def to_json(self) -> dict[str, Any]:
        return {"version": SUITE_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SuiteConfig:
        fields = cls.__dataclass_fields__
        config = cls(**{k: v for k, v in data.items() if k in fields})
        config.seeds = parse_seeds(config.seeds)
        return config

    def run_keys(self) -> Iterator[RunKey]:
        """All runs, seed-major so that a partial suite covers every agent and level early."""
        for seed in self.seeds:
            for level in self.levels:
                for agent in self.agents:
                    yield RunKey(agent, level, seed)


@dataclass(frozen=True)
class RunKey:
    """One run of a suite: which agent plays which level with which seed (its directory under
    the suite's `out`, and its name in progress lines)."""

    agent: str
    level: str
    seed: int

    def dir(self, out: Path) -> Path:
        return out / "runs" / self.agent / Level.parse(self.level).slug / f"seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.agent} {self.level} seed{self.seed}"


# ---------------------------------------------------------------- suite.json

IDENTITY = (
    "agents",
    "levels",
    "seeds",
    "budget",
    "wallclock_s",
    "runtime",
    "agent_args",
    "record",
    "aliases",
    "images",
)


# a suite grows by more agents or seeds, and keeps the runs it has
PER_AGENT = ("agent_args", "aliases", "images")  # new agents add entries; old ones keep theirs


def extend(saved: SuiteConfig, given: dict[str, Any]) -> SuiteConfig | None:
    """The saved suite grown by the agents and seeds `given` adds (None when it adds none)."""
    agents = [a for a in given.get("agents", []) if a not in saved.agents]
    seeds = [x for x in parse_seeds(given.get("seeds", saved.seeds)) if x not in saved.seeds]
    if not agents and not seeds:
        return None
    grown = SuiteConfig.from_json(saved.to_json())
    grown.agents += agents
    grown.seeds += seeds
    for key in PER_AGENT:
        getattr(grown, key).update({a: v for a, v in given.get(key, {}).items() if a in agents})
    grown.validate()
    return grown


def conflicts(saved: SuiteConfig, given: dict[str, Any]) -> list[str]:
    """The arguments in `given` (only those the user gave) that differ from the saved suite.

    Seeds, and agents that only add to the saved ones, do not conflict: see `extend`."""
    out = []
    given = {**given, "seeds": parse_seeds(given["seeds"])} if "seeds" in given else given
    for key in IDENTITY:
        if key == "seeds" or (key == "agents" and set(saved.agents) <= set(given.get(key, []))):
            continue  # seeds the suite lacks are added; agents, when all the old ones are named
        if key in PER_AGENT and key in given:
            mine = getattr(saved, key)
            if any(a in given[key] and given[key][a] != mine.get(a) for a in saved.agents):
                out.append(f"{key} {given[key]!r} (the suite has {mine!r})")
            continue
        if key in given and given[key] != getattr(saved, key):
            out.append(f"{key} {given[key]!r} (the suite has {getattr(saved, key)!r})")
    return out


def open_suite(
    out: Path, given: dict[str, Any], check: Callable[[SuiteConfig], None] | None = None
) -> SuiteConfig:
    """The suite in `out`: the saved one (checking `given` against it) or a new one from `given`.

    `given` holds the SuiteConfig fields the user gave; a new suite needs them all. `check`
    (e.g. `preflight`) runs before a new suite.json is written, so a typo leaves nothing behind.
    """
    path = out / SUITE_JSON
    if path.is_file():
        try:
            saved = SuiteConfig.from_json(json.loads(path.read_text()))
        except (ValueError, TypeError, AttributeError) as e:
            raise UserError(f"{path} is not a suite file ({e}): choose another --out") from None
        bad = conflicts(saved, given)
        if bad:
            raise UserError(
                f"{out} holds a suite made with other arguments: {'; '.join(bad)}. "
                f"Continue it with `suite --resume {out}`, or choose another --out"
            )
        grown = extend(saved, given)
        if grown is not None:
            if check is not None:
                check(grown)
            write_atomic(path, json.dumps(grown.to_json(), indent=2) + "\n")
            return grown
        if check is not None:
            check(saved)
        return saved
    missing = [k for k in ("agents", "levels") if k not in given]
    if missing:
        raise UserError(
            f"{path} does not exist: a new suite needs {' and '.join('--' + m for m in missing)}"
        )
    config = SuiteConfig(**given)
    config.validate()
    if check is not None:
        check(config)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(config.to_json(), indent=2) + "\n")
    return config


@contextmanager
def suite_lock(out: Path) -> Iterator[None]:
    """Hold `out/.suite.lock` while a suite runs there: two suites on one directory would
    redo each other's runs."""
    path = out / ".suite.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise UserError(
                f"another suite (pid {pid}) is running in {out}: wait for it or "
                "stop it (Ctrl-C) first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- which runs to do


def run_state(run_dir: Path) -> str | None:
    """The status of the run recorded in `run_dir`; None when there is none."""
    res = records.read_results(run_dir)
    return None if res is None else str(res.get("status"))


def resumable_run(run_dir: Path) -> bool:
    """The run was stopped after its agent left a resume point: it continues from there
    (the runner checks the point against the records, and plays the run again if it does not
    match)."""
    return run_state(run_dir) in REDO and (run_dir / "agent" / RESUME_FILE).is_file()


def kept_progress(run_keys: list[RunKey], runner: SuiteRunner) -> dict[RunKey, Reading]:
    """Where each of the runs that will continue from a resume point continues, as the runner
    decides it (`resume_point_for`): the timesteps kept (the agent's steps and one reset per
    episode, as the server counts them) and the run's clock there."""
    from evaluation.contest.runner import resume_point_for

    kept = {}
    for key in run_keys:
        spec = runner.spec(key)
        if not (resumable_run(key.dir(runner.out)) and hasattr(spec, "resume")):
            continue
        point = resume_point_for(replace(spec, resume=True))
        if isinstance(point, ResumePoint):
            kept[key] = Reading(point.timesteps, point.elapsed_s)
    return kept


def todo(config: SuiteConfig, out: Path, retry_failed: bool) -> tuple[list[RunKey], list[RunKey]]:
    """(runs to do, runs already done) of the suite."""
    do, done = [], []
    for c in config.run_keys():
        status = run_state(c.dir(out))
        if status is None or status in REDO or (retry_failed and status in FAILED):
            do.append(c)
        else:
            done.append(c)
    return do, done


# ---------------------------------------------------------------- running


def server_pids() -> list[int]:
    """Ids of this process' children that are environment servers (`-m evaluation serve`).

    Only servers: a server stopped by SIGTERM records `interrupted` and tells its agent, while
    an agent stopped first would make the run look like the agent's failure.
    """
    me, kids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()
            if len(fields) < 2 or int(fields[1]) != me:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"evaluation" in argv and b"serve" in argv:
            kids.append(int(entry.name))
    return kids


ArgsCheck = Callable[["SuiteConfig", set[str]], None]


def preflight(
    config: SuiteConfig,
    here: bool = True,
    left: set[str] | None = None,
    check_args: ArgsCheck | None = None,
) -> None:
    """Fail before any run for what would fail every run: a level not playable, no agent; for
    the agents with runs `left` (default: all), arguments an agent refuses (local runtime:
    `check_args`, by default `check_agent_args` when the runs start here; Ray's runner gives its
    own, which checks on a node); when the runs start here, no Docker daemon or an image not
    built (Docker)."""
    from roms_setup.installed import require_playable

    for lv in config.levels:
        require_playable(Level.parse(lv))
    left = set(config.agents) if left is None else left
    if config.runtime == "local":
        for a in config.agents:
            agent_entry(config.entry(a))  # a one-line error for an unknown agent
        checker = check_args or (check_agent_args if here else None)
        if checker is not None:
            checker(config, left)
    elif here and left:
        require_images(config, left)


def check_agent_args(config: SuiteConfig, agents: set[str]) -> None:
    """Each of `agents` given --agent-args started once as its runs start it, to where it would
    connect ($AGENT_CHECK_ONLY): a typo in a setting is one line now, not every run crashed."""
    import subprocess
    import sys

    from evaluation.contest.runner import local_agent_cmd, local_agent_env

    runner = SuiteRunner(config, Path("."), 1)
    for a in sorted(agents & {a for a, args in config.agent_args.items() if args}):
        cmd = local_agent_cmd(runner.spec(RunKey(a, config.levels[0], config.seeds[0])))
        env = local_agent_env({CHECK_ONLY_ENV: "1"})
        env.pop(SOCKET_DIR_ENV, None)
        env.pop(OUTPUT_DIR_ENV, None)
        print(f"checking agent {a}'s --agent-args ...", file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=CHECK_ARGS_S
            )
        except subprocess.TimeoutExpired:
            print(f"  not answered in {CHECK_ARGS_S:.0f} s: not checked", file=sys.stderr)
            continue
        if proc.returncode != 0:
            said = [line for line in proc.stderr.splitlines() if line.strip()]
            raise UserError(
                f"agent {a} refuses its --agent-args ({' '.join(config.agent_args[a])}): "
                f"{said[-1].removeprefix('error: ') if said else f'exit {proc.returncode}'}"
            )


def agent_image(config: SuiteConfig, agent: str) -> str:
    """The image a Docker run of `agent` starts (its --image, else its entry's default)."""
    from evaluation.contest.runner import IMAGE_PREFIX

    return config.images.get(agent) or f"{IMAGE_PREFIX}{config.entry(agent)}:latest"


def require_images(config: SuiteConfig, agents: set[str]) -> None:
    """A one-line error for a Docker suite that has no daemon or lacks one of `agents`' image."""
    from evaluation.docker.daemon import docker_client
    from evaluation.docker.images import image_exists

    client = docker_client()  # UserError naming the fix when no daemon answers
    for a in [a for a in config.agents if a in agents]:
        tag = agent_image(config, a)
        if image_exists(client, tag):
            continue
        if a in config.images:
            raise UserError(f"--image {a}={tag}: no such image here: build it or fix the tag")
        entry = AGENTS.get(config.entry(a))
        if entry is not None and not entry.image:
            raise UserError(f"agent {a} runs only locally (it has no image): use --runtime local")
        raise UserError(
            f"agent {a}: its image {tag} is not built: run `python -m evaluation build "
            f"--agent {config.entry(a)}` (or give --image {a}=TAG)"
        )


def _write_results(run_dir: Path, res: dict[str, Any]) -> None:
    """The suite's own results.json for a run; a full disk is said in a line, not raised (the
    result is still returned, and the suite goes on)."""
    try:
        write_json_atomic(run_dir / records.RESULTS, res)
    except OSError as e:
        print(f"suite: could not write {run_dir / records.RESULTS}: {e}", file=sys.stderr)


def failure_results(run_key: RunKey, config: SuiteConfig, error: str) -> dict[str, Any]:
    """results.json for a run whose run_one raised instead of returning."""
    return {
        "level": run_key.level,
        "agent": run_key.agent,
        "seed": run_key.seed,
        "score": None,
        "episodes": 0,
        "timesteps": 0,
        "wallclock_s": 0.0,
        "status": "env_error",
        "budget": config.budget,
        "runtime": config.runtime,
        "error": error,
    }


RunOne = Callable[[Any], dict[str, Any]]


@dataclass
class Outcome:
    done: list[tuple[RunKey, dict[str, Any]]] = field(default_factory=list)
    interrupted: bool = False


class SuiteRunner:
    """Runs a list of runs (their RunKeys) on a thread pool; reports progress through `on_*`
    callbacks."""

    def __init__(
        self,
        config: SuiteConfig,
        out: Path,
        workers: int,
        run_one: RunOne | None = None,
        make_spec: Callable[..., Any] | None = None,
    ):
        self.config = config
        self.out = out
        self.workers = max(1, workers)
        self._run_one = run_one
        self._make_spec = make_spec
        self.stop = threading.Event()
        self.running: dict[RunKey, Path] = {}
        self._lock = threading.Lock()

    def spec(self, run_key: RunKey) -> Any:
        if self._make_spec is not None:
            return self._make_spec(self.config, run_key, run_key.dir(self.out))
        import sys

        from evaluation.contest.runner import IMAGE_PREFIX, RunSpec

        entry = self.config.entry(run_key.agent)
        aliased = entry != run_key.agent
        return RunSpec(
            agent=run_key.agent,
            level=Level.parse(run_key.level),
            seed=run_key.seed,
            budget=self.config.budget,
            results_dir=run_key.dir(self.out),
            runtime=self.config.runtime,
            wallclock_s=self.config.wallclock_s,
            record=self.config.record,
            agent_args=list(self.config.agent_args.get(run_key.agent, [])),
            agent_cmd=(
                [sys.executable, "-P", "-m", agent_entry(entry).module] if aliased else None
            ),
            image=self.config.images.get(run_key.agent)
            or (f"{IMAGE_PREFIX}{entry}:latest" if aliased else None),
        )

    def _one(self, run_key: RunKey) -> dict[str, Any] | None:
        if self.stop.is_set():
            return None
        run_dir = run_key.dir(self.out)
        try:
            resumable = self._prepare(run_dir)
        except OSError as e:  # a full disk, or files of an earlier attempt it cannot remove
            res = failure_results(
                run_key,
                self.config,
                f"could not prepare {run_dir} ({e.__class__.__name__}: {e}): free some space "
                "or remove the directory by hand, then resume the suite",
            )
            return {**res, "status": "interrupted"}  # not the agent's result: redone
        if resumable is None:  # stopped while it waited for the lock
            return None
        with self._lock:
            self.running[run_key] = run_dir
        try:
            if self._run_one is not None:
                run_one = self._run_one
            else:
                from evaluation.contest.runner import run_one
            try:
                spec = self.spec(run_key)
                if resumable and hasattr(spec, "resume"):  # a RunSpec
                    spec = replace(spec, resume=True)
                res = run_one(spec)
            except Exception as e:  # e.g. its server stopped before it listened
                res = failure_results(run_key, self.config, f"{type(e).__name__}: {e}")
                if resumable:  # still stopped at its point: the next resume continues it
                    res = {**(records.read_results(run_dir) or res), "status": "interrupted"}
                    res["error"] = f"could not continue: {type(e).__name__}: {e}"
                _write_results(run_dir, res)
            return self._mark_interrupted(run_dir, res)
        finally:
            with self._lock:
                self.running.pop(run_key, None)

    def _prepare(self, run_dir: Path) -> bool | None:
        """Make the run's directory ready: an earlier attempt's orphaned container removed, its
        directory cleared (or kept, to continue from its agent's resume point: True); None when
        the suite was stopped meanwhile."""
        resumable = resumable_run(run_dir)
        if run_dir.exists() and self.config.runtime == "docker" and self._run_one is None:
            # an earlier attempt's orphaned container must not write there any more
            from evaluation.docker.runtime import remove_earlier_containers

            remove_earlier_containers(run_dir / "agent", run_dir / "agent.log")
        if run_dir.exists():
            # an interrupted or failed attempt: start afresh (or continue it from its agent's
            # resume point), once the previous attempt's server (an orphan of a killed suite
            # ends within a second) has let go of it
            lock = records.lock_dir(run_dir, wait_s=LOCK_WAIT_S)
            try:
                if not resumable:
                    shutil.rmtree(run_dir)
            finally:
                lock.close()
            if self.stop.is_set():
                return None
        run_dir.mkdir(parents=True, exist_ok=resumable)
        return resumable

    def _mark_interrupted(self, run_dir: Path, res: dict[str, Any]) -> dict[str, Any]:
        """A run cut short by the suite's stop is `interrupted`, whatever its agent did then.

        When the server stops, its agent learns it at once and may exit with an error before
        the server has exited; the run must still be redone on resume, not kept as the agent's
        failure. The status the runner gave is kept as `status_at_interrupt`.
        """
        status = res.get("status")
        stopped = self.stop.is_set() or str(res.get("error") or "").startswith(
            "server stopped by SIG"
        )
        if not stopped or status in ("budget", "wallclock", "interrupted"):
            return res
        res = {**res, "status": "interrupted", "status_at_interrupt": status}
        _write_results(run_dir, res)
        return res

    def progress_readings(self) -> dict[RunKey, Reading]:
        """The last progress line of each running run."""
        with self._lock:
            dirs = dict(self.running)
        return {k: capped_reading(d, self.config.budget) for k, d in dirs.items()}

    def interrupt_children(self) -> None:
        for pid in server_pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(
        self,
        run_keys: list[RunKey],
        on_done: Callable[[RunKey, dict[str, Any]], None] = lambda c, r: None,
        on_tick: Callable[[dict[RunKey, Reading]], None] = lambda readings: None,
        tick_s: float = 1.0,
    ) -> Outcome:
        outcome = Outcome()
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="run")
        futures: dict[Future[dict[str, Any] | None], RunKey] = {
            pool.submit(self._one, c): c for c in run_keys
        }
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=tick_s, return_when=FIRST_COMPLETED)
                for f in finished:
                    self._collect(f, futures[f], outcome, on_done)
                on_tick(self.progress_readings())
        except KeyboardInterrupt:
            outcome.interrupted = True
            self.stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            self._drain(pending, futures, outcome, on_done)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return outcome

    def _drain(
        self,
        pending: set[Future[dict[str, Any] | None]],
        futures: dict[Future[dict[str, Any] | None], RunKey],
        outcome: Outcome,
        on_done: Callable[[RunKey, dict[str, Any]], None],
    ) -> None:
        """After Ctrl-C: stop the running runs' processes and wait for their results."""
        deadline = time.monotonic() + 60.0
        while True:
            # futures cancelled by shutdown(cancel_futures=True) never count as done in wait()
            pending = {f for f in pending if not f.cancelled()}
            if not pending:
                return
            self.interrupt_children()
            try:
                finished, pending = wait(pending, timeout=2.0)
            except KeyboardInterrupt:
                continue  # a second Ctrl-C: keep stopping them
            for f in finished:
                self._collect(f, futures[f], outcome, on_done)
            if not pending or time.monotonic() > deadline:
                return

    @staticmethod
    def _collect(
        f: Future[dict[str, Any] | None],
        run_key: RunKey,
        outcome: Outcome,
        on_done: Callable[[RunKey, dict[str, Any]], None],
    ) -> None:
        if f.cancelled():
            return
        res = f.result()
        if res is not None:
            outcome.done.append((run_key, res))
            on_done(run_key, res)
