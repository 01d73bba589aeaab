"""Weights & Biases tracker: one W&B run per pretraining job, fed by the ``bench_step_logged`` event.

On only when asked for: ``BENCH_WANDB=1`` and the ``wandb`` package installed
(``pip install "ssl-bench[wandb]"``); otherwise it does nothing (asked for but not installed, it says so
once). Each pretraining job (each session of it: a resumed job starts a new W&B run) is a run named
``<label> seed <seed>``, job type ``pretrain``, with the job's resolved spec (its ``job.json``) as config,
in the project ``$WANDB_PROJECT`` (default ``ssl-bench``); every event's metrics are logged at its step.
Everything else is wandb's own settings: ``WANDB_MODE=offline`` keeps the runs on disk
(``wandb sync`` uploads them later), ``WANDB_DIR`` says where (default: the job's artifact folder),
``WANDB_SILENT=true`` quiets its banner. The run's console is not captured (``console="off"``): the
harness's own lines stay as they are. A run that cannot start (online without a login) is reported in
one line and the job trains on without it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ssl_bench.harness import hookimpl

SWITCH = "BENCH_WANDB"
DEFAULT_PROJECT = "ssl-bench"
_runs: dict[Path, Any] = {}
"""The W&B run of each training folder (None: it could not start)."""
_missing: list[str] = []
"""Set once the import failed (and was reported)."""


def enabled() -> bool:
    """Whether the user switched it on (``BENCH_WANDB`` set, not 0)."""
    return os.environ.get(SWITCH, "").strip() not in ("", "0")


def _warn(message: str) -> None:
    logging.getLogger("ssl_bench").warning(message)


def _start(job: Any, artifacts: Path) -> Any:
    """A new W&B run for the job training in ``artifacts`` (the previous one finished first)."""
    if _missing:
        return None
    try:
        import wandb
    except ImportError as exc:
        _missing.append(str(exc))
        _warn(f"{SWITCH}=1 but wandb cannot be imported ({exc}); pip install \"ssl-bench[wandb]\" to track runs")
        return None
    _finish([folder for folder in _runs])  # one live run at a time
    config = dict(job.record()) if hasattr(job, "record") else {}
    root = Path(os.environ.get("WANDB_DIR") or artifacts)
    try:
        root.mkdir(parents=True, exist_ok=True)  # wandb looks for a git repository there before it makes it
        return wandb.init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
                          name=f"{job.label} seed {job.seed}", job_type="pretrain",
                          config=config | {"artifacts": str(artifacts)},
                          dir=None if os.environ.get("WANDB_DIR") else str(artifacts),
                          settings=wandb.Settings(console="off"))
    except Exception as exc:  # no login, no network: the job trains on without W&B
        _warn(f"W&B run for {job.label} seed {job.seed} could not start ({type(exc).__name__}: {exc}); "
              "set WANDB_MODE=offline to keep runs on disk")
        return None


def _finish(folders: list[Path]) -> None:
    for folder in folders:
        run = _runs.pop(folder)
        if run is not None:
            run.finish()


@hookimpl
def bench_step_logged(job: Any, step: int, metrics: dict[str, float], artifacts: Path) -> None:
    """Log the metrics to the job's W&B run at ``step`` (starting the run on the job's first event)."""
    if not enabled():
        return
    if artifacts not in _runs:
        _runs[artifacts] = _start(job, artifacts)
    run = _runs[artifacts]
    if run is not None:
        run.log(dict(metrics), step=step)


@hookimpl
def bench_job_finished(job: Any, result: Any) -> None:
    """Finish the W&B run of a finished (or failed) pretraining job."""
    _finish([folder for folder in _runs if folder.name == getattr(job, "key", None)])


@hookimpl
def bench_run_finished(run: Any, failed: int) -> None:
    """Finish every W&B run still open."""
    _finish(list(_runs))
