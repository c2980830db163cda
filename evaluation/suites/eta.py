"""A suite's time left, from each agent's own speed.

The agents of one suite play at very different speeds (on one core of these machines a Rainbow
run plays ≈ 10 timesteps a second, ppo2 ≈ 100, random ≈ 550), so a rate taken over all the steps
together misses by a factor of several: a suite of Rainbow runs with ppo2 and random runs still to
come said 27 h for 8 h of work. `SuiteEta` times each agent apart, from its finished runs'
records (timesteps over wall clock, earlier sessions of a resumed run included) and from its
running runs' progress lines (timesteps and the run's own clock, so that a resumed run's
restored lines or an earlier attempt's stale ones are not taken for steps played now). The work
left of every unfinished run at its agent's speed, each run at most until its wall-clock limit,
is shared among the runs that play at once.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from evaluation.contest.records import ENDED_BY_LIMIT, NO_READING, Reading
from evaluation.suites.suite import RunKey


@dataclass
class _Watch:
    """A running run's progress lines: the first one seen of its current attempt, the last,
    and when the last was seen (lines come every 30 s)."""

    first: Reading
    last: Reading
    seen: float


class SuiteEta:
    """`left`: the runs still to finish. `kept`: where those that continue from a resume point
    continue (timesteps and clock). `finished`: (agent, results.json) of runs already finished;
    those ended by a limit time their agent. `wallclock_s`: a run's limit. `slots`: runs played
    at once (None, as on Ray: the larger of the most seen running together and the average
    number at once of the runs finished so far: their wall clock in this suite over its time,
    all there is where runs do not show their progress)."""

    def __init__(
        self,
        budget: int,
        wallclock_s: float,
        left: Iterable[RunKey],
        kept: dict[RunKey, Reading] | None = None,
        finished: Iterable[tuple[str, dict[str, Any]]] = (),
        slots: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget, self.wallclock_s, self.slots, self.clock = budget, wallclock_s, slots, clock
        self.kept = dict(kept or {})
        # each run not finished, with the timesteps it has played (kept, or read since)
        self.played = {key: self.kept.get(key, NO_READING).timesteps for key in left}
        self.steps: dict[str, float] = defaultdict(float)
        self.seconds: dict[str, float] = defaultdict(float)
        self.watches: dict[RunKey, _Watch] = {}
        self.most_running = 0
        self.t_start, self.busy_s = clock(), 0.0
        for agent, res in finished:
            self._add_record(agent, res)

    def _add_record(self, agent: str, res: dict[str, Any]) -> None:
        steps, seconds = _positive(res.get("timesteps")), _positive(res.get("wallclock_s"))
        if res.get("status") in ENDED_BY_LIMIT and steps and seconds:
            self.steps[agent] += steps
            self.seconds[agent] += seconds

    def tick(self, running: dict[RunKey, Reading]) -> None:
        """`running`: the last progress line of each running run."""
        now = self.clock()
        self.most_running = max(self.most_running, len(running))
        for key, reading in running.items():
            watch = self.watches.get(key)
            if watch is None or not _follows(reading, watch.last):  # a new attempt, restored lines
                self.watches[key] = _Watch(reading, reading, now)
            elif reading.elapsed_s > watch.last.elapsed_s:
                watch.last, watch.seen = reading, now
            if key in self.played:
                kept = self.kept.get(key, NO_READING).timesteps
                self.played[key] = max(kept, reading.timesteps)

    def done(self, key: RunKey, res: dict[str, Any]) -> None:
        self.watches.pop(key, None)
        self.played.pop(key, None)
        self._add_record(key.agent, res)
        since_start = self.clock() - self.t_start  # a resumed run's clock has earlier sessions
        self.busy_s += min(_positive(res.get("wallclock_s")) or 0.0, since_start)

    def rate(self, agent: str | None = None) -> float | None:
        """Timesteps per second of one of `agent`'s runs (None: of all agents' runs together);
        None before anything was timed."""
        steps = sum(v for a, v in self.steps.items() if agent in (None, a))
        seconds = sum(v for a, v in self.seconds.items() if agent in (None, a))
        for key, w in self.watches.items():
            if agent in (None, key.agent):
                steps += w.last.timesteps - w.first.timesteps
                seconds += w.last.elapsed_s - w.first.elapsed_s
        rate = steps / seconds if steps > 0 and seconds > 0 else 0.0
        return rate if 0 < rate < math.inf else None

    def _slots(self) -> int | None:
        if self.slots is not None:
            return self.slots
        elapsed = self.clock() - self.t_start
        seen = round(self.busy_s / elapsed) if elapsed > 0 else 0
        return max(self.most_running, seen) or None

    def _run_left(self, key: RunKey, rate: float, now: float) -> float:
        """Seconds `key` still plays: its steps left at `rate`, at most to its wall-clock
        limit, less what it played since its last progress line."""
        left_s = (self.budget - self.played[key]) / rate
        watch = self.watches.get(key)
        if watch is None:  # waiting: a resumed run's clock starts where its point is
            clock_s = self.kept.get(key, NO_READING).elapsed_s
            return max(0.0, min(left_s, self.wallclock_s - clock_s))
        since = now - watch.seen
        return max(0.0, min(left_s, self.wallclock_s - watch.last.elapsed_s) - since)

    def seconds_left(self) -> float | None:
        """The time left of every run not finished at its agent's speed (an agent not timed
        yet: all agents' speed), shared among the slots; at least the longest run's.
        None while nothing was timed, or the slots are not known yet."""
        if not self.played:
            return 0.0
        pooled, slots = self.rate(), self._slots()
        if pooled is None or slots is None:
            return None
        rates = {a: self.rate(a) or pooled for a in {key.agent for key in self.played}}
        now = self.clock()
        times = [self._run_left(key, rates[key.agent], now) for key in self.played]
        return max(sum(times) / min(len(times), slots), max(times))


def _follows(reading: Reading, last: Reading) -> bool:
    return reading.timesteps >= last.timesteps and reading.elapsed_s >= last.elapsed_s


def _positive(x: Any) -> float | None:
    """A record's field as a finite number above 0; None for anything else (a damaged
    results.json must not stop the suite's progress)."""
    ok = isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < math.inf
    return float(x) if ok else None
