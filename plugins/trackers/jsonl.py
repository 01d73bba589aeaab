"""The always-on tracker: every logged training step as one JSON line of the job's ``metrics.jsonl``.

One object per ``bench_step_logged`` call, appended and flushed at once, so a reader can follow the
file while the job trains (``tail -f``)::

    {"step": 20, "epoch": 0.5, "loss": 4.21, "terms": {"invariance": 0.81, "variance": 0.02,
     "covariance": 0.4}, "lr": 0.05, "images_per_s": 812.3, "time": 1714560000.12}

``terms`` holds the method's named loss terms (``loss/<name>`` in the event's metrics; empty when its loss
is a plain Tensor); ``time`` is the wall clock, seconds since the Unix epoch. A value that is not finite is
written as ``null`` (JSON has no NaN). A resumed job appends to the same file, so the steps between its
last checkpoint and the interruption appear twice: the later line of a step is the one that counts.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ssl_bench.harness import RunFolder, hookimpl

TERM_PREFIX = "loss/"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def record(step: int, metrics: dict[str, float], now: float) -> dict[str, Any]:
    """The JSON object of one logged step: ``step``, ``epoch``, ``loss``, ``terms``, ``lr``, ``images_per_s``,
    ``time``, then any other metric by its name."""
    terms = {k.removeprefix(TERM_PREFIX): _finite(v) for k, v in metrics.items() if k.startswith(TERM_PREFIX)}
    line: dict[str, Any] = {"step": step, "epoch": _finite(metrics.get("epoch", math.nan)),
                            "loss": _finite(metrics.get("loss", math.nan)), "terms": terms,
                            "lr": _finite(metrics.get("lr", math.nan)),
                            "images_per_s": _finite(metrics.get("images_per_s", math.nan)), "time": now}
    for key, value in metrics.items():
        if key not in line and not key.startswith(TERM_PREFIX):
            line[key] = _finite(value)
    return line


@hookimpl
def bench_step_logged(job: Any, step: int, metrics: dict[str, float], artifacts: Path) -> None:
    """Append this step's line to ``artifacts/metrics.jsonl`` (the folder is made if missing)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record(step, metrics, time.time()), allow_nan=False)
    with open(artifacts / RunFolder.METRICS, "a", encoding="utf-8") as f:
        f.write(text + "\n")
