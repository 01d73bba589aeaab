"""Result rows -> the leaderboard (Markdown, and optionally figures and one HTML page).

Reads Parquet rows only; never re-runs anything. One section per benchmark; in it one table per
(evaluator, target dataset, label fraction) with a row per pretrained variant (method label plus
its pretraining data, epochs, steps and batch size): mean +/- sample std over seeds, the 95%
t-interval of the first metric, n, pretraining time, throughput and hardware. Random-init and
supervised rows appear in every table (marked "not run" when absent).

Metrics named ``<family>_<param><number>`` (``fgsm_eps0.031``, ``blur_s2``) are curves, not columns:
each family gets its own table (one column per value) and a plot. When figures are asked for, a
section also plots what its rows vary: pretraining loss per epoch, accuracy against the label
fraction, the pretraining steps, the batch size and the pretraining set size, and tabulates the
sensitivity to pretraining size (the pretext-tasks study's measure: the std of accuracy across sizes,
averaged over the downstream datasets). ``notes`` add one line of findings under a section or a table,
and one paragraph per component (``[methods]``, ``[backbones]``, ...: see :data:`NOTE_KINDS`) at the end.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ssl_bench.harness.errors import SpecError
from ssl_bench.harness.record import plots
from ssl_bench.harness.record.atomic import atomic_write_text
from ssl_bench.harness.record.report import Block, Heading, Image, Table, Text, to_html, to_markdown

BASELINES = ("supervised", "random_init")
METRIC_ORDER = ("top1", "top2", "top5", "auc", "mean_class_acc")
CURVE = re.compile(r"^(?P<family>[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*?)_(?P<param>[a-z]+)(?P<value>\d+(?:\.\d+)?)$")
"""A curve metric: family, parameter name and value (``pgd_eps0.031`` -> pgd, eps, 0.031)."""
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)
"""Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (1.96 beyond)."""
SIZE = re.compile(r"^(?P<name>.*)\[(?P<size>\d+)\]$")
NOTE_KINDS = {"methods": "Method notes", "evaluators": "Evaluator notes", "backbones": "Backbone notes",
              "datasets": "Dataset notes", "augmentations": "Augmentation notes"}
"""Tables of the notes file that are not benchmarks: component kind -> the heading of its section at the end.
Each holds ``<registered name> = "..."``, one string per component (what was measured choosing its defaults)."""

Row = dict[str, Any]
Notes = Mapping[str, Mapping[str, str]]


def mean_std(values: list[float]) -> str:
    """'72.31 ± 1.20' (sample std), or '72.31' for one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def ci95(values: list[float]) -> str:
    """'[70.1, 74.5]': the 95% Student-t interval of the mean; '' for fewer than two values."""
    if len(values) < 2:
        return ""
    n = len(values)
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * statistics.stdev(values) / math.sqrt(n)
    mean = statistics.fmean(values)
    return f"[{mean - half:.2f}, {mean + half:.2f}]"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _metric_key(metric: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), metric)


def variant(r: Row) -> tuple[str, str, int, int, int]:
    """What distinguishes one table row: the label and the pretraining it stands for."""
    return (r["label"], r["pretrain_dataset"], r["pretrain_epochs"], r["pretrain_batch_size"], r["pretrain_steps"])


def pretraining(r: Row) -> str:
    if not r["pretrain_steps"]:
        return "none"
    total = r.get("pretrain_total_steps") or r["pretrain_steps"]
    if r["pretrain_steps"] < total:  # a snapshot taken during a longer run
        return (f"{r['pretrain_dataset']}, step {r['pretrain_steps']} of {r['pretrain_epochs']} ep ({total} steps), "
                f"batch {r['pretrain_batch_size']}")
    return (f"{r['pretrain_dataset']}, {r['pretrain_epochs']} ep ({r['pretrain_steps']} steps), "
            f"batch {r['pretrain_batch_size']}")


