"""Result rows -> a markdown leaderboard. Reads Parquet rows only; never re-runs anything.

One section per benchmark, one table per (evaluator, target dataset, label fraction): a row per
method label with mean +/- std over seeds and n, pretraining time, throughput and hardware.
Random-init and supervised rows appear in every table (marked "not run" when absent).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

BASELINES = ("supervised", "random_init")
METRIC_ORDER = ("top1", "top2", "top5", "auc", "mean_class_acc")


def mean_std(values: list[float]) -> str:
    """'72.31 ± 1.20' (sample std), or '72.31' for one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _metric_key(metric: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), metric)


def table(rows: list[dict[str, Any]]) -> str:
    """One markdown table for rows of a single (benchmark, evaluator, dataset, label fraction)."""
    metrics = sorted({r["metric"] for r in rows}, key=_metric_key)
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_label[r["label"]].append(r)
    lines = []
    for label, rs in by_label.items():
        first = rs[0]
        seeds = sorted({r["seed"] for r in rs})
        per_metric = {m: [r["value"] for r in rs if r["metric"] == m] for m in metrics}
        pre = {r["pretrain_key"]: r for r in rs}.values()
        wall = statistics.fmean(r["pretrain_wall_s"] for r in pre)
        speed = [r["pretrain_images_per_s"] for r in pre if r["pretrain_images_per_s"]]
        lines.append({
            "Method": label,
            "Backbone": first["backbone"],
            "Pretraining": f"{first['pretrain_dataset']}, {first['pretrain_epochs']} ep" if first["pretrain_steps"] else "none",
            **{m: mean_std(v) if v else "" for m, v in per_metric.items()},
            "n": len(seeds),
            "Pretrain time": duration(wall) if first["pretrain_steps"] else "",
            "img/s": f"{statistics.fmean(speed):.0f}" if speed else "",
            "Device": first["device"],
            "_sort": statistics.fmean(per_metric[metrics[0]]) if metrics and per_metric[metrics[0]] else -1.0,
        })
    present = {r["method"] for r in rows}
    for baseline in BASELINES:
        if baseline not in present:
            lines.append({"Method": f"{baseline} (not run)", "_sort": -2.0})
    lines.sort(key=lambda d: -d["_sort"])
    headers = ["Method", "Backbone", "Pretraining", *metrics, "n", "Pretrain time", "img/s", "Device"]
    return str(tabulate([[d.get(h, "") for h in headers] for d in lines], headers=headers, tablefmt="github"))


def render(rows: Iterable[dict[str, Any]], title: str = "Leaderboard") -> str:
    """The whole leaderboard as markdown."""
    rows = [r for r in rows if r.get("status", "ok") == "ok" and r.get("split", "test") == "test"]
    out = [f"# {title}", "",
           "Regenerated from Parquet results by `bench leaderboard`; do not edit by hand. "
           "Accuracies in percent on the test split, mean ± sample std over seeds (n seeds); "
           "hyper-parameters were chosen on a validation split carved from the training split.", ""]
    if not rows:
        return "\n".join(out + ["No results yet."]) + "\n"
    groups: dict[str, dict[tuple[str, str, float], list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[r["benchmark"]][(r["evaluator"], r["dataset"], r["label_fraction"])].append(r)
    for benchmark in sorted(groups):
        out += [f"## {benchmark}", ""]
        for (evaluator, dataset, fraction), rs in sorted(groups[benchmark].items()):
            labels = "all labels" if fraction >= 1 else f"{fraction:.0%} of labels"
            out += [f"### {evaluator} on {dataset} ({labels})", "", table(rs), ""]
    return "\n".join(out)
