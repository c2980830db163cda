"""Progress of long commands: a tqdm bar with ETA on a terminal, plain lines in logs.

`progress(total, ...)` returns a tqdm bar when its stream is a terminal (and tqdm is installed;
the agent images have no tqdm), else a `PlainProgress` with the same methods, which prints one
line such as

    suite: 12.0k/60.0k steps (20%), 1m05s elapsed, ETA 4m20s, runs 4/20

at most every `PROGRESS_INTERVAL_S` seconds (environment variable, default 30) and once at the
end, so a log file gets a readable record instead of a redrawn bar.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

DEFAULT_INTERVAL_S = 30.0


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get("PROGRESS_INTERVAL_S", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _count(x: float) -> str:
    if abs(x) >= 1e6:
        return f"{x / 1e6:.1f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:g}"


class PlainProgress:
    """The subset of tqdm's interface the project uses, as periodic plain lines."""

    def __init__(
        self,
        total: float | None,
        initial: float = 0,
        unit: str = "step",
        desc: str | None = None,
        file: TextIO | None = None,
        every_s: float | None = None,
        eta: bool = True,
    ) -> None:
        self.total, self.n, self.unit, self.desc = total, initial, unit, desc
        self.eta = eta
        self.file = file if file is not None else sys.stderr
        self.every_s = interval_s() if every_s is None else every_s
        self.initial = initial
        self.t0 = time.monotonic()
        self.last = self.t0
        self.postfix = ""
        self.closed = False
        self.printed = False

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        head = f"{self.desc}: " if self.desc else ""
        text = f"{head}{_count(self.n)}"
        if self.total:
            text += f"/{_count(self.total)} {self.unit}s ({100 * self.n / self.total:.0f}%)"
        else:
            text += f" {self.unit}s"
        text += f", {duration(elapsed)} elapsed"
        done = self.n - self.initial
        if self.eta and self.total and done > 0 and self.n < self.total:
            text += f", ETA {duration(elapsed / done * (self.total - self.n))}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _maybe_print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every_s:
            self.last = now
            self.printed = True
            print(self.line(), file=self.file, flush=True)

    def update(self, n: float = 1) -> None:
        self.n += n
        self._maybe_print()

    def refresh(self) -> None:
        self._maybe_print()

    def set_postfix(
        self, values: dict[str, Any] | None = None, refresh: bool = True, **kw: Any
    ) -> None:
        items = {**(values or {}), **kw}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())
        if refresh:
            self._maybe_print()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s
        if refresh:
            self._maybe_print()

    @staticmethod
    def write(s: str, file: TextIO | None = None) -> None:
        print(s, file=file if file is not None else sys.stderr, flush=True)

    def close(self) -> None:
        """The final line, unless nothing happened (a command that failed before it began
        says only its error)."""
        if not self.closed:
            self.closed = True
            if self.n != self.initial or self.printed:
                self._maybe_print(force=True)


def progress(
    total: float | None,
    initial: float = 0,
    unit: str = "step",
    desc: str | None = None,
    file: TextIO | None = None,
    eta: bool = True,
    **tqdm_kw: Any,
) -> Any:
    """A tqdm bar with ETA on a terminal; a PlainProgress elsewhere (or without tqdm).
    `eta=False`: the caller shows its own (in the postfix); its bar_format leaves out
    {remaining}."""
    stream = file if file is not None else sys.stderr
    if stream.isatty():
        try:
            from tqdm import tqdm

            return tqdm(
                total=total,
                initial=initial,
                unit=unit,
                desc=desc,
                file=stream,
                dynamic_ncols=True,
                smoothing=0.1,
                **tqdm_kw,
            )
        except ImportError:
            pass
    return PlainProgress(total, initial, unit, desc, stream, eta=eta)
