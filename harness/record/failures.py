"""Failed jobs, kept beside their tracebacks so the leaderboard can show them as failed rows.

A job that fails leaves ``<out>/logs/<key>.failed.json`` (what it was and why it failed) next to its
traceback ``<out>/logs/<key>.log``; the record is removed when the job later succeeds. The run's
leaderboard lists the failures of its plan's jobs in a table of their own, so a failed method does not
silently vanish from a ranking; ``bench leaderboard <out>/results`` reads the ``logs/`` beside it.

The records are JSON read with :func:`json.loads` only, and every field is checked to be text: nothing
in a run folder executes code when read back.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ssl_bench.harness.record.atomic import atomic_write_text
from ssl_bench.harness.record.report import md_escape

SUFFIX = ".failed.json"
FIELDS = ("benchmark", "label", "seed", "job", "reason", "log")
"""What a record holds, each as text: the benchmark, the method's label, the seed, the job's line, why, the log."""


def failure_path(logs_dir: Path, key: str) -> Path:
    """``<logs>/<key>.failed.json``."""
    return logs_dir / f"{key}{SUFFIX}"


def record_failure(logs_dir: Path, key: str, fields: Mapping[str, object]) -> None:
    """Write the failure record of job ``key`` (the :data:`FIELDS`, as text; others are dropped)."""
    record = {name: str(fields.get(name, "")) for name in FIELDS}
    atomic_write_text(failure_path(logs_dir, key), json.dumps(record, indent=1) + "\n")


def clear_failure(logs_dir: Path, key: str) -> None:
    """Forget that job ``key`` failed (it has succeeded since)."""
    failure_path(logs_dir, key).unlink(missing_ok=True)


def read_failures(logs_dir: Path, keys: Iterable[str] | None = None) -> list[dict[str, str]]:
    """The failure records in ``logs_dir`` (only those of ``keys`` when given), in key order.

    A file that is not a JSON object of text fields is skipped with one line on stderr naming it.
    """
    if not logs_dir.is_dir():
        return []
    wanted = None if keys is None else set(keys)
    out = []
    for path in sorted(logs_dir.glob(f"*{SUFFIX}")):
        key = path.name.removesuffix(SUFFIX)
        if wanted is not None and key not in wanted:
            continue
        try:
            record: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            print(f"warning: {path}: skipped, not a failure record ({exc})", file=sys.stderr)
            continue
        if not isinstance(record, dict) or not all(isinstance(record.get(f, ""), str) for f in FIELDS):
            print(f"warning: {path}: skipped, not a failure record (expected an object of text fields)",
                  file=sys.stderr)
            continue
        out.append({"key": key, **{f: record.get(f, "") for f in FIELDS}})
    return out


def failures_section(records: list[dict[str, str]]) -> str:
    """Markdown: a '## Failed jobs' table (method, seed, job, reason, log), or '' when nothing failed."""
    if not records:
        return ""
    lines = ["## Failed jobs", "",
             f"{len(records)} job{'s' * (len(records) != 1)} of this plan failed; rerun to retry "
             "(finished jobs are kept). Each reason is the job's one error line; the traceback is in its log.", "",
             "| Method | Seed | Job | Reason | Log |", "|---|---|---|---|---|"]
    for r in records:
        lines.append("| " + " | ".join(md_escape(r[f]) for f in ("label", "seed", "job", "reason", "log")) + " |")
    return "\n".join(lines) + "\n"
