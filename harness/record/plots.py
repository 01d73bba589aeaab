"""Line plots for the leaderboard (matplotlib, Agg backend: SVG files only, no display).

Every leaderboard figure is the same shape: one line per configuration, y against x, the seeds' spread as a band
(min to max) around the line through their means. A method keeps its colour in every figure of a page
(:func:`palette`: sorted method labels index a fixed list of colours); lines of one method in one figure differ by
their dash. matplotlib is imported lazily and is optional: without it the leaderboard has its tables and no figures.
"""

from __future__ import annotations

import importlib.util
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#000000", "#393b79", "#e7ba52", "#3b9c9c", "#ad494a", "#5254a3", "#74c476", "#ce6dbd",
           "#8c6d31", "#6baed6", "#fd8d3c", "#637939", "#9e9ac8", "#843c39", "#e7969c", "#bd9e39", "#7b4173",
           "#8ca252", "#d6616b", "#a55194")
"""Thirty distinct colours: matplotlib's tab10, then hues of tab20b / tab20c and black, ordered so that labels
next to each other in sorted order (SimCLR, SimCLR v2.1, Supervised, ...) get hues far apart."""
DASHES = ("-", "--", ":", "-.")
LEGEND_FONT_PT = 9
"""Legend text size, as the axis labels': readable where the page scales the figure down to a phone's width."""


def available() -> bool:
    """Whether matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def palette(labels: Iterable[str]) -> dict[str, str]:
    """Method label -> colour: the sorted distinct labels index :data:`COLOURS` (cycling past thirty), so a label has
    one colour in every figure drawn with this mapping."""
    return {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(sorted(set(labels)))}


@dataclass(frozen=True)
class Series:
    """One line of a figure."""

    name: str
    """Its legend entry (plain text)."""
    points: Sequence[tuple[float, Sequence[float]]]
    """(x, the values at x, one per seed); the line joins the means, a band spans the values."""
    colour: str
    """The colour of its method (:func:`palette`)."""
    group: str = ""
    """Its method's label: the SVG element of the line is ``line-<group slug>-<i>`` (the figure's i-th line)."""


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


def gid(group: str, i: int) -> str:
    """The id of a figure's i-th line in its SVG file, by its method's label."""
    return f"line-{re.sub(r'[^a-z0-9]+', '-', group.lower()).strip('-') or 'x'}-{i}"


def line_plot(series: Sequence[Series], path: Path, *, title: str, xlabel: str, ylabel: str, logx: bool = False,
              integer_x: bool = False) -> Path:
    """Draw one line per series through the means of its points, sorted by x, with a band from the lowest to the
    highest value at each x where there are two or more; write an SVG to ``path``.

    Args:
        series: the lines (:class:`Series`).
        path: the SVG file to write (its folder is made).
        title, xlabel, ylabel: plain text (:func:`plain`): a user's label cannot turn into mathtext.
        logx: a logarithmic x axis.
        integer_x: x takes whole numbers only (epochs, steps): ticks at whole numbers (also where every x given is
            one).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, ScalarFormatter

    xs_all = sorted({x for s in series for x, _ in s.points})
    integer_x = integer_x or all(float(x).is_integer() for x in xs_all)  # levels 1, 2, 3: no tick at 1.25
    # text stays text in the SVG (small, searchable); ids are salted for identical bytes from identical data
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ssl-bench"}):
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        try:
            dashes: dict[str, int] = {}
            for i, s in enumerate(series):
                points = sorted(s.points)
                xs = [x for x, _ in points]
                means = [statistics.fmean(v) for _, v in points]
                style = DASHES[dashes.get(s.colour, 0) % len(DASHES)]  # a method's second line is dashed
                dashes[s.colour] = dashes.get(s.colour, 0) + 1
                (line,) = ax.plot(xs, means, marker="o", markersize=3, linewidth=1.5, linestyle=style,
                                  color=s.colour, label=plain(s.name))
                line.set_gid(gid(s.group or s.name, i))
                if any(len(v) >= 2 for _, v in points):
                    ax.fill_between(xs, [min(v) for _, v in points], [max(v) for _, v in points], color=s.colour,
                                    alpha=0.15, linewidth=0)
            if logx:
                ax.set_xscale("log")
            if (logx or integer_x) and len(xs_all) <= 8:  # few values: a tick at each, written plainly
                ax.xaxis.set_major_locator(FixedLocator(xs_all))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.ticklabel_format(axis="x", style="plain", useOffset=False)
            elif integer_x:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ys = [statistics.fmean(v) for s in series for _, v in s.points]
            if spans_decades(ys):
                ax.set_yscale("log")
            elif spans_decades([abs(y) for y in ys if y]) and min(ys) <= 0 < max(ys):
                ax.set_yscale("symlog", linthresh=1.0)  # decades apart across zero (SimSiam's -0.9 beside 400)
            ax.set(title=plain(title), xlabel=plain(xlabel), ylabel=plain(ylabel))
            ax.grid(alpha=0.3)
            # below the axes, never over the data; two columns of entries keep the figure narrow for phones
            ax.legend(fontsize=LEGEND_FONT_PT, loc="upper center", bbox_to_anchor=(0.5, -0.2), borderaxespad=0.0,
                      ncol=1 if len(series) <= 3 else 2, frameon=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            # no date or version stamp: same data, same bytes; "tight" grows the canvas to hold the legend
            fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
        finally:
            plt.close(fig)
    return path