def _by_variant(rows: list[Row]) -> dict[tuple[str, str, int, int, int], list[Row]]:
    groups: dict[tuple[str, str, int, int, int], list[Row]] = defaultdict(list)
    for r in rows:
        groups[variant(r)].append(r)
    return groups


def table(rows: list[Row]) -> Table:
    """The table of rows of one (benchmark, evaluator, dataset, label fraction); curve metrics left out."""
    metrics = sorted({r["metric"] for r in rows if not CURVE.match(r["metric"])}, key=_metric_key)
    lines = []
    for rs in _by_variant(rows).values():
        first = rs[0]
        per_metric = {m: [r["value"] for r in rs if r["metric"] == m] for m in metrics}
        pre = {r["pretrain_key"]: r for r in rs}.values()
        wall = statistics.fmean(r["pretrain_wall_s"] for r in pre)
        speed = [r["pretrain_images_per_s"] for r in pre if r["pretrain_images_per_s"]]
        lines.append({
            "Method": first["label"], "Backbone": first["backbone"], "Pretraining": pretraining(first),
            **{m: mean_std(v) if v else "" for m, v in per_metric.items()},
            f"{metrics[0]} 95% CI" if metrics else "95% CI": ci95(per_metric[metrics[0]]) if metrics else "",
            "n": str(len({r["seed"] for r in rs})),
            "Pretrain time": duration(wall) if first["pretrain_steps"] else "",
            "img/s": f"{statistics.fmean(speed):.0f}" if speed else "", "Device": first["device"],
            "_sort": statistics.fmean(per_metric[metrics[0]]) if metrics and per_metric[metrics[0]] else -1.0,
        })
    present = {r["method"] for r in rows}
    for baseline in BASELINES:
        if baseline not in present:
            lines.append({"Method": f"{baseline} (not run)", "_sort": -2.0})
    lines.sort(key=lambda d: -d["_sort"])
    ci = f"{metrics[0]} 95% CI" if metrics else "95% CI"
    headers = ["Method", "Backbone", "Pretraining", *metrics, ci, "n", "Pretrain time", "img/s", "Device"]
    return Table(headers, [[str(d.get(h, "")) for h in headers] for d in lines])


