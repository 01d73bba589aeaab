"""How result rows pool into the rows of a table: configurations, budgets, names, values per seed, intervals.

A row of a leaderboard table is one configuration (:data:`CONFIG`): the result rows equal in all of its columns,
one per seed, pooled. The seed is the only column pooled; two configurations under one label are two rows, named
by what differs (``SimCLR (temperature=0.5)``, :func:`namer`). An interval needs three seeds (:func:`ci95`,
:func:`half_interval`): the 95% Student-t interval of the mean, clipped to percentages.
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

BASELINES = ("supervised", "random_init")
"""The baselines, recognised by method name (not label): shown apart from the SSL methods, never ranked with them."""
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)
"""Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (1.96 beyond)."""
CONFIG = ("benchmark", "split", "method", "label", "method_params", "backbone", "pretrain_dataset", "pretrain_epochs",
          "pretrain_steps", "pretrain_total_steps", "pretrain_batch_size", "evaluator", "evaluator_params", "dataset",
          "label_fraction")
"""The columns of a configuration: a table row pools the seeds of the rows equal in all of them. Left out: the seed,
what was chosen or measured (``hparams``, timings, losses), and where and with what it ran (device, host, versions,
git SHA, timestamp)."""
BUDGET = ("pretrain_epochs", "pretrain_steps", "pretrain_total_steps", "pretrain_batch_size")
"""The budget columns an untrained encoder (0 steps) records only nominally: not part of its configuration."""

Row = dict[str, Any]
Budget = tuple[str, int, int, int, int]


def mean_std(values: list[float]) -> str:
    """'72.31 ± 1.20' (sample std), or '72.31' for one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def half_interval(values: list[float]) -> float | None:
    """Half the width of the 95% Student-t interval of the mean of ``values``; None below three values."""
    n = len(values)
    if n < 3:
        return None
    return (T975[n - 2] if n - 1 <= len(T975) else 1.96) * statistics.stdev(values) / math.sqrt(n)


def ci95(values: list[float]) -> str:
    """The interval column's cell: '[70.10, 74.50]', the 95% Student-t interval of the mean clipped to [0, 100]
    (percentages), from three values on; 'n=1' / 'n=2' below (too few seeds for an interval); '' for none."""
    half = half_interval(values)
    if half is None:
        return f"n={len(values)}" if values else ""
    mean = statistics.fmean(values)
    return f"[{max(mean - half, 0.0):.2f}, {min(mean + half, 100.0):.2f}]"


def mean_interval(values: list[float]) -> str:
    """A compact cell: '45.42 ± 1.57' (the mean and half the 95% interval) from three values on, the clipped interval
    where it reaches past 0 or 100 ('99.00 [91.43, 100.00]'), '45.42 (n=1)' / '(n=2)' below; '' for none."""
    if not values:
        return ""
    mean, half = statistics.fmean(values), half_interval(values)
    if half is None:
        return f"{mean:.2f} (n={len(values)})"
    if mean - half < 0.0 or mean + half > 100.0:
        return f"{mean:.2f} {ci95(values)}"
    return f"{mean:.2f} ± {half:.2f}"


def devices(rows: Iterable[Row]) -> list[str]:
    """The devices these encoders' timings were measured on (``pretrain_device``), sorted; rows without one left out."""
    return sorted({str(d) for r in rows if (d := r.get("pretrain_device"))})


def timed_on(rows: Iterable[Row]) -> str:
    """:func:`devices`, joined; '' where no row says."""
    return ", ".join(devices(rows))


def timing_mark(rows: Iterable[Row], cell: str) -> str:
    """``cell`` marked when its timings are not one quiet machine's: any of these encoders trained while other
    processes kept the cores busy ("contended"), or they trained on different devices ("mixed devices")."""
    rows = list(rows)
    marks = ["contended"] * any(r.get("pretrain_contended") for r in rows)
    marks += ["mixed devices"] * (len(devices(rows)) > 1)
    return f"{cell} ({', '.join(marks)})" if marks else cell


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


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


def table_budget(r: Row) -> tuple[Any, ...] | None:
    """What a ranking table holds fixed: data, epochs, batch size and, for a snapshot, its step of the total.

    A complete run's step count is left out: it follows from the data size, and the supervised baseline
    trains on the same data without the validation rows that select hyper-parameters, so it takes fewer
    steps per epoch at the same budget (its steps are shown in its row). None: an untrained encoder.
    """
    b = budget(r)
    if b is None:
        return None
    return (b[0], b[1], b[2], None if b[3] >= b[4] else (b[3], b[4]))


