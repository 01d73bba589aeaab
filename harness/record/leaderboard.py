"""Result rows -> the leaderboard (Markdown, and optionally figures and one HTML page).

Reads Parquet rows only; never re-runs anything. One section per benchmark; in it one table per
(evaluator, target dataset, label fraction) and pretraining budget (:func:`by_budget`: no ranking mixes
budgets) with a row per configuration (:data:`CONFIG`: the seed is the only column pooled; two configurations
under one label are two rows, named by what differs, ``SimCLR (temperature=0.5)``): mean +/- sample std over
seeds, the 95% t-interval of the first metric from three seeds on (:func:`ci95`), n, pretraining time,
throughput and hardware. Random-init and supervised rows appear in every table (marked "not run" when absent).
Rows whose job is not in the current plan (``current_keys``) are left out or shown apart (``show_stale``).

Metrics named ``<family>_<param><number>`` (``fgsm_eps0.031``, ``blur_s2``) are curves, not columns:
each family gets its own table (one column per value) and a plot. When figures are asked for, a
section also plots what its rows vary: pretraining loss per epoch, accuracy against the label
fraction, the pretraining steps, the batch size and the pretraining set size, and tabulates the
sensitivity to pretraining size (the pretext-tasks study's measure: the std of accuracy across sizes,
averaged over the downstream datasets). ``notes`` add one line of findings under a section or a table,
and one paragraph per component (``[methods]``, ``[backbones]``, ...: see :data:`NOTE_KINDS`) at the end.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ssl_bench.harness.errors import SpecError
from ssl_bench.harness.record import plots
from ssl_bench.harness.record.atomic import atomic_write_text
from ssl_bench.harness.record.report import (
    Block,
    Heading,
    Image,
    Table,
    Text,
    md_escape,
    md_inline,
    to_html,
    to_markdown,
)

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

CONFIG = ("benchmark", "split", "method", "label", "method_params", "backbone", "pretrain_dataset", "pretrain_epochs",
          "pretrain_steps", "pretrain_total_steps", "pretrain_batch_size", "evaluator", "evaluator_params", "dataset",
          "label_fraction")
"""The columns of a configuration: a table row pools the seeds of the rows equal in all of them. Left out: the seed,
what was chosen or measured (``hparams``, timings, losses), and where and with what it ran (device, host, versions,
git SHA, timestamp)."""
BUDGET = ("pretrain_epochs", "pretrain_steps", "pretrain_total_steps", "pretrain_batch_size")
"""The budget columns an untrained encoder (0 steps) records only nominally: not part of its configuration."""

Row = dict[str, Any]
Notes = Mapping[str, Mapping[str, str]]
Budget = tuple[str, int, int, int, int]


def mean_std(values: list[float]) -> str:
    """'72.31 ± 1.20' (sample std), or '72.31' for one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def ci95(values: list[float]) -> str:
    """The interval column's cell: '[70.10, 74.50]', the 95% Student-t interval of the mean clipped to [0, 100]
    (percentages), from three values on; 'n=1' / 'n=2' below (too few seeds for an interval); '' for none."""
    n = len(values)
    if n < 3:
        return f"n={n}" if n else ""
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * statistics.stdev(values) / math.sqrt(n)
    mean = statistics.fmean(values)
    return f"[{max(mean - half, 0.0):.2f}, {min(mean + half, 100.0):.2f}]"


def contended_mark(rows: Iterable[Row], cell: str) -> str:
    """``cell`` marked when any of these encoders trained while other processes kept the cores busy."""
    return f"{cell} (contended)" if any(r.get("pretrain_contended") for r in rows) else cell


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _metric_key(metric: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), metric)


def total_steps(r: Row) -> int:
    """Steps of the whole pretraining run (a row of schema 1 has no ``pretrain_total_steps``: its own steps)."""
    return int(r.get("pretrain_total_steps") or r["pretrain_steps"] or 0)


def config(r: Row) -> tuple[Any, ...]:
    """The configuration a row measures (:data:`CONFIG`), seed left out."""
    untrained = not r["pretrain_steps"]
    return tuple(None if untrained and c in BUDGET else total_steps(r) if c == "pretrain_total_steps" else r.get(c)
                 for c in CONFIG)


def budget(r: Row) -> Budget | None:
    """The pretraining budget of the row's encoder: data, epochs, batch size, steps and total steps; None untrained."""
    if not r["pretrain_steps"]:
        return None
    return (r["pretrain_dataset"], r["pretrain_epochs"], r["pretrain_batch_size"], r["pretrain_steps"], total_steps(r))


