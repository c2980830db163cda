"""The reports' figure conventions, in one place: axis labels in words, whole-number step axes
(no SI prefixes or fractional ticks on an empty or tiny axis), a "no data yet" message on an empty
plot, and the meaning of a shaded band written on the figure itself."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

STEPS_LABEL = "environment steps (agent timesteps)"


def figure(
    width: float = 7.0, height: float = 4.0, dpi: int = 100, **subplots: Any
) -> tuple[Any, Any]:
    """A figure of `width` × `height` inches and its axes (`plt.subplots`' keywords), drawn
    without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=dpi, **subplots)


def _count_text(x: float, _pos: object = None) -> str:
    """12, 3k, 2.5k, 1.2M: thousands and millions only, never milli or micro."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    if abs(x) >= 1e3:
        return f"{x / 1e3:g}k"
    return f"{x:g}"


def count_axis(axis: Any) -> None:
    """Whole-number ticks for a count (steps, iterations, episodes), with k/M for large ones."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axis.set_major_formatter(FuncFormatter(_count_text))


def no_data(ax: Any, text: str = "no data yet") -> None:
    """An empty plot says so, on axes that do not pretend to a scale."""
    ax.text(
        0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray", fontsize=12
    )
    ax.set_xticks([])
    ax.set_yticks([])


NOTE_GID = "band-note"


def note(ax: Any, text: str) -> None:
    """What the line and the band are, written under the plot (never over the data), wrapped
    to the figure's width."""
    import textwrap

    width = int(ax.figure.get_figwidth() * 20)  # characters of 7-point text per line
    ax.figure.text(
        0.01,
        0.01,
        textwrap.fill(text, width),
        ha="left",
        va="bottom",
        fontsize=7,
        color="dimgray",
        gid=NOTE_GID,
    )


def save(fig: Any, path: Path) -> None:
    """Write the figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from sonic_common.files import write_atomic

    lines = sum(t.get_text().count("\n") + 1 for t in fig.texts if t.get_gid() == NOTE_GID)
    inches = lines * 7 * 1.3 / 72 + 0.05  # 7-point lines
    fig.tight_layout(rect=(0, min(0.3, inches / fig.get_figheight()) if lines else 0, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())
