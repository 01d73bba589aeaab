"""Result rows -> the leaderboard (Markdown, and optionally SVG figures and one HTML page).

Reads Parquet rows only; never re-runs anything. One section per benchmark. It opens with the study's summary
(:func:`~ssl_bench.harness.record.summary.summary`: a row per method and budget, kNN / linear / fine-tune top-1
side by side, a rank, the best values bold, the baselines in a block of their own). Then one detail table per
(evaluator, target dataset, label fraction) and pretraining budget (:func:`by_budget`: no ranking mixes
budgets) with a row per configuration (:data:`~ssl_bench.harness.record.pooling.CONFIG`: the seed is the only
column pooled; two configurations under one label are two rows, named by what differs, ``SimCLR
(temperature=0.5)``): mean +/- sample std over seeds, the 95% t-interval of the first metric from three seeds on
(:func:`ci95`), n, pretraining time, throughput and hardware; the columns that hold one value in every row are
said once above the table (:func:`folded`). Random-init and supervised rows appear in every table, below the
methods (marked "not run" when absent). Detection rows get the survey's layout (:mod:`.detection`: AP / AP50 /
AP75, frozen and fine-tuned backbone side by side); the online linear probe is a protocol of its own, never ranked
with the offline one. Rows whose job is not in the current plan (``current_keys``) are left out or shown apart
(``show_stale``).

Metrics named ``<family>_<param><number>`` (``fgsm_eps0.031``, ``blur_s2``) are curves, not columns:
each family gets its own table (one column per value) and a plot. When figures are asked for, a
section also plots what its rows vary: pretraining loss per epoch, accuracy against the label
fraction, the pretraining steps, the batch size and the pretraining set size, and tabulates the
sensitivity to pretraining size (the pretext-tasks study's measure: the std of accuracy across sizes,
averaged over the downstream datasets). A method label has one colour in every figure of a page
(:class:`Figures`), and each line carries a band over its seeds. ``notes`` add one line of findings under a
section or a table, and one paragraph per component (``[methods]``, ``[backbones]``, ...: see :data:`NOTE_KINDS`)
at the end.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ssl_bench.harness.errors import SpecError
from ssl_bench.harness.record import detection, plots
from ssl_bench.harness.record.atomic import atomic_write_text
from ssl_bench.harness.record.pooling import (
    BASELINES,
    Budget,
    Row,
    budget,
    by_config,
    ci95,
    config,
    duration,
    mean_std,
    namer,
    per_seed,
    pretraining,
    table_budget,
    table_budget_key,
    table_title,
    timed_on,
    timing_mark,
)
from ssl_bench.harness.record.report import (
    Block,
    Heading,
    Table,
    Text,
    constant_columns,
    empty_columns,
    md_escape,
    md_inline,
    to_html,
    to_markdown,
)
from ssl_bench.harness.record.summary import summary
from ssl_bench.harness.record.trends import Figures, labels_of, trends

__all__ = ["BASELINES", "NOTE_KINDS", "Budget", "Figures", "build", "by_budget", "ci95", "config", "mean_std",
           "publish", "read_notes", "render", "table"]

METRIC_ORDER = ("top1", "top2", "top5", "auc", "mean_class_acc")
CURVE = re.compile(r"^(?P<family>[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*?)_(?P<param>[a-z]+)(?P<value>\d+(?:\.\d+)?)$")
"""A curve metric: family, parameter name and value (``pgd_eps0.031`` -> pgd, eps, 0.031)."""
NOTE_KINDS = {"methods": "Method notes", "evaluators": "Evaluator notes", "backbones": "Backbone notes",
              "datasets": "Dataset notes", "augmentations": "Augmentation notes"}
"""Tables of the notes file that are not benchmarks: component kind -> the heading of its section at the end.
Each holds ``<registered name> = "..."``, one string per component (what was measured choosing its defaults)."""
FOLDED = ("Backbone", "Pretraining", "Device")
"""Columns of a detail table said once, in a line above it, where they hold one value in every row. Device: what the
encoders' timings were measured on where the rows record it (``pretrain_device``), else where they were evaluated."""
ONLINE = ("Online linear probe: a linear head trained on detached features beside pretraining, a protocol of its "
          "own; not ranked with the offline linear probe.")

