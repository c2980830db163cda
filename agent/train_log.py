"""Training logs: `DIR/learning.csv` (always), TensorBoard events and progress on stderr (a tqdm
bar on a terminal, plain lines in a log: `sonic_common.progress`).

The agent image has neither tensorboard nor tqdm: both are optional here.
"""

from __future__ import annotations

import csv
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sonic_common.markdown import md_table

LEARNING_CSV = "learning.csv"  # not progress.csv: the contest server writes that one
# TensorBoard tags as CleanRL names them (docs: cleanrl ppo_atari.py), so that dashboards and
# scripts made for CleanRL runs read ours: charts/episodic_return and charts/episodic_length
# hold each finished episode at the timestep it ended (TrainLogger.log_episodes), as CleanRL's
# do; a row's means over the last 100 episodes go to charts/mean_episodic_*.
EPISODE_TAGS = ("charts/episodic_return", "charts/episodic_length")
TB_TAGS = {
    "mean_return": "charts/mean_episodic_return",
    "mean_length": "charts/mean_episodic_length",
    "fps": "charts/SPS",
    "lr": "charts/learning_rate",
    "updates": "charts/updates",
    "episodes": "charts/episodes",
    "loss": "losses/loss",
    "pg_loss": "losses/policy_loss",
    "vf_loss": "losses/value_loss",
    "entropy": "losses/entropy",
    "approx_kl": "losses/approx_kl",
    "clipfrac": "losses/clipfrac",
    "explained_var": "losses/explained_variance",
}


def tb_tag(key: str) -> str:
    """CleanRL's tag for a learning.csv column; other losses under losses/, the rest charts/."""
    return TB_TAGS.get(key, f"losses/{key}" if key.endswith("loss") else f"charts/{key}")


def config_text(config: dict[str, Any]) -> str:
    """The run's config as CleanRL logs it: a markdown table under `hyperparameters`."""
    return "\n".join(md_table(["param", "value"], sorted(config.items())))


CSV_FIELDS = (
    "timesteps",
    "updates",
    "episodes",
    "mean_return",
    "mean_length",
    "fps",
    "time_s",
    "loss",
    "pg_loss",
    "vf_loss",
    "entropy",
    "approx_kl",
    "clipfrac",
    "explained_var",
    "lr",
)


Episode = tuple[float, int, int]  # return, length, the timestep it ended at


class EpisodeTracker:
    """The last `window` finished episodes' returns and lengths, how many finished, and those
    not yet logged one by one (at most `unlogged_max`: a learner without a logger keeps few)."""

    def __init__(self, window: int = 100, unlogged_max: int = 100_000) -> None:
        self.returns: deque[float] = deque(maxlen=window)
        self.lengths: deque[int] = deque(maxlen=window)
        self.unlogged: deque[Episode] = deque(maxlen=unlogged_max)
        self.count = 0

    def add(self, ret: float, length: int, timestep: int) -> None:
        self.returns.append(float(ret))
        self.lengths.append(int(length))
        self.unlogged.append((float(ret), int(length), int(timestep)))
        self.count += 1

    def take_unlogged(self) -> list[Episode]:
        taken = list(self.unlogged)
        self.unlogged.clear()
        return taken

    @property
    def mean_return(self) -> float:
        return sum(self.returns) / len(self.returns) if self.returns else math.nan

    @property
    def mean_length(self) -> float:
        return sum(self.lengths) / len(self.lengths) if self.lengths else math.nan


Scalars = Callable[[dict[str, Any]], Iterable[tuple[str, float, int]]]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def cleanrl_scalars(row: dict[str, Any]) -> Iterator[tuple[str, float, int]]:
    """A learner's row as TensorBoard scalars: CleanRL's tags, at the row's timesteps."""
    step = int(row.get("timesteps", 0))
    for key, value in row.items():
        if key != "timesteps" and _finite(value):
            yield tb_tag(key), value, step


@dataclass(frozen=True)
class LogLayout:
    """What a kind of run logs: its CSV's name and columns, how NaN is written there, and the
    TensorBoard scalars of a row. The learners' layout is LEARNER_LOG (learning.csv, CleanRL's
    tags); meta-training's is meta_train.loop's (metrics.csv, meta/; its MetricsLog writes
    by_env_steps/ apart)."""

    csv_name: str = LEARNING_CSV
    fields: tuple[str, ...] = CSV_FIELDS
    scalars: Scalars = cleanrl_scalars
    nan: str = ""


