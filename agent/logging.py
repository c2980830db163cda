"""Training logs: `DIR/progress.csv` (always), TensorBoard events and a tqdm bar (when installed).

The agent image has neither tensorboard nor tqdm: both are optional here.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

PROGRESS_CSV = "progress.csv"
CSV_FIELDS = (
    "timesteps", "updates", "episodes", "mean_return", "mean_length", "fps", "time_s",
    "loss", "pg_loss", "vf_loss", "entropy", "approx_kl", "clipfrac", "explained_var", "lr",
)


class EpisodeTracker:
    """The last `window` finished episodes' returns and lengths, and how many finished."""

    def __init__(self, window: int = 100) -> None:
        self.returns: deque[float] = deque(maxlen=window)
        self.lengths: deque[int] = deque(maxlen=window)
        self.count = 0

    def add(self, ret: float, length: int) -> None:
        self.returns.append(float(ret))
        self.lengths.append(int(length))
        self.count += 1

    @property
    def mean_return(self) -> float:
        return sum(self.returns) / len(self.returns) if self.returns else math.nan

    @property
    def mean_length(self) -> float:
        return sum(self.lengths) / len(self.lengths) if self.lengths else math.nan


class TrainLogger:
    """Rows to progress.csv (appended on resume) and TensorBoard; a progress bar on stderr."""

    def __init__(self, out_dir: str | Path | None, total_timesteps: int | None = None,
                 start_timesteps: int = 0, tensorboard: bool = True, progress_bar: bool = True,
                 resume: bool = False) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.start_time = time.monotonic()
        self._csv_file: TextIO | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._tb: Any = None
        self._bar: Any = None
        self._last_timesteps = start_timesteps
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / PROGRESS_CSV
            append = resume and path.is_file() and path.stat().st_size > 0
            self._csv_file = open(path, "a" if append else "w", newline="")
            self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_FIELDS,
                                       extrasaction="ignore")
            if not append:
                self._csv.writeheader()
                self._csv_file.flush()
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.out_dir / "tb"))
                except ImportError:  # no tensorboard (e.g. in the agent image)
                    self._tb = None
        if progress_bar:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total_timesteps, initial=start_timesteps, unit="step",
                                 dynamic_ncols=True, file=sys.stderr, smoothing=0.1,
                                 disable=None)
            except ImportError:
                self._bar = None

    def advance(self, timesteps: int, postfix: dict[str, Any] | None = None) -> None:
        """Move the progress bar to `timesteps` (total so far)."""
        if self._bar is not None:
            self._bar.update(timesteps - self._last_timesteps)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
        self._last_timesteps = timesteps

    def log(self, row: dict[str, Any]) -> None:
        row = {**row, "time_s": round(time.monotonic() - self.start_time, 3)}
        if self._csv is not None and self._csv_file is not None:
            self._csv.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
            self._csv_file.flush()
        if self._tb is not None:
            step = int(row.get("timesteps", 0))
            for key, value in row.items():
                if key != "timesteps" and isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._csv_file is not None:
            self._csv_file.close()


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value