def curves(rows: list[Row]) -> dict[tuple[str, str], dict[str, dict[float, list[float]]]]:
    """(family, param) -> variant label -> value -> metric values over seeds."""
    out: dict[tuple[str, str], dict[str, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        m = CURVE.match(r["metric"])
        if m:
            out[(m["family"], m["param"])][label_of(r, rows)][float(m["value"])].append(r["value"])
    return out


def label_of(r: Row, rows: list[Row]) -> str:
    """The label, qualified by the pretraining where one label has several variants in ``rows``."""
    same = {variant(o) for o in rows if o["label"] == r["label"]}
    return r["label"] if len(same) == 1 else f"{r['label']} ({pretraining(r)})"


def curve_table(points: Mapping[str, Mapping[float, list[float]]], param: str) -> Table:
    values = sorted({v for p in points.values() for v in p})
    rows = [[label, *(mean_std(p[v]) if v in p else "" for v in values)] for label, p in points.items()]
    return Table(["Method", *(f"{param} {v:g}" for v in values)], rows)


class Figures:
    """Where figures go and how the document links them; ``None`` folder = no figures."""

    def __init__(self, folder: Path | None, document_dir: Path | None) -> None:
        self.folder = folder if folder is not None and plots.available() else None
        self.document_dir = document_dir

    def plot(self, name: str, series: Mapping[str, list[tuple[float, float]]], **labels: Any) -> list[Block]:
        series = {k: v for k, v in series.items() if len(v) >= 2}
        if self.folder is None or not series:
            return []
        path = plots.line_plot(series, self.folder / f"{slug(name)}.png", **labels)
        link = os.path.relpath(path, self.document_dir) if self.document_dir else str(path)
        return [Image(Path(link).as_posix(), str(labels.get("title", name)))]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def mean_points(points: Mapping[float, list[float]]) -> list[tuple[float, float]]:
    return [(x, statistics.fmean(ys)) for x, ys in points.items()]


def section(benchmark: str, rows: list[Row], notes: Mapping[str, str], figures: Figures) -> list[Block]:
    """The blocks of one benchmark."""
    blocks: list[Block] = [Heading(2, benchmark)]
    if "study" in notes:
        blocks.append(Text(f"**Finding.** {notes['study']}"))
    groups: dict[tuple[str, str, float], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["evaluator"], r["dataset"], r["label_fraction"])].append(r)
    for (evaluator, dataset, fraction), rs in sorted(groups.items()):
        heading = f"{evaluator} on {dataset} ({'all labels' if fraction >= 1 else f'{fraction:.0%} of labels'})"
        blocks += [Heading(3, heading)]
        if heading in notes:
            blocks.append(Text(f"**Finding.** {notes[heading]}"))
        if any(not CURVE.match(r["metric"]) for r in rs):
            blocks.append(table(rs))
        for (family, param), points in sorted(curves(rs).items()):
            blocks += [Text(f"{family}: top-1 (%) by {param}"), curve_table(points, param)]
            blocks += figures.plot(f"{benchmark} {heading} {family}",
                                   {k: mean_points(v) for k, v in points.items()},
                                   title=f"{family}, {evaluator} on {dataset}", xlabel=param, ylabel="top-1 (%)")
    blocks += trends(benchmark, rows, figures)
    return blocks


def trends(benchmark: str, rows: list[Row], figures: Figures) -> list[Block]:
    """Figures (and the sensitivity table) of what the benchmark's rows vary."""
    blocks: list[Block] = []
    losses: dict[str, list[tuple[float, float]]] = {}
    for rs in _by_variant([r for r in rows if r["pretrain_epoch_losses"]]).values():
        per_seed = list({r["pretrain_key"]: r["pretrain_epoch_losses"] for r in rs}.values())
        epochs = min(len(v) for v in per_seed)
        losses[label_of(rs[0], rows)] = [(e + 1, statistics.fmean(v[e] for v in per_seed)) for e in range(epochs)]
    blocks += figures.plot(f"{benchmark} pretraining loss", losses, title=f"{benchmark}: pretraining loss",
                           xlabel="epoch", ylabel="loss")
    top1 = [r for r in rows if r["metric"] == "top1"]
    by_eval: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in top1:
        by_eval[(r["evaluator"], r["dataset"])].append(r)
    sensitivity: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (evaluator, dataset), rs in sorted(by_eval.items()):
        name = f"{evaluator} on {dataset}"
        for axis, (column, x_of, context) in AXES.items():
            series = _series(rs, column, x_of, context)
            blocks += figures.plot(f"{benchmark} {name} vs {axis}", series, title=f"{name}: top-1 vs {axis}",
                                   xlabel=axis, ylabel="top-1 (%)", logx=axis != "pretraining steps")
            if axis == "pretraining set size":
                for label, points in series.items():
                    if len(points) >= 2:
                        sensitivity[label][evaluator].append(statistics.pstdev(y for _, y in points))
    if blocks:
        blocks.insert(0, Heading(3, "Trends"))
    if sensitivity:
        evaluators = sorted({e for per in sensitivity.values() for e in per})
        blocks += [Text("Sensitivity to pretraining size: std of top-1 across pretraining sizes, averaged over the "
                        "downstream datasets (the pretext-tasks study's measure; lower = more stable)."),
                   Table(["Method", *evaluators],
                         [[label, *(f"{statistics.fmean(per[e]):.2f}" if per.get(e) else "" for e in evaluators)]
                          for label, per in sorted(sensitivity.items())])]
    return blocks


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


def _series(rows: list[Row], column: str, x_of: Callable[[Row], float | None],
            context: tuple[str, ...]) -> dict[str, list[tuple[float, float]]]:
    """label -> [(x, mean top-1)]: a line per label and per value of the ``context`` columns."""
    points: dict[tuple[str, tuple[Any, ...]], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        x = x_of(r)
        if x is None or (column != "label_fraction" and not r["pretrain_steps"]):
            continue  # an untrained encoder has no pretraining axis
        points[(r["label"], tuple(r[c] for c in context))][float(x)].append(r["value"])
    lines = {k: p for k, p in points.items() if len(p) >= 2}
    per_label = Counter(label for label, _ in lines)
    return {label if per_label[label] == 1 else f"{label} ({', '.join(str(c) for c in ctx)})": mean_points(p)
            for (label, ctx), p in lines.items()}


def build(rows: Iterable[Row], title: str = "Leaderboard", notes: Notes | None = None,
          figures: Figures | None = None) -> list[Block]:
    """The whole leaderboard as blocks."""
    rows = [r for r in rows if r.get("status", "ok") == "ok" and r.get("split", "test") == "test"]
    blocks: list[Block] = [
        Heading(1, title),
        Text("Regenerated from Parquet results by `bench leaderboard`; do not edit by hand. "
             "Accuracies in percent on the test split, mean ± sample std over seeds (n seeds) and the 95% "
             "Student-t interval of the mean; hyper-parameters were chosen on a validation split carved "
             "from the training split."),
    ]
    notes = notes or {}
    if not rows:
        return blocks + [Text("No results yet.")] + component_notes(notes)
    by_benchmark: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_benchmark[r["benchmark"]].append(r)
    for benchmark in sorted(by_benchmark):
        found = {} if benchmark in NOTE_KINDS else notes.get(benchmark, {})  # a component table is not a study's
        blocks += section(benchmark, by_benchmark[benchmark], found, figures or Figures(None, None))
    return blocks + component_notes(notes)


def component_notes(notes: Notes) -> list[Block]:
    """A section per component kind of :data:`NOTE_KINDS` in ``notes``: one paragraph per component, by name."""
    blocks: list[Block] = []
    for kind, heading in NOTE_KINDS.items():
        if notes.get(kind):
            blocks.append(Heading(2, heading))
            blocks += [Text(f"**{name}**: {text}") for name, text in sorted(notes[kind].items())]
    return blocks


def render(rows: Iterable[Row], title: str = "Leaderboard", notes: Notes | None = None) -> str:
    """The leaderboard as Markdown, without figures."""
    markdown: str = to_markdown(build(rows, title, notes))
    return markdown


def read_notes(path: Path) -> dict[str, dict[str, str]]:
    """Findings from a TOML file: ``[<benchmark>]`` tables of ``study = "..."`` and ``"<table heading>" = "..."``;
    ``[methods]`` (and the other tables of :data:`NOTE_KINDS`) of ``<registered name> = "..."``."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(str(path), "", f"cannot read the notes file ({exc})") from None
    for benchmark, table_ in data.items():
        if not isinstance(table_, dict) or not all(isinstance(v, str) for v in table_.values()):
            raise SpecError(str(path), benchmark,
                            "expected a table of strings (study = \"...\", \"<table heading>\" = \"...\")")
    return data


def publish(rows: Iterable[Row], *, title: str, output: Path | None = None, html: Path | None = None,
            notes: Path | None = None, figures: Path | None = None) -> str:
    """Write the Markdown (and the HTML page, with figures) and return the Markdown.

    Figures go to ``figures`` (default: ``figures/`` beside the Markdown, or beside the HTML page);
    they are drawn only when one of the two documents is written to a file and matplotlib is installed.
    """
    rows = list(rows)
    found = read_notes(notes) if notes else {}
    anchor = output or html
    folder = figures or (anchor.parent / "figures" if anchor else None)
    markdown: str = to_markdown(build(rows, title, found, Figures(folder, output.parent if output else None)))
    if output:
        atomic_write_text(output, markdown)
    if html:
        blocks = build(rows, title, found, Figures(folder, html.parent))
        atomic_write_text(html, to_html(blocks, title))
    return markdown
