"""TensorBoard tracker: each pretraining job's curves as event files in its artifact folder.

On with ``BENCH_TENSORBOARD=1`` when the ``tensorboard`` package is installed
(``pip install "ssl-bench[tensorboard]"``); otherwise it does nothing (asked for but not installed, it
says so once). Every ``bench_step_logged`` metric becomes a scalar of the same tag at the event's step
(``loss``, ``loss/<term>``, ``lr``, ``images_per_s``, ``epoch``), written by torch's
``SummaryWriter`` (which writes through the ``tensorboard`` package) to
``<out>/artifacts/<key>/tensorboard/`` and flushed at each event, so ``tensorboard --logdir <out>/artifacts``
shows every job of a run while it trains. A resumed job adds a new event file beside the old ones.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ssl_bench.harness import RunFolder, hookimpl

SWITCH = "BENCH_TENSORBOARD"
_writers: dict[Path, Any] = {}
"""Open writers by artifact folder (one per training job)."""
_missing: list[str] = []
"""Set once the import failed (and was reported)."""


def enabled() -> bool:
    """Whether the user switched it on (``BENCH_TENSORBOARD`` set, not 0)."""
    return os.environ.get(SWITCH, "").strip() not in ("", "0")


def _writer(artifacts: Path) -> Any:
    """The open writer of this folder, opened on first use; None when tensorboard is not installed."""
    if artifacts in _writers:
        return _writers[artifacts]
    if _missing:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        _missing.append(str(exc))
        logging.getLogger("ssl_bench").warning(
            f"{SWITCH}=1 but TensorBoard cannot be imported ({exc}); pip install \"ssl-bench[tensorboard]\" "
            "to get event files")
        return None
    writer = SummaryWriter(log_dir=str(artifacts / RunFolder.TENSORBOARD))
    _writers[artifacts] = writer
    return writer


def _close(folders: list[Path]) -> None:
    for folder in folders:
        _writers.pop(folder).close()


@hookimpl
def bench_step_logged(job: Any, step: int, metrics: dict[str, float], artifacts: Path) -> None:
    """Add every metric as a scalar at ``step`` and flush."""
    if not enabled():
        return
    writer = _writer(artifacts)
    if writer is None:
        return
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, global_step=step)
    writer.flush()


@hookimpl
def bench_job_finished(job: Any, result: Any) -> None:
    """Close the writer of a finished (or failed) pretraining job."""
    _close([folder for folder in _writers if folder.name == getattr(job, "key", None)])


@hookimpl
def bench_run_finished(run: Any, failed: int) -> None:
    """Close every writer still open (a replay's, a job of a run that stopped)."""
    _close(list(_writers))
