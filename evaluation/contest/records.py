"""What a run leaves behind: `monitor.csv`, `progress.csv` and `results.json`, and its score.

monitor.csv — first line `# {"t_start": ..., "level": ..., "seed": ...}`, then the header
`r,l,t,cut` and one row per episode: return, length (agent steps, resets not counted), seconds
since the start, and `cut` = 1 for the last episode when the run stopped before it was done
(budget, wall clock, agent gone). Rows are flushed as soon as an episode ends.

Score = mean return of the finished episodes (cut = 0): the contest's rule, where the original
monitor never recorded the cut-off episode. When no episode finished, the score is the cut-off
episode's return; when not a single step was played, it is null.

results.json (written atomically) — see STATUSES for the `status` values. A run continued from
a resume point (evaluation/contest/resume.py) starts its records from the stopped run's, up to
that point, and lists the resume under `resumed`.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from sonic_common.files import copy_atomic, write_json_atomic

if TYPE_CHECKING:
    from evaluation.contest.resume import ResumePoint

MONITOR = "monitor.csv"
PROGRESS = "progress.csv"
RESULTS = "results.json"
LOCK = ".run.lock"  # held while a run writes into a results directory

STATUSES = {
    "running": "the server is still serving (or died without writing its final results)",
    "budget": "the timestep budget was used up (the normal end of a run)",
    "wallclock": "the wall-clock limit was reached",
    "agent_exited": "the agent closed the connection or exited with code 0 before the budget",
    "agent_crashed": "the agent exited with a non-zero code (or was killed) before the budget",
    "protocol_error": "the agent broke the wire protocol (bad JSON, oversized message, ...)",
    "oom": "the agent ran out of memory",
    "env_error": "the environment (emulator) or the server failed",
    "idle_timeout": (
        "the agent connected late, or sent no whole message, for longer than the idle timeout"
    ),
    "interrupted": "the server was stopped from outside (SIGTERM / Ctrl-C)",
}
ENDED_BY_LIMIT = ("budget", "wallclock")  # a run that ended as the contest ends them
# not ended, so continued or played again: stopped from outside by a signal (`interrupted`), or
# killed outright before the server could write its final results (`running`: the records are
# those published at the last episode end)
STOPPED = frozenset({"interrupted", "running"})


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def lock_dir(results_dir: Path, wait_s: float = 0.0) -> DirLock:
    """Hold results_dir/.run.lock (flock): one run at a time writes into a results directory.

    Waits up to `wait_s` for a holder to finish; then a one-line UserError.
    """
    from sonic_common.errors import UserError

    fd = os.open(Path(results_dir) / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    end = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return DirLock(fd)
        except BlockingIOError:
            if time.monotonic() >= end:
                os.close(fd)
                raise UserError(
                    f"another run is writing into {results_dir}: wait for it to "
                    "end, or choose another results directory"
                ) from None
            time.sleep(0.1)


class DirLock:
    """An flock held through an open file descriptor (shared with a child that inherits it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def publish_records(
    private_dir: Path, results_dir: Path, names: tuple[str, ...] = (MONITOR, PROGRESS, RESULTS)
) -> str | None:
    """Copy monitor.csv, progress.csv and results.json (or `names`) from the private records
    directory into the results directory (recreated if it was deleted). Returns the error,
    None if all went."""
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (private_dir / name).is_file():
                copy_atomic(private_dir / name, results_dir / name)
    except OSError as e:
        return f"{e.__class__.__name__}: {e}"
    return None


def read_results(results_dir: Path) -> dict[str, Any] | None:
    """The run's results.json; None when missing or not a JSON object (in the local runtime
    the agent can write it: any content, nested past the parser's recursion limit too)."""
    path = Path(results_dir) / RESULTS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


class Reading(NamedTuple):
    """A line of progress.csv: the run's timesteps and its own clock (seconds since it began,
    the earlier sessions of a resumed run included); (0, 0.0) stands for no line yet."""

    timesteps: int
    elapsed_s: float


NO_READING = Reading(0, 0.0)


def last_reading(results_dir: Path) -> Reading:
    """The last whole line of the run's progress.csv, read from its end; NO_READING if none."""
    try:
        with open(Path(results_dir) / PROGRESS, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - 512)
            f.seek(start)
            tail = f.read().decode(errors="replace")
    except OSError:
        return NO_READING
    lines = tail.splitlines()
    lines = lines[1 if start > 0 else 0 : None if tail.endswith("\n") else -1]  # whole lines
    for line in reversed(lines):
        reading = progress_line(line)
        if reading is not None:
            return reading
    return NO_READING


def capped_reading(results_dir: Path, budget: int) -> Reading:
    """The run's last progress line, its timesteps at most `budget`."""
    reading = last_reading(results_dir)
    return reading._replace(timesteps=min(reading.timesteps, budget))


def progress_line(line: str) -> Reading | None:
    """A progress.csv line as `RunRecorder.progress` writes it; None for the header or a line
    that is not one (damaged, or half written)."""
    fields = line.split(",")
    if len(fields) < 3 or not (fields[0].isascii() and fields[0].isdigit()):
        return None
    try:
        elapsed = float(fields[2])
    except ValueError:
        return None
    return Reading(int(fields[0]), elapsed) if 0 <= elapsed < math.inf else None


@dataclass(frozen=True)
class EpisodeRow:
    r: float
    l: int  # noqa: E741 - the column's name in monitor.csv
    t: float
    cut: bool = False


def read_monitor(path: Path) -> tuple[dict[str, Any], list[EpisodeRow]]:
    """(header metadata, rows) of a monitor.csv; a missing `cut` column reads as 0."""
    text = Path(path).read_text()
    meta: dict[str, Any] = {}
    lines = text.splitlines()
    if lines and lines[0].startswith("#"):
        try:
            meta = json.loads(lines[0][1:])
        except ValueError:
            meta = {}
        lines = lines[1:]
    rows = [
        EpisodeRow(
            float(row["r"]), int(float(row["l"])), float(row["t"]), bool(int(row.get("cut") or 0))
        )
        for row in csv.DictReader(io.StringIO("\n".join(lines)))
    ]
    return meta, rows


def score(rows: list[EpisodeRow]) -> float | None:
    """Mean return of finished episodes; else the cut-off episode's return; else None."""
    finished = [row.r for row in rows if not row.cut]
    if finished:
        return sum(finished) / len(finished)
    cut = [row.r for row in rows if row.cut]
    return cut[-1] if cut else None


class RunRecorder:
    """Records one served run. The hot path (`step`) only adds two numbers."""

    def __init__(
        self,
        results_dir: Path,
        *,
        level: str,
        seed: int,
        agent: str,
        runtime: str,
        budget: int,
        wallclock_s: float,
        progress_every_s: float = 30.0,
        progress_every_steps: int = 50_000,
        extra: dict[str, Any] | None = None,
        on_progress: Callable[[], None] | None = None,
        on_episode: Callable[[], None] | None = None,
    ) -> None:
        self.dir = Path(results_dir)
        self.level = level
        self.seed = seed
        self.agent = agent
        self.runtime = runtime
        self.budget = budget
        self.wallclock_limit_s = wallclock_s
        self.progress_every_s = progress_every_s
        self.progress_every_steps = max(1, progress_every_steps)
        self.extra = dict(extra or {})
        self.t_start = time.time()
        self.started_at = utc_now()
        self._t0 = time.monotonic()
        self.rows: list[EpisodeRow] = []
        self.recent: deque[float] = deque(maxlen=10)
        self.episode_return = 0.0
        self.episode_length = 0
        self.in_episode = False
        self.steps = 0
        self.resets = 0
        self._next_progress_steps = self.progress_every_steps
        self._next_progress_t = self._t0 + progress_every_s
        self._monitor: TextIO | None = None
        self._progress: TextIO | None = None
        self.on_progress = on_progress
        self.on_episode = on_episode
        self.write_error: str | None = None  # the first failed write (disk full, dir deleted)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, resume: ResumePoint | None = None) -> None:
        """Open the records; with `resume`, they start as the stopped run's were at its point:
        its episodes, its steps and resets, and its clock."""
        self.dir.mkdir(parents=True, exist_ok=True)
        header: dict[str, Any] = {"t_start": self.t_start, "level": self.level, "seed": self.seed}
        rows: list[EpisodeRow] = []
        progress: list[str] = []
        if resume is not None:
            header, rows, progress = resume.header, resume.rows, resume.progress
            self._t0 -= resume.elapsed_s
            self.started_at = resume.started_at or self.started_at
            self.steps, self.resets = resume.steps, resume.episodes
            self._next_progress_steps = resume.timesteps + self.progress_every_steps
            self.extra["resumed"] = [*resume.history, resume.record(self.seed)]
        self._monitor = open(self.dir / MONITOR, "w", buffering=1)  # noqa: SIM115
        self._monitor.write(f"# {json.dumps(header)}\nr,l,t,cut\n")
        for row in rows:
            self._monitor.write(f"{row.r!r},{row.l},{row.t},{int(row.cut)}\n")
            self.rows.append(row)
            self.recent.append(row.r)
        self._monitor.flush()
        self._progress = open(self.dir / PROGRESS, "w", buffering=1)  # noqa: SIM115
        self._progress.write("timesteps,episodes,elapsed_s,mean_return_last10\n")
        self._progress.writelines(line + "\n" for line in progress)
        self._progress.flush()
        self.write_results("running", None, resume.timesteps if resume else 0)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    # --- events ----------------------------------------------------------------------------

    def reset(self) -> None:
        self.resets += 1
        self.in_episode = True
        self.episode_return = 0.0
        self.episode_length = 0

    def step(self, reward: float, done: bool) -> None:
        self.steps += 1
        self.episode_return += reward
        self.episode_length += 1
        if done:
            self._end_episode(cut=False)

    def _end_episode(self, cut: bool) -> None:
        row = EpisodeRow(self.episode_return, self.episode_length, round(self.elapsed(), 6), cut)
        if self._monitor is not None:  # first: a row that cannot be written is not counted
            self._monitor.write(f"{row.r!r},{row.l},{row.t},{int(cut)}\n")
            self._monitor.flush()
        self.rows.append(row)
        if not cut:
            self.recent.append(row.r)
        self.in_episode = False
        if not cut and self.on_episode is not None:
            # monitor.csv published at every episode's end: a run killed outright (no final
            # results) still has the episodes an agent's resume point refers to
            self.on_episode()

    def maybe_progress(self, timesteps: int) -> None:
        """Cheap to call every step: writes a progress line every N steps or seconds."""
        if timesteps < self._next_progress_steps:
            now = time.monotonic()
            if now < self._next_progress_t:
                return
        self.progress(timesteps)

    def progress(self, timesteps: int) -> None:
        now = time.monotonic()
        self._next_progress_steps = timesteps + self.progress_every_steps
        self._next_progress_t = now + self.progress_every_s
        if self._progress is None:
            return
        mean = sum(self.recent) / len(self.recent) if self.recent else ""
        self._progress.write(f"{timesteps},{self.episodes},{now - self._t0:.3f},{mean}\n")
        self._progress.flush()
        if self.on_progress is not None:
            self.on_progress()

    @property
    def episodes(self) -> int:
        return sum(1 for row in self.rows if not row.cut)

    # --- the end ---------------------------------------------------------------------------

    def finish(
        self, status: str, error: str | None, timesteps: int, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Write the cut-off episode (if it had steps), a last progress line and results.json.

        Never raises for a failed write (disk full, directory deleted): the run ends
        `env_error` with the error, and what could be written is kept."""
        self.on_progress = self.on_episode = None  # the caller publishes once, after results.json
        with self._noting_write_errors():
            if self.in_episode and self.episode_length > 0:
                self._end_episode(cut=True)
        with self._noting_write_errors():
            self.progress(timesteps)
        for f in (self._monitor, self._progress):
            if f is not None:
                with self._noting_write_errors():
                    f.close()
        self._monitor = self._progress = None
        if extra:
            self.extra.update(extra)
        data = self._failed_writes(self.results(status, error, timesteps))
        failed_before = self.write_error
        with self._noting_write_errors():
            write_json_atomic(self.dir / RESULTS, data, make_dir=False)
        if self.write_error != failed_before:  # results.json itself failed: say so anyway
            data = self._failed_writes(self.results(status, error, timesteps))
        return data

    def _failed_writes(self, data: dict[str, Any]) -> dict[str, Any]:
        """`env_error` with the first failed write, if any write failed."""
        if self.write_error is None:
            return data
        error = f"{data['error']}; " if data["error"] else ""
        return {
            **data,
            "status": "env_error",
            "error": f"{error}cannot write the records: {self.write_error}",
        }

    @contextlib.contextmanager
    def _noting_write_errors(self) -> Any:
        try:
            yield
        except OSError as e:
            if self.write_error is None:
                self.write_error = f"{e.__class__.__name__}: {e}"

    def results(self, status: str, error: str | None, timesteps: int) -> dict[str, Any]:
        cut = next((row for row in self.rows if row.cut), None)
        return {
            "level": self.level,
            "agent": self.agent,
            "seed": self.seed,
            "score": score(self.rows),
            "episodes": self.episodes,
            "timesteps": timesteps,
            "wallclock_s": round(self.elapsed(), 3),
            "status": status,
            "budget": self.budget,
            "wallclock_limit_s": self.wallclock_limit_s,
            "runtime": self.runtime,
            "error": error,
            "started_at": self.started_at,
            "finished_at": None if status == "running" else utc_now(),
            "steps": self.steps,
            "resets": self.resets,
            "cut_episode": None if cut is None else {"r": cut.r, "l": cut.l},
            **self.extra,
        }

    def write_results(self, status: str, error: str | None, timesteps: int) -> dict[str, Any]:
        data = self.results(status, error, timesteps)
        write_json_atomic(self.dir / RESULTS, data, make_dir=False)
        return data