Notes = Mapping[str, Mapping[str, str]]


def _metric_key(metric: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), metric)


def table(rows: list[Row], others: Iterable[str] = ()) -> Table:
    """One table: a row per configuration (its seeds pooled) sorted by the first metric, the baselines in a block
    below (marked "not run", or "not run at this budget" when in ``others``, the methods of the other budgets);
    curves left out."""
    metrics = sorted({r["metric"] for r in rows if not CURVE.match(r["metric"])}, key=_metric_key)
    ci = f"{metrics[0]} 95% CI" if metrics else "95% CI"
    name = namer(rows)
    lines: list[dict[str, Any]] = []
    for rs in by_config(rows).values():
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
            "Pretrain time": timing_mark(pre, duration(statistics.fmean(wall)))
            if first["pretrain_steps"] and wall else "",
            "img/s": timing_mark(pre, f"{statistics.fmean(speed):.0f}") if speed and first["pretrain_steps"] else "",
            "Device": (timed_on(pre) if first["pretrain_steps"] else "")
            or ", ".join(sorted({str(r["device"]) for r in rs if r["device"]})),
            "_sort": statistics.fmean(top) if top else -1.0, "_baseline": first["method"] in BASELINES,
        })
    present, elsewhere = {r["method"] for r in rows}, set(others)
    for baseline in BASELINES:
        if baseline not in present:
            why = "not run at this budget" if baseline in elsewhere else "not run"
            lines.append({"Method": f"{baseline} ({why})", "_sort": -2.0, "_baseline": True})
    lines.sort(key=lambda d: (d["_baseline"], -d["_sort"], d["Method"]))
    methods = sum(1 for d in lines if not d["_baseline"])
    headers = ["Method", "Backbone", "Pretraining", *metrics, ci, "n", "Pretrain time", "img/s", "Device"]
    return Table(headers, [[str(d.get(h, "")) for h in headers] for d in lines],
                 groups=((methods, "Baselines"),) if methods < len(lines) else ())


def folded(t: Table, columns: tuple[str, ...] = FOLDED) -> list[Block]:
    """``t`` less its ``columns`` that hold one value in every row (blanks and "none" aside), and before it a line
    saying those values once ("All rows: convnet_small, ..."); columns with nothing in them left out as well."""
    shared, empty = constant_columns(t, columns), empty_columns(t)
    if "Pretraining" in t.headers and "Pretraining" not in shared and "Pretraining" in constant_columns(
            t, ["Pretraining"], blank=("",)):  # every encoder untrained
        shared["Pretraining"] = "no pretraining"
    shared = {c: shared[c] for c in columns if c in shared}  # in the table's order
    if not shared:
        return [t.without(empty)]
    untrained = shared.get("Pretraining", "no pretraining") != "no pretraining" and any(
        row[t.headers.index("Pretraining")] == "none" for row in t.rows)
    words = ", ".join(md_escape(v) for v in shared.values())
    return [Text(f"All rows: {words}{' (untrained encoders: no pretraining)' if untrained else ''}."),
            t.without({*shared, *empty})]


