"""Training logs: `DIR/progress.csv` (always), TensorBoard events and progress on stderr (a tqdm
bar on a terminal, plain lines in a log: `evaluation.progress`).

The agent image has neither tensorboard nor tqdm: both are optional here.
"""

from __future__ import annotations

import csv
import math
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from sonic_common.markdown import md_table

PROGRESS_CSV = "progress.csv"
# TensorBoard tags as CleanRL names them (docs: cleanrl ppo_atari.py), so that dashboards and
# scripts made for CleanRL runs read ours; episodic return and length are the mean of the last
# 100 finished episodes here (CleanRL logs each episode), at the row's timesteps.
TB_TAGS = {
    "mean_return": "charts/episodic_return", "mean_length": "charts/episodic_length",
    "fps": "charts/SPS", "lr": "charts/learning_rate", "updates": "charts/updates",
    "episodes": "charts/episodes", "loss": "losses/loss", "pg_loss": "losses/policy_loss",
    "vf_loss": "losses/value_loss", "entropy": "losses/entropy", "approx_kl": "losses/approx_kl",
    "clipfrac": "losses/clipfrac", "explained_var": "losses/explained_variance",
}


def tb_tag(key: str) -> str:
    """CleanRL's tag for a progress.csv column; other losses under losses/, the rest charts/."""
    return TB_TAGS.get(key, f"losses/{key}" if key.endswith("loss") else f"charts/{key}")


def config_text(config: dict[str, Any]) -> str:
    """The run's config as CleanRL logs it: a markdown table under `hyperparameters`."""
    return "\n".join(md_table(["param", "value"], sorted(config.items())))


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
                 resume: bool = False, config: dict[str, Any] | None = None) -> None:
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
                    if config:
                        self._tb.add_text("hyperparameters", config_text(config))
                except ImportError:  # no tensorboard (e.g. in the agent image)
                    self._tb = None
        if progress_bar:  # a tqdm bar on a terminal, plain lines in a log (or without tqdm)
            from evaluation.progress import progress

            self._bar = progress(total_timesteps, start_timesteps, unit="step")

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
                    self._tb.add_scalar(tb_tag(key), value, step)

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
