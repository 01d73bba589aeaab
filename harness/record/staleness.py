"""Why a job is ``[todo]``: what differs from the closest job an output folder already holds.

``bench run --dry-run`` marks every job of the plan ``[done]`` or ``[todo]``; for a ``[todo]`` job this
module says why, by comparing the job with what the folder holds for the same configuration slot (the
same label and seed, and for an evaluation the same evaluator and target dataset):

- a pretraining against the ``job.json`` files of ``<out>/artifacts/`` (:meth:`RunFolder.job_spec`);
- an evaluation against the ``job_spec`` column of the result rows (:mod:`~ssl_bench.harness.record.results`),
  which holds the pretraining's spec and the evaluation's.

Each job records what its content key hashes (``key_payload``: the resolved spec, the code fingerprint
``code`` and the data fingerprint ``data``), so two keys differ exactly where their payloads do. Of the
earlier jobs of that slot, the one with the fewest differences is the closest, and the reason names its
first difference of each kind, e.g. ``code changed: plugins/methods/simclr.py``, ``spec changed:
method.params.temperature 0.2 -> 0.5``, ``data changed``; ``not run yet`` when the slot is empty. An
interrupted or failed job says so instead. Records written before keys held code fingerprints cannot be
compared field by field and are reported as such.

Nothing here writes; the folder is read once, on the first question.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.harness.record.results import read_rows

if TYPE_CHECKING:
    from ssl_bench.harness.pipeline.plan import EvalJob, PretrainJob

KeyPath = tuple[str | int, ...]
Difference = tuple[str, KeyPath, Any, Any]
"""(kind, path, old value, new value): kind is ``spec``, ``code`` or ``data``; a code path ends in a file label."""

_STRUCTURE = ("of", "candidates")
"""Keys under which a payload nests another (a snapshot's run, a sweep's cells): skipped when naming a kind."""


def _flatten(value: Any, path: KeyPath = ()) -> dict[KeyPath, Any]:
    """Leaves of nested dicts (and lists of dicts) by path; other lists are leaves. A code fingerprint's
    labels (``plugins/methods/simclr.py``) stay whole, one leaf each."""
    if isinstance(value, Mapping):
        if not value and path:
            return {path: {}}
        out: dict[KeyPath, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, (*path, str(key))))
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, (*path, i)))
        return out
    return {path: value}


def _kind(path: KeyPath) -> str:
    head = [p for p in path if isinstance(p, str) and p not in _STRUCTURE]
    return head[0] if head and head[0] in ("code", "data") else "spec"


def differences(old: Mapping[str, Any], new: Mapping[str, Any], skip: Iterable[str] = ()) -> list[Difference]:
    """Where two key payloads differ, in the order of ``new`` (then what only ``old`` has).

    Args:
        old: an earlier job's ``key_payload``.
        new: the current job's.
        skip: top-level keys left out (an evaluation's ``pretrain`` key, compared on its own).
    """
    skipped = set(skip)
    a = {p: v for p, v in _flatten(old).items() if p and p[0] not in skipped}
    b = {p: v for p, v in _flatten(new).items() if p and p[0] not in skipped}
    paths = [*b, *(p for p in a if p not in b)]
    return [(_kind(p), p, a.get(p), b.get(p)) for p in paths if a.get(p) != b.get(p)]


def _show(value: Any) -> str:
    text = "unset" if value is None else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def reason(diffs: Sequence[Difference], prefix: str = "") -> str:
    """One phrase per kind of difference, its first instance named (``code changed: plugins/x.py (+1 more)``).

    Args:
        diffs: from :func:`differences`.
        prefix: put before the spec paths and the data (``pretraining``), for an evaluation's pretraining.
    """
    parts = []
    for kind in ("spec", "code", "data"):
        mine = [d for d in diffs if d[0] == kind]
        if not mine:
            continue
        more = f" (+{len(mine) - 1} more)" if len(mine) > 1 else ""
        _, path, old, new = mine[0]
        if kind == "code":
            parts.append(f"code changed: {path[-1]}{more}")
        elif kind == "data":
            parts.append(f"{prefix + ' ' if prefix else ''}data changed")
        else:
            where = _dotted(path)
            parts.append(f"spec changed: {prefix + '.' if prefix else ''}{where} {_show(old)} -> {_show(new)}{more}")
    return "; ".join(parts)


def _parsed(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Staleness:
    """Says why jobs of a plan are not done in one output folder (see the module docstring).

    Args:
        folder: the output folder the plan would run into.
    """

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self._jobs: list[dict[str, Any]] | None = None
        self._evals: list[dict[str, Any]] | None = None
        self._legacy: set[tuple[Any, ...]] = set()

    def _job_specs(self) -> list[dict[str, Any]]:
        """Every readable ``job.json`` under the artifacts folder."""
        if self._jobs is None:
            found = sorted(self.folder.artifacts_dir.glob(f"*/{RunFolder.JOB}")) if self.folder.artifacts_dir.is_dir() \
                else []
            self._jobs = [spec for spec in (_parsed(_read(p)) for p in found) if spec is not None]
        return self._jobs

    def _eval_specs(self) -> list[dict[str, Any]]:
        """The ``job_spec`` of every evaluation with rows in the results folder, one per job key."""
        if self._evals is None:
            self._evals = []
            seen: set[Any] = set()
            results = self.folder.results_dir
            for row in read_rows([results]) if results.is_dir() else []:
                if row.get("job_key") in seen:
                    continue
                seen.add(row.get("job_key"))
                spec = _parsed(row.get("job_spec"))
                if spec is not None and isinstance(spec.get("pretrain"), dict) and isinstance(spec.get("evaluation"),
                                                                                              dict):
                    self._evals.append(spec)
                else:  # a row of schema 2 or older: no spec to compare with
                    self._legacy.add((row.get("label"), row.get("seed"), row.get("evaluator")))
        return self._evals

    def _unfinished(self, key: str) -> str | None:
        """Why job ``key`` itself is not done, when the folder has a trace of it (a checkpoint, a log)."""
        if self.folder.checkpoint(key).exists():
            return "interrupted: resumes from its checkpoint"
        if self.folder.log(key).exists():
            return f"failed when last run: see {self.folder.log(key)}"
        if self.folder.job_spec(key).exists():
            return "started, not finished"
        return None

    def pretraining(self, job: PretrainJob) -> str:
        """Why pretraining ``job`` is ``[todo]`` (its done marker is missing)."""
        unfinished = self._unfinished(job.key)
        if unfinished is not None:
            return unfinished
        new = job.record()
        earlier = [s for s in self._job_specs() if (s.get("label"), s.get("seed"), s.get("kind"))
                   == (new["label"], new["seed"], new["kind"]) and s.get("key") != job.key]
        if not earlier:
            return "not run yet"
        if not any(isinstance(s.get("key_payload"), dict) for s in earlier):
            return "changed since it ran (its job.json predates code fingerprints)"
        payloads = [s["key_payload"] for s in earlier if isinstance(s.get("key_payload"), dict)]
        best = min((differences(payload, job.keyed) for payload in payloads), key=len)
        return reason(best) or "changed since it ran"

    def evaluation(self, job: EvalJob) -> str:
        """Why evaluation ``job`` is ``[todo]`` (its result rows are missing)."""
        if self.folder.log(job.key).exists():
            return f"failed when last run: see {self.folder.log(job.key)}"
        new = job.record()
        slot = (new["label"], new["seed"], new["evaluator"]["name"], new["dataset"]["name"])
        earlier = [s for s in self._eval_specs()
                   if (s["pretrain"].get("label"), s["pretrain"].get("seed"),
                       (s["evaluation"].get("evaluator") or {}).get("name"),
                       (s["evaluation"].get("dataset") or {}).get("name")) == slot]
        if not earlier:
            if slot[:3] in self._legacy:
                return "changed since it ran (its rows predate recorded job specs)"
            return "not run yet"
        pretrains = job.pretrain.all_jobs()
        best = min((self._eval_differences(s, job, pretrains) for s in earlier), key=lambda d: len(d[0]) + len(d[1]))
        told = "; ".join(r for r in (reason(best[0], "pretraining"), reason(best[1])) if r)
        return told or "changed since it ran (its evaluation's code or data, which its rows do not record)"

    @staticmethod
    def _eval_differences(old: dict[str, Any], job: EvalJob,
                          pretrains: Sequence[PretrainJob]) -> tuple[list[Difference], list[Difference]]:
        """(pretraining differences, evaluation differences) between an earlier evaluation's spec and ``job``."""
        pre = old["pretrain"]
        if pre.get("key") in {p.key for p in pretrains}:
            pre_diffs: list[Difference] = []
        elif isinstance(pre.get("key_payload"), dict):
            pre_diffs = min((differences(pre["key_payload"], p.keyed) for p in pretrains), key=len)
        else:
            pre_diffs = [("code", ("code", "(not recorded when it ran)"), None, None)]
        evaluation = old["evaluation"]
        if isinstance(evaluation.get("key_payload"), dict):
            return pre_diffs, differences(evaluation["key_payload"], job.keyed, skip=("pretrain", "label"))
        new = job.record()  # rows that record only the spec: compare the fields they have
        common = {k: evaluation[k] for k in ("evaluator", "dataset", "grid", "metric", "val_fraction")
                  if k in evaluation}
        return pre_diffs, differences(common, {k: new[k] for k in common})


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
