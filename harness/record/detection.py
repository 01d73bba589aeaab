"""Detection tables: AP, AP50 and AP75 of each method, with a frozen and a fine-tuned backbone side by side.

The layout of the survey's object-detection table (its table 5: a column group per protocol, the backbone kept
frozen or fine-tuned with the detector), for the rows of the ``detection`` evaluator: metrics ``ap``, ``ap50`` and
``ap75`` (COCO-style average precision, percent) and ``"freeze": true / false`` in its params. One table per target
dataset (and pretraining budget: :func:`~ssl_bench.harness.record.leaderboard.by_budget`); a row per configuration
of the encoder, the freeze setting being the column group rather than part of the row; each cell the mean and half
its 95% interval over n >= 3 seeds, or the mean and ``n=1`` / ``n=2``; the best SSL value of each column bold, the
baselines in a block of their own below.

- [0] Jing & Tian, Self-supervised Visual Feature Learning with Deep Neural Networks: A Survey, 2019,
  arXiv:1902.06162 (table 5)
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import Any

from ssl_bench.harness.record.pooling import BASELINES, Row, config, mean_interval, namer, per_seed
from ssl_bench.harness.record.report import Table

EVALUATOR = "detection"
METRICS = {"ap": "AP", "ap50": "AP50", "ap75": "AP75"}
MODES = {True: "Frozen backbone", False: "Fine-tuned"}
"""The value of ``freeze`` -> the title of its column group, in the table's order."""


def frozen(r: Row) -> bool | None:
    """The row's ``freeze`` param (None where its params do not say)."""
    try:
        value = json.loads(r["evaluator_params"] or "{}").get("freeze")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, bool) else None


def _without_freeze(text: str | None) -> str:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return text or ""
    return json.dumps({k: v for k, v in value.items() if k != "freeze"}, sort_keys=True) if isinstance(value, dict) \
        else str(value)


def _encoder_config(r: Row) -> tuple[Any, ...]:
    """The row's configuration with the freeze setting taken out (it is the column group)."""
    return config(r | {"evaluator_params": _without_freeze(r["evaluator_params"])})


def table(rows: list[Row]) -> Table:
    """The detection table of rows of one target dataset and budget (see the module)."""
    rows = [r for r in rows if r["metric"] in METRICS and r["value"] is not None]
    modes = [m for m in MODES if any(frozen(r) is m for r in rows)]
    name = namer(rows, skip=("label_fraction", "freeze"), key=_encoder_config)
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in rows:
        groups[_encoder_config(r)].append(r)
    headers = ["Method", *(METRICS[m] for _ in modes for m in METRICS), "n"]
    lines: list[tuple[bool, float, str, list[float | None], list[str]]] = []
    for rs in groups.values():
        means: list[float | None] = []
        cells = []
        for mode in modes:
            for metric in METRICS:
                values = per_seed([r for r in rs if frozen(r) is mode], metric)
                means.append(statistics.fmean(values) if values else None)
                cells.append(mean_interval(values))
        key = next((v for v in reversed(means[::len(METRICS)]) if v is not None), -1.0)  # fine-tuned AP first
        lines.append((rs[0]["method"] in BASELINES, -key, name(rs[0]), means,
                      [name(rs[0]), *cells, str(len({r["seed"] for r in rs}))]))
    lines.sort(key=lambda line: line[:3])
    methods = [line for line in lines if not line[0]]
    bold = set()
    for j in range(len(modes) * len(METRICS)):
        values = [round(v, 2) for line in methods if (v := line[3][j]) is not None]
        if len(values) >= 2:
            bold |= {(i, j + 1) for i, line in enumerate(methods)
                     if (v := line[3][j]) is not None and round(v, 2) == max(values)}
    present = {r["method"] for r in rows}
    body = [line[4] for line in lines] + [[f"{m} (not run)"] + [""] * (len(headers) - 1)
                                          for m in BASELINES if m not in present]
    spans = (("", 1), *((MODES[m], len(METRICS)) for m in modes), ("", 1))
    return Table(headers, body, frozenset(bold), ((len(methods), "Baselines"),) if len(body) > len(methods) else (),
                 spans)
