"""The figures of the leaderboard: where they go, a colour per method label, and the trends of a study.

:class:`Figures` draws a figure (:func:`~ssl_bench.harness.record.plots.line_plot`, SVG) and links it from the
document; a method label keeps one colour in every figure of a page (:func:`~ssl_bench.harness.record.plots.palette`
over the page's labels), and each line carries a band over its seeds. :func:`trends` plots what a study's rows vary
(pretraining loss per epoch; top-1 against the label fraction, the pretraining steps, batch size and set size), where
a budget is the axis, and tabulates the sensitivity to the pretraining size (the pretext-tasks study's measure).
"""

from __future__ import annotations

import os
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ssl_bench.harness.record import plots
from ssl_bench.harness.record.pooling import Row, budget, namer
from ssl_bench.harness.record.report import Block, Heading, Image, Table, Text

SIZE = re.compile(r"^(?P<name>.*)\[(?P<size>\d+)\]$")
"""A dataset display with its size (``cifar10[10000]``)."""


class Figures:
    """Where figures go, how the document links them, and each method label's colour (:func:`plots.palette`, over
    every label of the page, so a method has one colour in all its figures); ``None`` folder = no figures."""

    def __init__(self, folder: Path | None, document_dir: Path | None,
                 colours: Mapping[str, str] | None = None) -> None:
        self.folder = folder if folder is not None and plots.available() else None
        self.document_dir = document_dir
        self.colours = dict(colours or {})

    def with_colours(self, labels: Iterable[str]) -> Figures:
        """These figures with a colour per label (:func:`plots.palette`)."""
        return Figures(self.folder, self.document_dir, plots.palette(labels))

    def plot(self, name: str, series: Mapping[str, Mapping[float, list[float]]], groups: Mapping[str, str],
             **labels: Any) -> list[Block]:
        """One figure of ``series`` (line name -> x -> the values at x, one per seed), each line coloured by its
        method label (``groups``: line name -> label); lines of fewer than two points are left out."""
        lines = {k: v for k, v in series.items() if len(v) >= 2}
        if self.folder is None or not lines:
            return []
        missing = plots.palette(groups[k] for k in lines if groups[k] not in self.colours)
        colour = self.colours | {k: plots.COLOURS[(len(self.colours) + i) % len(plots.COLOURS)]
                                 for i, k in enumerate(missing)}
        drawn = [plots.Series(k, sorted(v.items()), colour[groups[k]], groups[k]) for k, v in sorted(lines.items())]
        path = plots.line_plot(drawn, self.folder / f"{slug(name)}.svg", **labels)
        link = os.path.relpath(path, self.document_dir) if self.document_dir else str(path)
        return [Image(Path(link).as_posix(), str(labels.get("title", name)))]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def labels_of(rows: Iterable[Row], name: Callable[[Row], str]) -> dict[str, str]:
    """Line name -> the method label of its rows (what colours the line)."""
    return {name(r): r["label"] for r in rows}



