"""A study's summary table: one row per method and pretraining budget, the top-1 of each protocol side by side.

It reads the way lightly's benchmark tables read (a row per model, batch size and epochs; kNN, linear and
fine-tune top-1 in columns): the budget is columns of its own (backbone, data, epochs, steps, batch, pretrain time),
each cell is the mean and half its 95% interval over n >= 3 seeds, or the mean and ``n=1`` / ``n=2``
(:func:`~ssl_bench.harness.record.pooling.mean_interval`). The SSL methods of one budget are ranked by the first
protocol of :data:`RANKED_BY` the study has, and the best SSL value of each column at a budget is bold: rows of two
budgets are never ranked against each other (each budget is a block of rows, titled by what sets it apart). The
baselines (:data:`~ssl_bench.harness.record.pooling.BASELINES`, by method name) come in a block of their own below,
unranked. The online linear probe (trained beside
pretraining) is a column of its own and never ranks. A budget column that holds one value in every row is said
once, in the line above the table.

- [0] lightly, benchmarks (docs.lightly.ai, "Benchmarks": ImageNet, Imagenette and CIFAR-10 tables)
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from ssl_bench.harness.record.pooling import (
    BASELINES,
    Row,
    budget,
    budget_facets,
    budget_key,
    duration,
    mean_interval,
    namer,
    natural,
    params,
    per_seed,
    timed_on,
    timing_mark,
)
from ssl_bench.harness.record.report import Block, Table, Text, constant_columns, empty_columns, md_escape

PROTOCOLS = {"knn": "kNN", "linear": "Linear", "online_linear": "Online linear", "finetune": "Fine-tune"}
"""The evaluators a summary shows, in its column order, and their names there."""
RANKED_BY = ("linear", "knn", "finetune")
"""The protocol a summary ranks by: the first of these the study has (the online linear probe never ranks)."""
METRIC = "top1"
BUDGET_COLUMNS = ("Backbone", "Data", "Epochs", "Steps", "Batch")
FOLDED = {"Backbone": "{}", "Data": "pretrained on {}", "Epochs": "{} epochs", "Steps": "{} steps",
          "Batch": "batch {}", "Timed on": "timed on {}"}
"""How the line above the table says a column that is the same in every row (the pretraining's wall time, a
measurement, stays a column: "Pretrain time", as in the detail tables; the device it was timed on is said once
where every row shares it, and is a column where rows differ: their times are not comparable)."""
UNRECORDED = "not recorded"
"""The Timed on cell of rows written before ``pretrain_device`` existed (schema < 5)."""

Column = tuple[str, str, float, str]
"""(evaluator, target dataset, label fraction, evaluator params JSON)."""


def encoder(r: Row) -> tuple[Any, ...]:
    """What a summary row is: the method's configuration and its budget (an untrained encoder's data aside)."""
    return (r["label"], r["method"], r["method_params"], r["backbone"], budget(r))


def _column(r: Row) -> Column:
    return (r["evaluator"], r["dataset"], float(r["label_fraction"]), r["evaluator_params"] or "")


def _column_names(columns: list[Column]) -> dict[Column, str]:
    """Column -> header: the protocol, the target dataset where there are several, the label fraction below 1, and
    the evaluator params that tell two columns of one protocol apart."""
    datasets = {c[1] for c in columns}
    same: dict[tuple[str, str, float], list[Column]] = defaultdict(list)
    for c in columns:
        same[c[:3]].append(c)
    names = {}
    for c in columns:
        evaluator, dataset, fraction, _ = c
        words = [PROTOCOLS[evaluator]] + ([dataset] if len(datasets) > 1 else [])
        words += [f"{fraction:.0%}"] if fraction < 1 else []
        siblings = [dict(params(s[3])) for s in same[c[:3]]]
        mine = dict(params(c[3]))
        differ = sorted(k for k in {k for p in siblings for k in p} if k != "label_fraction"
                        and len({p.get(k) for p in siblings}) > 1)
        shown = ", ".join(f"{k}={mine.get(k, '-')}" for k in differ)
        words += [f"({shown})"] if differ else []
        names[c] = " ".join(words) + " top-1"
    return names


def _ranks(values: list[float | None]) -> list[str]:
    """Competition ranks (1, 2, 2, 4) of the values as shown (two decimals), highest first; '' for none."""
    shown = [round(v, 2) if v is not None else None for v in values]
    return ["" if v is None else str(1 + sum(1 for w in shown if w is not None and w > v)) for v in shown]


def summary(rows: list[Row]) -> list[Block]:
    """The summary of one study's rows: a line saying how to read it, a line of what every row shares (when any),
    and the table (:mod:`this module <ssl_bench.harness.record.summary>`); nothing where no protocol of
    :data:`PROTOCOLS` has a top-1."""
    rows = [r for r in rows if r["evaluator"] in PROTOCOLS and r["metric"] == METRIC and r["value"] is not None]
    if not rows:
        return []
    order = list(PROTOCOLS)
    columns = sorted({_column(r) for r in rows}, key=lambda c: (order.index(c[0]), natural(c[1]), c[2], c[3]))
    names = _column_names(columns)
    ranked_by = next((c for e in RANKED_BY for c in columns if c[0] == e), None)
    name = namer(rows, evaluation=False, key=encoder)
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in rows:
        groups[encoder(r)].append(r)
    lines: list[dict[str, Any]] = []
    for key, rs in groups.items():
        first = rs[0]
        cells = {c: per_seed([r for r in rs if _column(r) == c], METRIC) for c in columns}
        pre = list({r["pretrain_key"]: r for r in rs}.values())
        wall = [r["pretrain_wall_s"] for r in pre if r["pretrain_wall_s"] is not None]
        b = key[-1]
        lines.append({
            "Method": name(first), "baseline": first["method"] in BASELINES, "budget": b,
            "facets": {"budget.backbone": first["backbone"], **budget_facets(first)},  # a ranking's fixed parts
            "Backbone": first["backbone"], "Data": b[0] if b else "", "Epochs": str(b[1]) if b else "",
            "Steps": (str(b[3]) if b[3] == b[4] else f"{b[3]} of {b[4]}") if b else "",
            "Batch": str(b[2]) if b else "",
            "Pretrain time": timing_mark(pre, duration(statistics.fmean(wall))) if b and wall else "",
            "Timed on": (timed_on(pre) or UNRECORDED) if b and wall else "",
            "means": {c: statistics.fmean(v) if v else None for c, v in cells.items()},
            **{names[c]: mean_interval(v) for c, v in cells.items()},
        })
    methods = [d for d in lines if not d["baseline"]]
    by_budget: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for d in methods:
        by_budget[(d["Backbone"], d["budget"])].append(d)  # a backbone is part of the budget: never ranked across
    bold: set[tuple[int, str]] = set()
    ordered: list[dict[str, Any]] = []
    titles: list[tuple[int, str]] = []
    facets = [by_budget[b][0]["facets"] for b in by_budget]
    differ = [k for k in dict.fromkeys(k for f in facets for k in f) if len({f.get(k) for f in facets}) > 1]
    for block in sorted(by_budget, key=lambda k: (budget_key(k[1]) if k[1] else (), k[0])):
        group, b = by_budget[block], block[1]
        titles += [(len(ordered), ", ".join(v for k, v in group[0]["facets"].items() if k in differ or not b))]
        for d, rank in zip(group, _ranks([d["means"][ranked_by] if ranked_by else None for d in group])):
            d["Rank"] = rank
        group.sort(key=lambda d: (int(d["Rank"]) if d["Rank"] else len(group) + 1, d["Method"]))
        for c in columns:
            values = [round(v, 2) for d in group if (v := d["means"][c]) is not None]
            if len(values) >= 2:
                bold |= {(len(ordered) + i, names[c]) for i, d in enumerate(group)
                         if d["means"][c] is not None and round(d["means"][c], 2) == max(values)}
        ordered += group
    baselines = sorted((d for d in lines if d["baseline"]),
                       key=lambda d: (d["budget"] is None, budget_key(d["budget"]) if d["budget"] else (),
                                      -(d["means"][ranked_by or columns[0]] or -1.0)))  # untrained last
    present = {r["method"] for r in rows}
    baselines += [{"Method": f"{m} (not run)"} for m in BASELINES if m not in present]
    headers = ["Method", "Rank", *BUDGET_COLUMNS, *(names[c] for c in columns), "Pretrain time", "Timed on"]
    body = [[str(d.get(h, "")) for h in headers] for d in ordered + baselines]
    titles = titles if len(titles) > 1 else []  # one budget: no block titles but the baselines'
    table = Table(headers, body, frozenset((i, headers.index(h)) for i, h in bold),
                  tuple(titles) + (((len(ordered), "Baselines"),) if baselines else ()))
    shared = constant_columns(table, (*BUDGET_COLUMNS, "Timed on"))
    hidden = {"Timed on"} if shared.get("Timed on") == UNRECORDED else set()  # nothing to say once
    shared = {h: v for h, v in shared.items() if h not in hidden}
    blocks: list[Block] = [Text(_how_to_read(names[ranked_by] if ranked_by else None,
                                             any(c[0] == "online_linear" for c in columns), len(by_budget) > 1))]
    if shared:
        untrained = any(d["budget"] is None for d in lines)
        blocks.append(Text("All rows: " + ", ".join(FOLDED[h].format(md_escape(v)) for h, v in shared.items())
                           + (" (untrained encoders: no pretraining)" if untrained else "") + "."))
    return blocks + [table.without({*shared, *hidden, *empty_columns(table)})]


def _how_to_read(ranked_by: str | None, online: bool, budgets: bool) -> str:
    at = " at its budget" if budgets else ""
    per = " of one pretraining budget" if budgets else ""
    rank = f"Rank: by the {md_escape(ranked_by)} column among the SSL methods{per}. " if ranked_by else ""
    return ("Top-1 (%) on the test split: the mean ± half its 95% interval over n ≥ 3 seeds, else the mean and n. "
            f"{rank}Bold: the best SSL value of each column{at}. The baselines (random init, supervised) are below, "
            "not ranked."
            + (" Online linear: a probe trained beside pretraining, a protocol of its own, never ranked." if online
               else ""))
