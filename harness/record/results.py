"""Parquet results: one row per metric value, one file per finished job, written atomically.

The schema is versioned in code (:data:`SCHEMA_VERSION`) and :func:`result_rows` builds its rows beside
it. Files are named by job key (:meth:`ssl_bench.harness.record.layout.RunFolder.result`), so a finished
job is found by its key and nothing is recorded twice.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.record.atomic import atomic_write
from ssl_bench.harness.record.layout import RunFolder

if TYPE_CHECKING:
    from ssl_bench.harness.pipeline.plan import EvalJob, PretrainJob
    from ssl_bench.harness.pipeline.sweep import SweepOutcome
    from ssl_bench.harness.pipeline.train import PretrainStats

SCHEMA_VERSION = 5
"""2: ``pretrain_total_steps`` (a snapshot's row has fewer ``pretrain_steps``); rows of 1 lack it.
3: the machine's state while the encoder trained (``pretrain_threads``, ``pretrain_load_others``,
``pretrain_contended``) and the fully resolved job spec (``job_spec``, JSON).
4: ``pretrain_precision``, what the encoder's steps computed in (``fp32`` or ``bf16``).
5: ``pretrain_device``, what its timing was measured on (CPU model, cores and vector unit, or the GPU's name):
one host name can stand for machines of 4x different speed."""
ADDED = {"pretrain_total_steps": 2, "pretrain_threads": 3, "pretrain_load_others": 3, "pretrain_contended": 3,
         "job_spec": 3, "pretrain_precision": 4,
         "pretrain_device": 5}
"""Column -> the schema version that added it: a file of an older version lacks it and reads as None."""

SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("benchmark", pa.string()),
    ("job_key", pa.string()),
    ("pretrain_key", pa.string()),
    ("method", pa.string()),
    ("label", pa.string()),
    ("method_params", pa.string()),       # JSON
    ("backbone", pa.string()),
    ("pretrain_dataset", pa.string()),
    ("pretrain_epochs", pa.int32()),
    ("pretrain_steps", pa.int64()),
    ("pretrain_total_steps", pa.int64()),  # steps of the whole run (more than pretrain_steps for a snapshot)
    ("pretrain_batch_size", pa.int32()),
    ("pretrain_wall_s", pa.float64()),
    ("pretrain_images_per_s", pa.float64()),
    ("pretrain_threads", pa.int32()),        # torch threads the encoder trained with (0: not recorded)
    ("pretrain_load_others", pa.float64()),  # cores other processes kept busy meanwhile (scale/machine.py)
    ("pretrain_contended", pa.bool_()),      # that load made the timing untrustworthy
    ("pretrain_precision", pa.string()),     # fp32 or bf16 (pipeline/precision.py; '' when not trained)
    ("pretrain_device", pa.string()),        # "AMD EPYC (family 23, model 49) x2 (AVX2)", a GPU ('' untrained)
    ("pretrain_final_loss", pa.float64()),
    ("pretrain_epoch_losses", pa.list_(pa.float64())),
    ("evaluator", pa.string()),
    ("evaluator_params", pa.string()),    # JSON
    ("dataset", pa.string()),
    ("label_fraction", pa.float64()),
    ("seed", pa.int64()),
    ("split", pa.string()),
    ("metric", pa.string()),
    ("value", pa.float64()),
    ("hparams", pa.string()),             # JSON of the chosen hyper-parameters
    ("trials", pa.int32()),
    ("val_score", pa.float64()),
    ("eval_wall_s", pa.float64()),
    ("device", pa.string()),
    ("harness_version", pa.string()),
    ("plugin_versions", pa.string()),     # JSON {component: version}
    ("torch_version", pa.string()),
    ("git_sha", pa.string()),
    ("host", pa.string()),
    ("timestamp", pa.string()),
    ("status", pa.string()),
    ("job_spec", pa.string()),            # JSON: the pretraining job's resolved spec and the evaluation's
])


def result_rows(job: EvalJob, source: PretrainJob, stats: PretrainStats, outcome: SweepOutcome, *,
                eval_wall_s: float, device: str, harness_version: str) -> list[dict[str, Any]]:
    """The rows of a finished evaluation, one per metric, keyed by :data:`SCHEMA`'s names (less ``schema_version``).

    Args:
        job: the evaluation.
        source: the pretraining job whose encoder was evaluated (``job.pretrain``, or its sweep's winner).
        stats: what that pretraining reported.
        outcome: the evaluator's sweep on validation data and its test metrics.
        eval_wall_s: seconds the evaluation took.
        device: the device's name (:func:`device_name`).
        harness_version: the harness's version (``plugins.harness_version()``; the record layer imports no
            contract module).
    """
    p = source
    base = {
        "benchmark": job.benchmark, "job_key": job.key, "pretrain_key": p.key, "method": p.method.name,
        "label": p.label, "method_params": dumps(p.method.params.model_dump(mode="json")),
        "backbone": p.backbone.name, "pretrain_dataset": p.dataset.display, "pretrain_epochs": p.pretrain.epochs,
        "pretrain_steps": stats.steps,
        "pretrain_total_steps": stats.steps_per_epoch * p.pretrain.epochs if p.kind == "snapshot" else stats.steps,
        "pretrain_batch_size": stats.batch_size or p.pretrain.batch_size,
        "pretrain_wall_s": stats.train_s, "pretrain_images_per_s": stats.images_per_s,
        "pretrain_threads": stats.threads, "pretrain_load_others": stats.load_others,
        "pretrain_contended": stats.contended, "pretrain_precision": stats.precision,
        "pretrain_device": stats.device,
        "pretrain_final_loss": stats.final_loss, "pretrain_epoch_losses": stats.epoch_losses,
        "evaluator": job.evaluator.name, "evaluator_params": dumps(job.evaluator.params.model_dump(mode="json")),
        "dataset": job.dataset.display,
        "label_fraction": float(getattr(job.evaluator.params, "label_fraction", 1.0)), "seed": p.seed, "split": "test",
        "hparams": dumps(outcome.hparams | {f"pretrain.{k}": v for k, v in p.hparams}), "trials": outcome.trials,
        "val_score": outcome.val_score,
        "eval_wall_s": eval_wall_s, "device": device,
        "harness_version": harness_version, "status": "ok",
        "plugin_versions": dumps({f"{kind}:{r.name}": r.version for kind, r in
                                  (("method", p.method), ("backbone", p.backbone), ("dataset", p.dataset),
                                   ("evaluator", job.evaluator))}),
        **provenance(),
        "job_spec": dumps({"pretrain": source.record(), "evaluation": {
            "key": job.key, "evaluator": job.evaluator.payload(), "dataset": job.dataset.payload(),
            "grid": {k: list(v) for k, v in job.grid.items()}, "metric": job.metric,
            "val_fraction": job.val_fraction}}),
    }
    return [base | {"metric": m, "value": float(v)} for m, v in outcome.metrics.items()]


def result_path(results_dir: Path, job_key: str) -> Path:
    """The rows file of ``job_key`` inside a bare results folder (in an output folder: ``RunFolder.result``)."""
    return results_dir.joinpath(RunFolder.result_name(job_key))


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts keyed by SCHEMA's names) to one Parquet file, atomically."""
    table = pa.Table.from_pylist([{**r, "schema_version": SCHEMA_VERSION} for r in rows], schema=SCHEMA)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def parquet_files(dirs: Iterable[Path]) -> list[Path]:
    """Every ``*.parquet`` under the given folders (recursively) or the given files, sorted."""
    files: list[Path] = []
    for d in dirs:
        if d.is_file():
            files.append(d)
        elif d.is_dir():
            # an empty file is a write that never finished (a full disk, a kill): not a result
            files.extend(p for p in d.rglob("*.parquet") if not p.name.startswith(".") and p.stat().st_size)
        else:
            raise BenchError(f"{d}: no such results folder")
    return sorted(files)


def read_rows(dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """All result rows under the folders, each with every column of :data:`SCHEMA`.

    A duplicate job key (copied twice) counts once. A file of an older schema version is upgraded (the columns
    it predates read as None); a file that is not Parquet, or of another schema (a column missing, a column of
    another type), is skipped with one line on stderr naming it, so one stray file does not hide every result.
    """
    rows, seen = [], set()
    for f in parquet_files(dirs):
        try:
            upgraded = _conform(pq.read_table(f))
        except Exception as exc:
            _warn(f, f"not a readable Parquet file ({' '.join(str(exc).split())}); delete it to recompute its job")
            continue
        if isinstance(upgraded, str):
            _warn(f, f"not a results file of this schema ({upgraded})")
            continue
        for row in upgraded.to_pylist():
            ident = (row.get("job_key"), row.get("metric"), row.get("split"))
            if ident in seen:
                continue
            seen.add(ident)
            rows.append(row)
    return rows


def _warn(path: Path, why: str) -> None:
    print(f"warning: {path}: skipped, {why}", file=sys.stderr)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list of {_kind(t.value_type)}"
    return "null" if pa.types.is_null(t) else str(t)


def _conform(table: pa.Table) -> pa.Table | str:
    """``table`` with :data:`SCHEMA`'s columns and types (the columns of later versions filled with None), or
    why it cannot be: the columns it lacks, or a column of another kind (a string ``value``)."""
    names = set(table.column_names)
    missing = [c for c in SCHEMA.names if c not in names and c not in ADDED]
    if missing:
        return f"missing columns: {', '.join(missing)}"
    kinds = {field.name: (_kind(table.schema.field(field.name).type), _kind(field.type))
             for field in SCHEMA if field.name in names}
    wrong = [f"{name} is {got}, not {want}" for name, (got, want) in kinds.items()
             if got != want and got != "null" and not (got == "list of null" and want.startswith("list"))]
    if wrong:
        return "; ".join(wrong)
    columns = [table.column(c) if c in names else pa.nulls(table.num_rows, SCHEMA.field(c).type) for c in SCHEMA.names]
    try:
        return pa.Table.from_arrays(columns, names=SCHEMA.names).cast(SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return f"columns not convertible to the schema ({exc})"


def provenance() -> dict[str, str]:
    """Where and with what a row was computed."""
    return {
        "torch_version": torch.__version__,
        "git_sha": _git_sha(),
        "host": platform.node(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