def trends(benchmark: str, rows: list[Row], figures: Figures, level: int = 3) -> list[Block]:
    """Figures (and the sensitivity table) of what the benchmark's rows vary; where a budget is the axis."""
    blocks: list[Block] = []
    trained = [r for r in rows if r["pretrain_epoch_losses"] and r["pretrain_steps"]]
    name = namer(trained, evaluation=False, with_budget=True)
    encoders: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in trained:
        encoders[(r["label"], r["method"], r["method_params"], r["backbone"], budget(r))].append(r)
    losses: dict[str, dict[float, list[float]]] = {}
    for rs in encoders.values():
        seeds = list({r["pretrain_key"]: r["pretrain_epoch_losses"] for r in rs}.values())
        epochs = min(len(v) for v in seeds)
        losses[name(rs[0])] = {float(e + 1): [v[e] for v in seeds] for e in range(epochs)}
    blocks += figures.plot(f"{benchmark} pretraining loss", losses, labels_of(trained, name),
                           title=f"{benchmark}: pretraining loss", xlabel="epoch", ylabel="loss", integer_x=True)
    top1 = [r for r in rows if r["metric"] == "top1"]
    by_eval: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in top1:
        by_eval[(r["evaluator"], r["dataset"])].append(r)
    sensitivity: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (evaluator, dataset), rs in sorted(by_eval.items()):
        heading = f"{evaluator} on {dataset}"
        for axis, (column, x_of, context) in AXES.items():
            series, groups = _series(rs, column, x_of, context)
            blocks += figures.plot(f"{benchmark} {heading} vs {axis}", series, groups,
                                   title=f"{heading}: top-1 vs {axis}", xlabel=axis, ylabel="top-1 (%)",
                                   logx=axis != "pretraining steps", integer_x=axis != "label fraction")
            if axis == "pretraining set size":
                for label, points in series.items():
                    if len(points) >= 2:
                        means = [statistics.fmean(v) for v in points.values()]
                        sensitivity[label][evaluator].append(statistics.pstdev(means))
    if sensitivity:
        evaluators = sorted({e for per in sensitivity.values() for e in per})
        blocks += [Text("Sensitivity to pretraining size: std of top-1 across pretraining sizes, averaged over the "
                        "downstream datasets (the pretext-tasks study's measure; lower = more stable)."),
                   Table(["Method", *evaluators],
                         [[label, *(f"{statistics.fmean(per[e]):.2f}" if per.get(e) else "" for e in evaluators)]
                          for label, per in sorted(sensitivity.items())])]
    return [Heading(level, "Trends"), *blocks] if blocks else []


def _size(display: str) -> float | None:
    m = SIZE.match(display)
    return float(m["size"]) if m else None


AXES: dict[str, tuple[str, Callable[[Row], float | None], tuple[str, ...]]] = {
    "label fraction": ("label_fraction", lambda r: r["label_fraction"],
                       ("pretrain_dataset", "pretrain_steps", "pretrain_batch_size")),
    "pretraining steps": ("pretrain_steps", lambda r: r["pretrain_steps"],
                          ("label_fraction", "pretrain_dataset", "pretrain_batch_size")),
    "pretraining batch size": ("pretrain_batch_size", lambda r: r["pretrain_batch_size"],
                               ("label_fraction", "pretrain_dataset", "pretrain_epochs")),
    "pretraining set size": ("pretrain_dataset", lambda r: _size(r["pretrain_dataset"]),
                             ("label_fraction", "pretrain_batch_size", "pretrain_epochs")),
}
"""Figure axis -> (row column, x of a row, the columns a line holds fixed)."""
CONTEXT: dict[str, Callable[[Any], str]] = {
    "label_fraction": lambda v: f"{v:.0%} labels", "pretrain_dataset": str, "pretrain_steps": lambda v: f"{v} steps",
    "pretrain_batch_size": lambda v: f"batch {v}", "pretrain_epochs": lambda v: f"{v} ep"}
"""How a line's name says the value it holds fixed, where a label has lines at several."""


def _series(rows: list[Row], column: str, x_of: Callable[[Row], float | None], context: tuple[str, ...]
            ) -> tuple[dict[str, dict[float, list[float]]], dict[str, str]]:
    """name -> x -> top-1 values (one per seed): a line per configuration (budget aside) and per value of the
    ``context`` columns, named by the context values that differ between the lines of one label; and name -> label."""
    name = namer(rows, within=lambda r: (x_of(r), *(r[c] for c in context)))  # what would share a point
    points: dict[tuple[str, tuple[Any, ...]], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    label: dict[str, str] = {}
    for r in rows:
        x = x_of(r)
        if x is None or r["value"] is None or (column != "label_fraction" and not r["pretrain_steps"]):
            continue  # an untrained encoder has no pretraining axis
        points[(name(r), tuple(r[c] for c in context))][float(x)].append(r["value"])
        label[name(r)] = r["label"]
    lines = {k: p for k, p in points.items() if len(p) >= 2}
    contexts: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for line_name, ctx in lines:
        contexts[line_name].append(ctx)
    series: dict[str, dict[float, list[float]]] = {}
    groups: dict[str, str] = {}
    for (line_name, ctx), p in lines.items():
        differ = [i for i in range(len(context)) if len({c[i] for c in contexts[line_name]}) > 1]
        full = f"{line_name} ({', '.join(CONTEXT[context[i]](ctx[i]) for i in differ)})" if differ else line_name
        series[full], groups[full] = dict(p), label[line_name]
    return series, groups
