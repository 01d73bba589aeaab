"""Line plots for the leaderboard (matplotlib, Agg backend: files only, no display).

Every leaderboard figure is the same shape: one line per method label, y against x. matplotlib is
imported lazily and is optional: without it the leaderboard has its tables and no figures.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path


def available() -> bool:
    """Whether matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def line_plot(series: Mapping[str, Sequence[tuple[float, float]]], path: Path, *, title: str, xlabel: str,
              ylabel: str, logx: bool = False) -> Path:
    """Draw one line per label through its (x, y) points, sorted by x; write a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    try:
        for label, points in series.items():
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label)
        if logx:
            ax.set_xscale("log")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Software": None})  # no version stamp: same data, same bytes
    finally:
        plt.close(fig)
    return path