LEARNER_LOG = LogLayout()


def _keep_rows(path: Path, fields: Sequence[str], keep_below: int) -> None:
    """Rewrite the CSV with its rows whose first column is below `keep_below` (a resume after a
    crash drops the rows of the steps it does again)."""
    rows: list[dict[str, str]] = []
    if path.is_file() and keep_below > 0:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r[fields[0]]) < keep_below]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


class TrainLogger:
    """Rows to a CSV (learning.csv: appended on resume; or, with `keep_rows_below`, the rows
    before that step kept) and TensorBoard; a progress bar on stderr. Every learner logs
    through it, and meta-training (meta_train.loop.MetricsLog) too."""

    def __init__(
        self,
        out_dir: str | Path | None,
        total_timesteps: int | None = None,
        start_timesteps: int = 0,
        tensorboard: bool = True,
        progress_bar: bool = True,
        resume: bool = False,
        config: dict[str, Any] | None = None,
        *,
        layout: LogLayout = LEARNER_LOG,
        keep_rows_below: int | None = None,
        unit: str = "step",
        desc: str | None = None,
    ) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.layout = layout
        self.start_time = time.monotonic()
        self._csv_file: TextIO | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._tb: Any = None
        self._bar: Any = None
        self._last_timesteps = start_timesteps
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._open_csv(self.out_dir / layout.csv_name, resume, keep_rows_below)
            if tensorboard:
                self._tb = summary_writer(self.out_dir / "tb", keep_rows_below, config)
        if progress_bar:  # a tqdm bar on a terminal, plain lines in a log (or without tqdm)
            from sonic_common.progress import progress

            self._bar = progress(total_timesteps, start_timesteps, unit=unit, desc=desc)

    def _open_csv(self, path: Path, resume: bool, keep_rows_below: int | None) -> None:
        fields = self.layout.fields
        if keep_rows_below is not None:
            _keep_rows(path, fields, keep_rows_below)
            append = True
        else:
            append = resume and path.is_file() and path.stat().st_size > 0
        self._csv_file = open(path, "a" if append else "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=fields, extrasaction="ignore")
        if not append:
            self._csv.writeheader()
            self._csv_file.flush()

    def advance(self, timesteps: int, postfix: dict[str, Any] | None = None) -> None:
        """Move the progress bar to `timesteps` (total so far)."""
        if self._bar is not None:
            self._bar.update(timesteps - self._last_timesteps)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
        self._last_timesteps = timesteps

    def log(self, row: dict[str, Any]) -> None:
        if "time_s" in self.layout.fields:
            row = {**row, "time_s": round(time.monotonic() - self.start_time, 3)}
        if self._csv is not None and self._csv_file is not None:
            self._csv.writerow(
                {k: _fmt(row.get(k, math.nan), self.layout.nan) for k in self.layout.fields}
            )
            self._csv_file.flush()
        if self._tb is not None:
            for tag, value, step in self.layout.scalars(row):
                self._tb.add_scalar(tag, value, step)
            self._tb.flush()

    def log_episodes(self, episodes: Iterable[Episode]) -> None:
        """Each finished episode to TensorBoard at the timestep it ended, as CleanRL logs them."""
        if self._tb is None:
            return
        for ret, length, step in episodes:
            self._tb.add_scalar(EPISODE_TAGS[0], ret, step)
            self._tb.add_scalar(EPISODE_TAGS[1], length, step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._csv_file is not None:
            self._csv_file.close()


def summary_writer(path: Path, purge_step: int | None, config: dict[str, Any] | None) -> Any:
    """A TensorBoard writer (None without tensorboard, e.g. in the agent image); the config as
    text, unless this run goes on from a step where it was written already."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    writer = SummaryWriter(str(path), purge_step=purge_step)
    if config and not purge_step:
        writer.add_text("hyperparameters", config_text(config))
    return writer


def _fmt(value: Any, nan: str) -> Any:
    if isinstance(value, float):
        return nan if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value
