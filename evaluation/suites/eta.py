"""A suite's time left, from each agent's own speed.

The agents of one suite play at very different speeds (on one core of these machines a Rainbow
run plays ≈ 10 timesteps a second, ppo2 ≈ 90, random ≈ 500), so a rate taken over all the steps
together misses by a factor of several: a suite of Rainbow runs with ppo2 and random runs still to
come said 27 h for 7½ h of work. `SuiteEta` times each agent apart, from its finished runs'
records (their timesteps and wall clock, earlier sessions included) and from what its running
runs play, and adds up the work left of every run not finished at its agent's speed, shared
among the runs that play at once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from evaluation.suites.suite import RunKey


@dataclass
class _Watch:
    """A running run's timesteps, from when the suite first saw it to the last reading that
    moved (a run records its steps every 30 s: the time between says nothing of its speed)."""

    t0: float
    steps0: int
    t: float
    steps: int


class SuiteEta:
    """`left`: each run still to finish, with the timesteps it has already (kept by a resume
    point; 0 for a fresh run). `finished`: (agent, results.json) of runs already finished; those
    that ended by budget time their agent. `slots`: runs played at once (None, as on Ray: the most
    seen running together, or where runs do not show their progress, the average number at once
    of the runs finished so far: their wall clock in this suite over its time)."""

    def __init__(
        self,
        budget: int,
        left: dict[RunKey, int],
        finished: Iterable[tuple[str, dict[str, Any]]] = (),
        slots: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget, self.slots, self.clock = budget, slots, clock
        self.left = dict(left)
        self.steps: dict[str, float] = defaultdict(float)
        self.seconds: dict[str, float] = defaultdict(float)
        self.watches: dict[RunKey, _Watch] = {}
        self.most_running = 0
        self.t_start, self.busy_s = clock(), 0.0
        for agent, res in finished:
            self._add_record(agent, res)

    def _add_record(self, agent: str, res: dict[str, Any]) -> None:
        steps, seconds = res.get("timesteps") or 0, res.get("wallclock_s") or 0
        if res.get("status") == "budget" and steps > 0 and seconds > 0:
            self.steps[agent] += steps
            self.seconds[agent] += seconds

    def tick(self, running: dict[RunKey, int]) -> None:
        """`running`: the timesteps each running run has recorded."""
        now = self.clock()
        self.most_running = max(self.most_running, len(running))
        for key, steps in running.items():
            kept = self.left.get(key, 0)
            watch = self.watches.get(key)
            if watch is None:  # a resumed run reads 0 until its new attempt records a step
                base = max(steps, kept)
                self.watches[key] = _Watch(now, base, now, base)
            elif steps > watch.steps:
                watch.t, watch.steps = now, steps
            if key in self.left:
                self.left[key] = max(kept, steps)

    def done(self, key: RunKey, res: dict[str, Any]) -> None:
        self.watches.pop(key, None)
        self.left.pop(key, None)
        self._add_record(key.agent, res)
        since_start = self.clock() - self.t_start  # a resumed run's clock has earlier sessions
        self.busy_s += min(float(res.get("wallclock_s") or 0), since_start)

    def _slots(self) -> int | None:
        if self.slots is not None:
            return self.slots
        elapsed = self.clock() - self.t_start
        seen = round(self.busy_s / elapsed) if elapsed > 0 else 0
        return max(self.most_running, seen) or None

    def rate(self, agent: str | None = None) -> float | None:
        """Timesteps per second of one of `agent`'s runs (None: of all agents' runs together);
        None before anything was timed."""
        steps = sum(v for a, v in self.steps.items() if agent in (None, a))
        seconds = sum(v for a, v in self.seconds.items() if agent in (None, a))
        for key, w in self.watches.items():
            if agent in (None, key.agent):
                steps, seconds = steps + w.steps - w.steps0, seconds + w.t - w.t0
        return steps / seconds if steps > 0 and seconds > 0 else None

    def seconds_left(self) -> float | None:
        """The work left of every run not finished, at its agent's speed (an agent not timed
        yet: all agents' speed; a running one less the time since its last reading), shared
        among the slots; at least the longest run's time left.
        None while nothing was timed, or the slots are not known yet."""
        if not self.left:
            return 0.0
        pooled, slots = self.rate(), self._slots()
        if pooled is None or slots is None:
            return None
        rates = {a: self.rate(a) or pooled for a in {key.agent for key in self.left}}
        now = self.clock()
        times = []
        for key, steps in self.left.items():
            watch = self.watches.get(key)
            since = now - watch.t if watch is not None else 0.0  # played since its last reading
            times.append(max(0.0, (self.budget - steps) / rates[key.agent] - since))
        return max(sum(times) / min(len(times), slots), max(times))