def by_budget(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """The tables of one (evaluator, dataset, label fraction) as (title, rows): one per pretraining budget, each
    with the untrained encoders of its pretraining data (they have no budget), so no ranking mixes budgets.
    Untrained encoders of other data get one more table; a single budget is one table titled ''."""
    budgets = sorted({b for r in rows if (b := table_budget(r)) is not None}, key=table_budget_key)
    untrained = [r for r in rows if budget(r) is None]
    rest = [r for r in untrained if r["pretrain_dataset"] not in {b[0] for b in budgets}]
    if not budgets or (len(budgets) == 1 and not rest):
        return [("", rows)]
    out = []
    for b in budgets:
        trained = [r for r in rows if table_budget(r) == b]
        same = len({pretraining(r) for r in trained}) == 1  # one step count: name it (else each row does)
        out.append((f"pretrained on {pretraining(trained[0]) if same else table_title(b)}",
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


def section(benchmark: str, rows: list[Row], notes: Mapping[str, str], figures: Figures, level: int = 2) -> list[Block]:
    """The blocks of one benchmark, its heading at ``level``: the summary (:func:`summary.summary`), then a table per
    (evaluator, dataset, label fraction) and pretraining budget (:func:`by_budget`), the curves of each, then the
    trends."""
    blocks: list[Block] = [Heading(level, benchmark)]
    if "study" in notes:
        blocks.append(Text(f"**Finding.** {md_inline(notes['study'])}"))
    first = summary(rows)
    blocks += [Heading(level + 1, "Summary"), *first] if first else []
    groups: dict[tuple[str, str, float], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["evaluator"], r["dataset"], r["label_fraction"])].append(r)
    for (evaluator, dataset, fraction), group in sorted(groups.items()):
        heading = f"{evaluator} on {dataset} ({'all labels' if fraction >= 1 else f'{fraction:.0%} of labels'})"
        blocks += [Heading(level + 1, heading)]
        if heading in notes:
            blocks.append(Text(f"**Finding.** {md_inline(notes[heading])}"))
        if evaluator == "online_linear":
            blocks.append(Text(ONLINE))
        methods = {r["method"] for r in group}
        for title, rs in by_budget(group):
            if title:
                blocks.append(Heading(level + 2, title))
            if evaluator == detection.EVALUATOR:
                blocks.append(detection.table(rs))
                continue
            if any(not CURVE.match(r["metric"]) for r in rs):
                blocks += folded(table(rs, methods))
            name = namer(rs)
            for (family, param), points in sorted(curves(rs).items()):
                blocks += [Text(f"{md_escape(family)}: top-1 (%) by {md_escape(param)}"), curve_table(points, param)]
                blocks += figures.plot(f"{benchmark} {heading} {title} {family}", points, labels_of(rs, name),
                                       title=f"{family}, {evaluator} on {dataset}" + (f", {title}" if title else ""),
                                       xlabel=param, ylabel="top-1 (%)")
    blocks += trends(benchmark, rows, figures, level + 1)
    return blocks


INTRO = ("Regenerated from Parquet results by `bench leaderboard`; do not edit by hand. Accuracies in percent on the "
         "test split. Each study opens with a summary table (a row per method and pretraining budget, the protocols "
         "side by side), then a table per protocol. A row is one configuration (method and its params, backbone, "
         "pretraining budget, evaluator and its params): mean ± sample std over its n seeds and the 95% Student-t "
         "interval of the mean, clipped to [0, 100], from three seeds on (`n=1` / `n=2` stand in its place). A "
         "table ranks one pretraining budget only: where a study varies the budget there is a table per budget, "
         "each with the untrained encoders; the trends plot the budget as an axis. Hyper-parameters were chosen on "
         "a validation split carved from the training split.")
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
    drawn = (figures or Figures(None, None)).with_colours(r["label"] for r in rows)  # one colour per label
    for benchmark, rs in sorted(_by_benchmark(rows).items()):
        found = {} if benchmark in NOTE_KINDS else notes.get(benchmark, {})  # a component table is not a study's
        blocks += section(benchmark, rs, found, drawn)
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
    they are drawn only when one of the two documents is written to a file and matplotlib is installed (without
    it, one line on stderr says that they were left out).
    ``benchmarks``, ``current_keys`` and ``show_stale`` filter as in :func:`build`.
    """
    rows = list(rows)
    found = read_notes(notes) if notes else {}
    anchor = output or html
    folder = figures or (anchor.parent / "figures" if anchor else None)
    if folder is not None and not plots.available():
        print("leaderboard: figures left out: matplotlib is not installed (pip install 'ssl-bench[plots]')",
              file=sys.stderr)
    filters: dict[str, Any] = {"benchmarks": benchmarks, "current_keys": current_keys, "show_stale": show_stale}
    blocks = build(rows, title, found, Figures(folder, output.parent if output else None), **filters)
    markdown: str = to_markdown(blocks)
    if output:
        atomic_write_text(output, markdown)
    if html:  # beside the Markdown, the same blocks link the same figures: drawn once
        if not (output and output.parent.resolve() == html.parent.resolve()):
            blocks = build(rows, title, found, Figures(folder, html.parent), **filters)
        atomic_write_text(html, to_html(blocks, title))
    return markdown