def table_budget_key(b: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sort key of :func:`table_budget` values: data (sizes as numbers), epochs, batch, snapshots before the end."""
    return (natural(b[0]), b[1], b[2], (0, *b[3]) if b[3] else (1,))


def table_title(b: tuple[Any, ...]) -> str:
    """'cifar10[10000], 4 ep, batch 256', or with 'step 100 of 624' for a snapshot."""
    stage = f"step {b[3][0]} of {b[1]} ep ({b[3][1]} steps)" if b[3] else f"{b[1]} ep"
    return f"{b[0]}, {stage}, batch {b[2]}"


def natural(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key reading digit runs as numbers: cifar10[2500] before cifar10[10000]."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t)


def budget_key(b: Budget) -> tuple[Any, ...]:
    """Sort key of budgets: by data (sizes as numbers), epochs, batch size, total steps, then steps."""
    return (natural(b[0]), b[1], b[2], b[4], b[3])


def pretraining(r: Row) -> str:
    """The row's pretraining in words: 'cifar10[10000], 4 ep (156 steps), batch 256'; 'none' untrained."""
    if not r["pretrain_steps"]:
        return "none"
    total = total_steps(r)
    if r["pretrain_steps"] < total:  # a snapshot taken during a longer run
        return (f"{r['pretrain_dataset']}, step {r['pretrain_steps']} of {r['pretrain_epochs']} ep ({total} steps), "
                f"batch {r['pretrain_batch_size']}")
    return (f"{r['pretrain_dataset']}, {r['pretrain_epochs']} ep ({r['pretrain_steps']} steps), "
            f"batch {r['pretrain_batch_size']}")


@functools.lru_cache(maxsize=4096)
def params(text: str | None) -> tuple[tuple[str, str], ...]:
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


def facets(r: Row, *, evaluation: bool = True, skip: Iterable[str] = ("label_fraction",)) -> dict[str, str]:
    """What a row's configuration sets besides its label and budget: key -> 'name=value' as a row name shows it.
    With ``evaluation=False`` only what makes the encoder (the method, its params, the backbone); evaluator params
    in ``skip`` are left out (the label fraction: a column of its own, the table's, or the axis of a figure)."""
    out = {"method": f"method={r['method']}", "backbone": f"backbone={r['backbone']}"}
    out |= {f"method.{k}": f"{k}={v}" for k, v in params(r["method_params"])}
    if evaluation:  # (the pretraining data tells untrained encoders apart; a budget names it otherwise)
        out["pretrain_dataset"] = f"data {r['pretrain_dataset']}"
        out |= {f"evaluator.{k}": f"{r['evaluator']} {k}={v}" for k, v in params(r["evaluator_params"])
                if k not in skip}
    return out


def budget_facets(r: Row) -> dict[str, str]:
    """The parts of a row's pretraining as a name shows those that differ: data, epochs, steps, batch size."""
    if not r["pretrain_steps"]:
        return {"budget": "no pretraining"}
    total = total_steps(r)
    steps = f"step {r['pretrain_steps']} of {total}" if r["pretrain_steps"] < total else f"{total} steps"
    return {"budget.data": str(r["pretrain_dataset"]), "budget.epochs": f"{r['pretrain_epochs']} ep",
            "budget.steps": steps, "budget.batch": f"batch {r['pretrain_batch_size']}"}


def namer(rows: list[Row], *, evaluation: bool = True, with_budget: bool = False,
          within: Callable[[Row], Any] = lambda r: None, skip: Iterable[str] = ("label_fraction",),
          key: Callable[[Row], Any] = config) -> Callable[[Row], str]:
    """Row -> its name among ``rows``: the label, and what sets its configuration apart from the other configurations
    of that label (``SimCLR (temperature=0.5)``); the parts of the pretraining that differ too, ``with_budget``
    (``Counting (12 ep, 468 steps)``).
    Only differences between rows of one ``within`` value count (a figure's x: a protocol that changes with the
    label fraction is one line along that axis). ``skip``: evaluator params never named (:func:`facets`); ``key``:
    what counts as one configuration."""
    skipped = tuple(skip)

    def parts(r: Row) -> dict[str, str]:
        return facets(r, evaluation=evaluation, skip=skipped) | (budget_facets(r) if with_budget else {})

    by_label: dict[tuple[str, Any], dict[Any, dict[str, str]]] = defaultdict(dict)
    for r in rows:
        by_label[(r["label"], within(r))].setdefault(key(r), parts(r))
    differing: dict[str, set[str]] = defaultdict(set)
    for (label, _), found in by_label.items():
        keys = {k for f in found.values() for k in f}
        differing[label] |= {k for k in keys if len({f.get(k, "") for f in found.values()}) > 1}

    def name(r: Row) -> str:
        shown = [v for k, v in parts(r).items() if k in differing.get(r["label"], ())]
        return f"{r['label']} ({', '.join(shown)})" if shown else str(r["label"])

    return name


def by_config(rows: list[Row]) -> dict[tuple[Any, ...], list[Row]]:
    """Rows grouped by configuration (:func:`config`), in the order first met."""
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


def is_baseline(r: Row) -> bool:
    """Whether the row's encoder is a baseline (:data:`BASELINES`, by method name)."""
    return r["method"] in BASELINES