def _natural(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key reading digit runs as numbers: cifar10[2500] before cifar10[10000]."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t)


def _budget_key(b: Budget) -> tuple[Any, ...]:
    return (_natural(b[0]), b[1], b[2], b[4], b[3])


def pretraining(r: Row) -> str:
    if not r["pretrain_steps"]:
        return "none"
    total = total_steps(r)
    if r["pretrain_steps"] < total:  # a snapshot taken during a longer run
        return (f"{r['pretrain_dataset']}, step {r['pretrain_steps']} of {r['pretrain_epochs']} ep ({total} steps), "
                f"batch {r['pretrain_batch_size']}")
    return (f"{r['pretrain_dataset']}, {r['pretrain_epochs']} ep ({r['pretrain_steps']} steps), "
            f"batch {r['pretrain_batch_size']}")


@functools.lru_cache(maxsize=4096)
def _params(text: str | None) -> tuple[tuple[str, str], ...]:
    """A JSON object of params, flattened (``a.b``), values shown compactly: (("temperature", "0.5"), ...)."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return (("params", text or ""),)

    def flat(prefix: str, v: Any) -> Iterable[tuple[str, str]]:
        if isinstance(v, dict) and v:
            for k in sorted(v):
                yield from flat(f"{prefix}.{k}" if prefix else str(k), v[k])
        else:
            yield prefix, v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))

    return tuple(flat("", value)) if isinstance(value, dict) else (("params", str(value)),)


def facets(r: Row, *, evaluation: bool = True) -> dict[str, str]:
    """What a row's configuration sets besides its label and budget: key -> 'name=value' as a row name shows it.
    With ``evaluation=False`` only what makes the encoder (the method, its params, the backbone)."""
    out = {"method": f"method={r['method']}", "backbone": f"backbone={r['backbone']}"}
    out |= {f"method.{k}": f"{k}={v}" for k, v in _params(r["method_params"])}
    if evaluation:  # (the pretraining data tells untrained encoders apart; a budget names it otherwise)
        out["pretrain_dataset"] = f"data {r['pretrain_dataset']}"
        out |= {f"evaluator.{k}": f"{r['evaluator']} {k}={v}" for k, v in _params(r["evaluator_params"])
                if k != "label_fraction"}  # a column of its own: the table's, or the axis of a figure
    return out


def namer(rows: list[Row], *, evaluation: bool = True, with_budget: bool = False,
          within: Callable[[Row], Any] = lambda r: None) -> Callable[[Row], str]:
    """Row -> its name among ``rows``: the label, and what sets its configuration apart from the other configurations
    of that label (``SimCLR (temperature=0.5)``); the pretraining too, ``with_budget``, where a label has several.
    Only differences between rows of one ``within`` value count (a figure's x: a protocol that changes with the
    label fraction is one line along that axis)."""
    def parts(r: Row) -> dict[str, str]:
        return facets(r, evaluation=evaluation) | ({"budget": pretraining(r)} if with_budget else {})

    by_label: dict[tuple[str, Any], dict[tuple[Any, ...], dict[str, str]]] = defaultdict(dict)
    for r in rows:
        by_label[(r["label"], within(r))].setdefault(config(r), parts(r))
    differing: dict[str, set[str]] = defaultdict(set)
    for (label, _), found in by_label.items():
        keys = {k for f in found.values() for k in f}
        differing[label] |= {k for k in keys if len({f.get(k, "") for f in found.values()}) > 1}

    def name(r: Row) -> str:
        shown = [v for k, v in parts(r).items() if k in differing.get(r["label"], ())]
        return f"{r['label']} ({', '.join(shown)})" if shown else str(r["label"])

    return name


def _by_config(rows: list[Row]) -> dict[tuple[Any, ...], list[Row]]:
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in rows:
        groups[config(r)].append(r)
    return groups


def per_seed(rows: Iterable[Row], metric: str) -> list[float]:
    """One value per seed (by seed): a seed recorded twice (an untrained encoder under two nominal budgets) once."""
    seeds: dict[Any, list[float]] = defaultdict(list)
    for r in rows:
        if r["metric"] == metric and r["value"] is not None:
            seeds[r["seed"]].append(r["value"])
    return [statistics.fmean(v) for v in seeds.values()]


def table(rows: list[Row], others: Iterable[str] = ()) -> Table:
    """One table: a row per configuration (its seeds pooled) sorted by the first metric, baselines always (marked
    "not run", or "not run at this budget" when in ``others``, the methods of the other budgets); curves left out."""
    metrics = sorted({r["metric"] for r in rows if not CURVE.match(r["metric"])}, key=_metric_key)
    ci = f"{metrics[0]} 95% CI" if metrics else "95% CI"
    name = namer(rows)
    lines: list[dict[str, Any]] = []
    for rs in _by_config(rows).values():
        first = rs[0]
        per_metric = {m: per_seed(rs, m) for m in metrics}
        pre = list({r["pretrain_key"]: r for r in rs}.values())
        wall = [r["pretrain_wall_s"] for r in pre if r["pretrain_wall_s"] is not None]
        speed = [r["pretrain_images_per_s"] for r in pre if r["pretrain_images_per_s"]]
        top = per_metric[metrics[0]] if metrics else []
        lines.append({
            "Method": name(first), "Backbone": first["backbone"], "Pretraining": pretraining(first),
            **{m: mean_std(v) if v else "" for m, v in per_metric.items()},
            ci: ci95(top), "n": str(len({r["seed"] for r in rs})),
            "Pretrain time": contended_mark(pre, duration(statistics.fmean(wall)))
            if first["pretrain_steps"] and wall else "",
            "img/s": contended_mark(pre, f"{statistics.fmean(speed):.0f}") if speed and first["pretrain_steps"] else "",
            "Device": ", ".join(sorted({str(r["device"]) for r in rs if r["device"]})),
            "_sort": statistics.fmean(top) if top else -1.0,
        })
    present, elsewhere = {r["method"] for r in rows}, set(others)
    for baseline in BASELINES:
        if baseline not in present:
            why = "not run at this budget" if baseline in elsewhere else "not run"
            lines.append({"Method": f"{baseline} ({why})", "_sort": -2.0})
    lines.sort(key=lambda d: (-d["_sort"], d["Method"]))
    headers = ["Method", "Backbone", "Pretraining", *metrics, ci, "n", "Pretrain time", "img/s", "Device"]
    return Table(headers, [[str(d.get(h, "")) for h in headers] for d in lines])


def by_budget(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """The tables of one (evaluator, dataset, label fraction) as (title, rows): one per pretraining budget, each
    with the untrained encoders of its pretraining data (they have no budget), so no ranking mixes budgets.
    Untrained encoders of other data get one more table; a single budget is one table titled ''."""
    budgets = sorted({b for r in rows if (b := budget(r)) is not None}, key=_budget_key)
    untrained = [r for r in rows if budget(r) is None]
    rest = [r for r in untrained if r["pretrain_dataset"] not in {b[0] for b in budgets}]
    if not budgets or (len(budgets) == 1 and not rest):
        return [("", rows)]
    out = []
    for b in budgets:
        trained = [r for r in rows if budget(r) == b]
        out.append((f"pretrained on {pretraining(trained[0])}",
                    trained + [r for r in untrained if r["pretrain_dataset"] == b[0]]))
    return out + ([("untrained encoders", rest)] if rest else [])


def curves(rows: list[Row]) -> dict[tuple[str, str], dict[str, dict[float, list[float]]]]:
    """(family, param) -> configuration name -> value -> metric values, one per seed."""
    name = namer(rows)
    found: dict[tuple[str, str], dict[str, dict[float, dict[Any, list[float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for r in rows:
        m = CURVE.match(r["metric"])
        if m and r["value"] is not None:
            found[(m["family"], m["param"])][name(r)][float(m["value"])][r["seed"]].append(r["value"])
    return {key: {label: {x: [statistics.fmean(v) for v in seeds.values()] for x, seeds in points.items()}
                  for label, points in per_label.items()} for key, per_label in found.items()}


def curve_table(points: Mapping[str, Mapping[float, list[float]]], param: str) -> Table:
    values = sorted({v for p in points.values() for v in p})
    rows = [[label, *(mean_std(p[v]) if v in p else "" for v in values)] for label, p in sorted(points.items())]
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


def section(benchmark: str, rows: list[Row], notes: Mapping[str, str], figures: Figures, level: int = 2) -> list[Block]:
    """The blocks of one benchmark, its heading at ``level``: a table per (evaluator, dataset, label fraction) and
    pretraining budget (:func:`by_budget`), the curves of each, then the trends."""
    blocks: list[Block] = [Heading(level, benchmark)]
    if "study" in notes:
        blocks.append(Text(f"**Finding.** {md_inline(notes['study'])}"))
    groups: dict[tuple[str, str, float], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["evaluator"], r["dataset"], r["label_fraction"])].append(r)
    for (evaluator, dataset, fraction), group in sorted(groups.items()):
        heading = f"{evaluator} on {dataset} ({'all labels' if fraction >= 1 else f'{fraction:.0%} of labels'})"
        blocks += [Heading(level + 1, heading)]
        if heading in notes:
            blocks.append(Text(f"**Finding.** {md_inline(notes[heading])}"))
        methods = {r["method"] for r in group}
        for title, rs in by_budget(group):
            if title:
                blocks.append(Heading(level + 2, title))
            if any(not CURVE.match(r["metric"]) for r in rs):
                blocks.append(table(rs, methods))
            for (family, param), points in sorted(curves(rs).items()):
                blocks += [Text(f"{md_escape(family)}: top-1 (%) by {md_escape(param)}"), curve_table(points, param)]
                blocks += figures.plot(f"{benchmark} {heading} {title} {family}",
                                       {k: mean_points(v) for k, v in points.items()},
                                       title=f"{family}, {evaluator} on {dataset}" + (f", {title}" if title else ""),
                                       xlabel=param, ylabel="top-1 (%)")
    blocks += trends(benchmark, rows, figures, level + 1)
    return blocks


def trends(benchmark: str, rows: list[Row], figures: Figures, level: int = 3) -> list[Block]:
    """Figures (and the sensitivity table) of what the benchmark's rows vary; where a budget is the axis."""
    blocks: list[Block] = []
    trained = [r for r in rows if r["pretrain_epoch_losses"] and r["pretrain_steps"]]
    name = namer(trained, evaluation=False, with_budget=True)
    encoders: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in trained:
        encoders[(r["label"], r["method"], r["method_params"], r["backbone"], budget(r))].append(r)
    losses: dict[str, list[tuple[float, float]]] = {}
    for rs in encoders.values():
        seeds = list({r["pretrain_key"]: r["pretrain_epoch_losses"] for r in rs}.values())
        epochs = min(len(v) for v in seeds)
        losses[name(rs[0])] = [(e + 1, statistics.fmean(v[e] for v in seeds)) for e in range(epochs)]
    blocks += figures.plot(f"{benchmark} pretraining loss", losses, title=f"{benchmark}: pretraining loss",
                           xlabel="epoch", ylabel="loss")
    top1 = [r for r in rows if r["metric"] == "top1"]
    by_eval: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in top1:
        by_eval[(r["evaluator"], r["dataset"])].append(r)
    sensitivity: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (evaluator, dataset), rs in sorted(by_eval.items()):
        heading = f"{evaluator} on {dataset}"
        for axis, (column, x_of, context) in AXES.items():
            series = _series(rs, column, x_of, context)
            blocks += figures.plot(f"{benchmark} {heading} vs {axis}", series, title=f"{heading}: top-1 vs {axis}",
                                   xlabel=axis, ylabel="top-1 (%)", logx=axis != "pretraining steps")
            if axis == "pretraining set size":
                for label, points in series.items():
                    if len(points) >= 2:
                        sensitivity[label][evaluator].append(statistics.pstdev(y for _, y in points))
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


def _series(rows: list[Row], column: str, x_of: Callable[[Row], float | None],
            context: tuple[str, ...]) -> dict[str, list[tuple[float, float]]]:
    """name -> [(x, mean top-1)]: a line per configuration (budget aside) and per value of the ``context`` columns."""
    name = namer(rows, within=lambda r: (x_of(r), *(r[c] for c in context)))  # what would share a point
    points: dict[tuple[str, tuple[Any, ...]], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        x = x_of(r)
        if x is None or r["value"] is None or (column != "label_fraction" and not r["pretrain_steps"]):
            continue  # an untrained encoder has no pretraining axis
        points[(name(r), tuple(r[c] for c in context))][float(x)].append(r["value"])
    lines = {k: p for k, p in points.items() if len(p) >= 2}
    per_name = Counter(label for label, _ in lines)
    return {label if per_name[label] == 1 else f"{label} ({', '.join(str(c) for c in ctx)})": mean_points(p)
            for (label, ctx), p in lines.items()}


INTRO = ("Regenerated from Parquet results by `bench leaderboard`; do not edit by hand. Accuracies in percent on the "
         "test split. A row is one configuration (method and its params, backbone, pretraining budget, evaluator and "
         "its params): mean ± sample std over its n seeds and the 95% Student-t interval of the mean, clipped to "
         "[0, 100], from three seeds on (`n=1` / `n=2` stand in its place). A table ranks one pretraining budget "
         "only: where a study varies the budget there is a table per budget, each with the untrained encoders; the "
         "trends plot the budget as an axis. Hyper-parameters were chosen on a validation split carved from the "
         "training split.")
STALE = "Stale or from other files"


def build(rows: Iterable[Row], title: str = "Leaderboard", notes: Notes | None = None,
          figures: Figures | None = None, *, benchmarks: Collection[str] | None = None,
          current_keys: Collection[str] | None = None, show_stale: bool = False) -> list[Block]:
    """The whole leaderboard as blocks.

    Args:
        rows: result rows; failed ones and rows of other splits are left out.
        title: the document's heading.
        notes: findings (:func:`read_notes`).
        figures: where figures go; None: no figures.
        benchmarks: only the rows of these benchmarks (None: every benchmark).
        current_keys: the job keys of the current plan; rows of other keys are stale: left out (one line says how
            many), or with ``show_stale`` shown apart in a last section. None: every row is current.
        show_stale: show the stale rows in a section of their own, after the current ones.
    """
    rows = [r for r in rows if r.get("status", "ok") == "ok" and r.get("split", "test") == "test"
            and (benchmarks is None or r["benchmark"] in benchmarks)]
    stale = [] if current_keys is None else [r for r in rows if r["job_key"] not in current_keys]
    rows = rows if current_keys is None else [r for r in rows if r["job_key"] in current_keys]
    blocks: list[Block] = [Heading(1, title), Text(INTRO)]
    notes = notes or {}
    if stale and not show_stale:
        blocks.append(Text(f"{len({r['job_key'] for r in stale})} results in the folder come from no job of this "
                           "plan (an earlier version of the file, another file's results): kept on disk, left out "
                           "here; `bench leaderboard` shows every file."))
    if not rows and not (stale and show_stale):
        return blocks + [Text("No results yet.")] + component_notes(notes)
    for benchmark, rs in sorted(_by_benchmark(rows).items()):
        found = {} if benchmark in NOTE_KINDS else notes.get(benchmark, {})  # a component table is not a study's
        blocks += section(benchmark, rs, found, figures or Figures(None, None))
    if stale and show_stale:
        blocks += [Heading(2, STALE),
                   Text("Results that no job of the current plan produces (an earlier version of a benchmark file, "
                        "results copied in from elsewhere): not ranked with the rows above.")]
        for benchmark, rs in sorted(_by_benchmark(stale).items()):
            blocks += section(benchmark, rs, {}, Figures(None, None), level=3)
    return blocks + component_notes(notes)


def _by_benchmark(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        out[r["benchmark"]].append(r)
    return out


def component_notes(notes: Notes) -> list[Block]:
    """A section per component kind of :data:`NOTE_KINDS` in ``notes``: one paragraph per component, by name."""
    blocks: list[Block] = []
    for kind, heading in NOTE_KINDS.items():
        if notes.get(kind):
            blocks.append(Heading(2, heading))
            blocks += [Text(f"**{md_escape(name)}**: {md_inline(text)}") for name, text in sorted(notes[kind].items())]
    return blocks


def render(rows: Iterable[Row], title: str = "Leaderboard", notes: Notes | None = None, *,
           benchmarks: Collection[str] | None = None, current_keys: Collection[str] | None = None,
           show_stale: bool = False) -> str:
    """The leaderboard as Markdown, without figures; the filters are :func:`build`'s."""
    markdown: str = to_markdown(build(rows, title, notes, benchmarks=benchmarks, current_keys=current_keys,
                                      show_stale=show_stale))
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
            notes: Path | None = None, figures: Path | None = None, benchmarks: Collection[str] | None = None,
            current_keys: Collection[str] | None = None, show_stale: bool = False) -> str:
    """Write the Markdown (and the HTML page, with figures) and return the Markdown.

    Figures go to ``figures`` (default: ``figures/`` beside the Markdown, or beside the HTML page);
    they are drawn only when one of the two documents is written to a file and matplotlib is installed.
    ``benchmarks``, ``current_keys`` and ``show_stale`` filter as in :func:`build`.
    """
    rows = list(rows)
    found = read_notes(notes) if notes else {}
    anchor = output or html
    folder = figures or (anchor.parent / "figures" if anchor else None)
    filters: dict[str, Any] = {"benchmarks": benchmarks, "current_keys": current_keys, "show_stale": show_stale}
    markdown: str = to_markdown(build(rows, title, found, Figures(folder, output.parent if output else None),
                                      **filters))
    if output:
        atomic_write_text(output, markdown)
    if html:
        blocks = build(rows, title, found, Figures(folder, html.parent), **filters)
        atomic_write_text(html, to_html(blocks, title))
    return markdown
