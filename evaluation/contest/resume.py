"""Continuing a stopped run from its agent's last resume point, instead of playing it again.

An agent that can resume (Rainbow) writes, at the end of an episode, its whole state (networks,
optimizer, replay buffer) and then `$AGENT_OUTPUT_DIR/resume.json`: `{"steps": S, "episodes":
E}`, its steps (resets not counted) and finished episodes there. When the run is stopped from
outside (`interrupted`; or killed outright, still `running`, its records then being those the
server published at its last episode end), `resume_point` checks the point against the server's
own records: the first E episodes of monitor.csv must be finished and hold S steps. The run
then continues from there: the server starts with those E episodes, S + E timesteps used (resets
count) and the clock at the E-th episode's end, and the agent is started with `--resume`. What
was played after the point is discarded (not counted against the budget); results.json records
each resume under `resumed` with how much was discarded.

Not bit-for-bit the run that was never stopped: the environment restarts at an episode's start
with a random state (sticky actions) seeded from the run's seed and E. resume.json comes from
the agent, so nothing in it is trusted: only the server's own rows are kept, and a point that
does not match them is refused (the run is then played again from the start, and results.json
says why under `resume_refused`).
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.contest.records import (
    MONITOR,
    PROGRESS,
    STOPPED,
    EpisodeRow,
    progress_line,
    read_monitor,
)
from sonic_common.agent_env import RESUME_FILE
from sonic_common.errors import UserError

MAX_RESUME_BYTES = 4096
SEED_MODULUS = 2**31


@dataclass
class ResumePoint:
    """Where a run continues: the server's records up to the end of its `episodes`-th episode."""

    episodes: int
    steps: int
    elapsed_s: float  # the run's clock at that episode's end
    header: dict[str, Any]  # monitor.csv's first line (t_start, level, seed)
    rows: list[EpisodeRow]
    progress: list[str]  # progress.csv lines (without the header) up to the point
    discarded_timesteps: int  # played after the point before the stop (at least): not counted
    started_at: str | None
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier resumes

    @property
    def timesteps(self) -> int:
        return self.steps + self.episodes  # one reset per episode

    def env_seed(self, seed: int) -> int:
        """The environment's seed after this resume: a stream of its own, neither the run's
        first nor an earlier resume's at the same episode."""
        entropy = [seed, self.episodes, len(self.history) + 1]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0]) % SEED_MODULUS

    def record(self, seed: int) -> dict[str, Any]:
        return {
            "at_timesteps": self.timesteps,
            "episodes": self.episodes,
            "discarded_timesteps": self.discarded_timesteps,
            "env_seed": self.env_seed(seed),
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def _check_types(self) -> None:
        counts = (self.episodes, self.steps, self.discarded_timesteps)
        if not all(type(n) is int and n >= 0 for n in counts):
            raise TypeError("episodes, steps and discarded_timesteps must be counts")
        if not isinstance(self.elapsed_s, int | float) or not math.isfinite(self.elapsed_s):
            raise TypeError("elapsed_s must be a number of seconds")
        if not isinstance(self.header, dict) or not all(
            isinstance(x, list) for x in (self.rows, self.progress, self.history)
        ):
            raise TypeError("header must be an object; rows, progress and history lists")

    @classmethod
    def from_file(cls, path: Path) -> ResumePoint:
        """The point the runner wrote (`serve --resume-from`); a UserError if it is not one."""
        try:
            data = json.loads(Path(path).read_text())
            data["rows"] = [EpisodeRow(**row) for row in data["rows"]]
            point = cls(**data)
            point._check_types()
            return point
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise UserError(
                f"--resume-from {path} is not a resume point written by the runner "
                f"({e.__class__.__name__}: {e}); continue a run with "
                "`python -m evaluation suite --out OUT --resume` instead"
            ) from None


def _read_small_file(path: Path) -> bytes | None:
    """At most MAX_RESUME_BYTES + 1 bytes of a regular file, not through a link (the agent
    made it: it may be a link, a FIFO or huge); None when it is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, MAX_RESUME_BYTES + 1)
    finally:
        os.close(fd)


def read_agent_point(agent_dir: Path) -> tuple[int, int] | str:
    """(steps, episodes) from the agent's resume.json, or why there is none usable."""
    raw = _read_small_file(Path(agent_dir) / RESUME_FILE)
    if raw is None:
        return f"no {RESUME_FILE} from the agent"
    if len(raw) > MAX_RESUME_BYTES:
        return f"{RESUME_FILE} is larger than {MAX_RESUME_BYTES} bytes"
    try:
        data = json.loads(raw)
    except ValueError:
        return f"{RESUME_FILE} is not readable JSON"
    if not isinstance(data, dict):
        return f"{RESUME_FILE} is not a JSON object"
    steps, episodes = data.get("steps"), data.get("episodes")
    if not (type(steps) is int and type(episodes) is int and steps > 0 and episodes > 0):
        return f"{RESUME_FILE} lacks positive integer 'steps' and 'episodes'"
    return steps, episodes


def resume_point(results_dir: Path, previous: dict[str, Any]) -> ResumePoint | str:
    """The point a stopped run in `results_dir` (its results.json: `previous`) continues from,
    or why it cannot continue and must be played again. Never raises: the records may be
    anything (the run was killed while writing them; in the local runtime the agent can write
    them too), and anything unexpected is a refusal."""
    try:
        return _resume_point(Path(results_dir), previous)
    except Exception as e:  # a malformed record of any kind: play the run again
        return f"the run's records are not readable: {e.__class__.__name__}: {e}"


def _resume_point(results_dir: Path, previous: dict[str, Any]) -> ResumePoint | str:
    if previous.get("status") not in STOPPED:
        return f"the run ended {previous.get('status')!r}: only a stopped run continues"
    agent_point = read_agent_point(Path(results_dir) / "agent")
    if isinstance(agent_point, str):
        return agent_point
    steps, episodes = agent_point
    try:
        header, rows = read_monitor(Path(results_dir) / MONITOR)
        progress_lines = (Path(results_dir) / PROGRESS).read_text().splitlines()[1:]
    except (OSError, ValueError, KeyError) as e:
        return f"the run's records are not readable: {e}"
    kept = rows[:episodes]
    if len(kept) < episodes or any(row.cut for row in kept):
        return f"the agent's point ({episodes} episodes) is past the server's finished episodes"
    times = [row.t for row in kept]
    if not all(math.isfinite(t) and t >= 0 for t in times) or times != sorted(times):
        return "the run's monitor.csv has episode times that do not count up from 0"
    if sum(row.l for row in kept) != steps:
        return (
            f"the agent's point ({steps} steps in {episodes} episodes) does not match the "
            f"server's records ({sum(row.l for row in kept)} steps)"
        )
    timesteps = steps + episodes
    logged = [(line, progress_line(line)) for line in progress_lines]
    played = max(
        int(previous.get("timesteps") or 0),
        sum(row.l for row in rows) + len(rows),
        *(r.timesteps for _, r in logged if r is not None),
    )
    return ResumePoint(
        episodes=episodes,
        steps=steps,
        elapsed_s=kept[-1].t,
        header=header,
        rows=kept,
        progress=[line for line, r in logged if r is not None and r.timesteps <= timesteps],
        discarded_timesteps=max(0, played - timesteps),
        started_at=previous.get("started_at"),
        history=list(previous.get("resumed") or []),
    )
