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


def spans_decades(values: Sequence[float], decades: float = 2.0) -> bool:
    """Whether positive ``values`` span at least ``decades`` orders of magnitude (a log axis reads better).

    Pretraining losses differ that much between methods (counting's hinge ~400, InfoNCE ~5, BYOL ~0.5).
    """
    return bool(values) and min(values) > 0 and max(values) >= 10**decades * min(values)


def plain(text: str) -> str:
    """A label or title as matplotlib shows it literally: ``$`` escaped (no mathtext), a leading ``_`` kept (matplotlib
    leaves a label starting with ``_`` out of the legend)."""
    text = text.replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def line_plot(series: Mapping[str, Sequence[tuple[float, float]]], path: Path, *, title: str, xlabel: str,
              ylabel: str, logx: bool = False) -> Path:
    """Draw one line per label through its (x, y) points, sorted by x; write a PNG to ``path``.

    Labels and titles are plain text (:func:`plain`): a user's label cannot turn into mathtext.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    try:
        for i, (label, points) in enumerate(series.items()):
            xs, ys = zip(*sorted(points))
            style = ("-", "--", ":")[i // 10 % 3]  # the colour cycle has 10 colours: the 11th line is dashed
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, linestyle=style, label=plain(label))
        if logx:
            ax.set_xscale("log")
        if spans_decades([y for points in series.values() for _, y in points]):
            ax.set_yscale("log")
        ax.set(title=plain(title), xlabel=plain(xlabel), ylabel=plain(ylabel))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # beside, not over
        path.parent.mkdir(parents=True, exist_ok=True)
        # no version stamp: same data, same bytes; "tight" grows the canvas to hold the legend
        fig.savefig(path, metadata={"Software": None}, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
