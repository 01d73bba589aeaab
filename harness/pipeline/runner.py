"""Execute a plan: make the encoders that are missing, evaluate, record, regenerate the leaderboard.

A :class:`Run` holds one ``bench run``'s context; :func:`execute` is the job loop. Making an encoder
(training, resuming, selecting a sweep's winner, replaying a run for a snapshot) is
:mod:`ssl_bench.harness.pipeline.encoders`; what goes where in the output folder is
:class:`~ssl_bench.harness.record.layout.RunFolder`; the result rows are built beside their schema by
:func:`~ssl_bench.harness.record.results.result_rows`.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pluggy
import torch
from torch import nn

from ssl_bench.harness.components import DataContext, EvalTask
from ssl_bench.harness.data import ImageSet, balanced_subset, check_labelled
from ssl_bench.harness.errors import BenchError, DiskFullError
from ssl_bench.harness.pipeline.encoders import ensure_pretrained, load_encoder, log, winner_of
from ssl_bench.harness.pipeline.features import FeatureCache
from ssl_bench.harness.pipeline.logs import plan_clock
from ssl_bench.harness.pipeline.online_probe import HEAD_FILE, read_head
from ssl_bench.harness.pipeline.plan import EvalJob, Plan, PretrainJob, ResolvedDataset, evaluator_titles
from ssl_bench.harness.pipeline.specs import BenchmarkSpec
from ssl_bench.harness.pipeline.sweep import sweep_and_test
from ssl_bench.harness.pipeline.train import PretrainStats
from ssl_bench.harness.plugins import Registry, harness_version
from ssl_bench.harness.record.atomic import atomic_write_text
from ssl_bench.harness.record.failures import clear_failure, failures_section, read_failures, record_failure
from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.harness.record.leaderboard import render
from ssl_bench.harness.record.results import dumps, read_rows, result_rows, write_rows
from ssl_bench.harness.scale.distributed import agree, is_main, rank, world_size
from ssl_bench.harness.scale.machine import device_name

__all__ = ["Run", "evaluate", "execute", "write_leaderboard",
           "ensure_pretrained", "load_encoder", "log", "winner_of"]  # the last four: from encoders, as before


@dataclass
class Run:
    """One ``bench run``: the spec, its plan and where everything goes."""

    spec: BenchmarkSpec
    plan: Plan
    registry: Registry
    pm: pluggy.PluginManager
    out_dir: Path
    device: torch.device
    data: DataContext
    progress: bool = True
    storage: optuna.storages.BaseStorage | None = None
    """Where evaluation sweeps keep their Optuna studies (``bench worker``); None: in memory."""
    failed: list[str] = field(default_factory=list)
    tally: Counter[str] = field(default_factory=Counter)
    """Evaluations by outcome: ``done`` (run now), ``cached``, ``failed``, ``skipped`` (their encoder failed)."""
    _splits: dict[str, ImageSet] = field(default_factory=dict)

    @property
    def folder(self) -> RunFolder:
        """The paths of the output folder."""
        return RunFolder(self.out_dir)

    def load_split(self, ds: ResolvedDataset, split: str) -> ImageSet:
        """A dataset split (with the benchmark's class-balanced subset applied), loaded once per run."""
        size = ds.train_size if split == "train" else ds.test_size
        memo = dumps([ds.payload(), split])
        if memo not in self._splits:
            dataset = self.registry.get("datasets", ds.name)(ds.params)
            source = ds.train_split if split == "train" else split
            if source not in dataset.splits:
                raise BenchError(f"dataset '{ds.name}' has no '{source}' split; it has {', '.join(dataset.splits)}")
            full = dataset.load(source, self.data)
            if size is not None and size < len(full):
                idx = balanced_subset(full.labels, size, seed=0)
                full = full.subset(idx, key=f"{full.key}|balanced{size}")
            self._splits[memo] = full
        return self._splits[memo]


def execute(run: Run) -> int:
    """Run every unfinished job; returns the number of failed jobs. Finished jobs are skipped.

    A failed job is recorded (:func:`_fail`) and the others still run, except when the disk is full: then
    every later job would fail the same way, so the run stops.

    Raises:
        DiskFullError: a write found no space left on the device (the finished jobs are kept).
    """
    run.pm.hook.bench_run_started(run=run)
    total = len(run.plan.eval_jobs)
    done = 0
    started = time.perf_counter()
    titles = evaluator_titles(run.plan.eval_jobs)  # finetune(label_fraction=0.01) beside finetune(label_fraction=0.1)
    for pjob in run.plan.pretrain_jobs:
        evals = run.plan.evals_of(pjob)
        todo = [e for e in evals if not run.folder.has_result(e.key)]
        for e in evals:
            if e not in todo:
                done += 1
                run.tally["cached"] += 1
                run.pm.hook.bench_job_finished(job=e, result={"status": "cached"})
        if not agree(bool(todo)):  # under torchrun every process follows rank 0's view of the files
            continue
        try:
            stats = ensure_pretrained(run, pjob)
            clear_failure(run.folder.logs_dir, pjob.key)
            if not is_main():
                continue  # the other processes only help pretrain; rank 0 evaluates
            source = winner_of(run, pjob)
            encoder = load_encoder(run, source)
        except Exception as exc:
            full = DiskFullError.of(exc, run.folder.artifacts(pjob.key))
            _fail(run, pjob, full or exc)
            if full is not None:
                raise full from None
            if world_size() > 1:  # the other processes wait in a collective for this one: stop them all
                raise SystemExit(f"process {rank()}: {pjob.label} seed {pjob.seed}: {exc}; stopping every process "
                                 "(finished jobs are kept, rerun to resume)") from exc
            done += len(todo)
            run.tally["skipped"] += len(todo)
            continue
        features = FeatureCache(encoder, run.device, run.folder.features(source.key))
        for e in todo:
            done += 1
            try:
                t0 = time.perf_counter()
                rows = evaluate(run, e, source, encoder, features, stats)
                write_rows(run.folder.result(e.key), rows)
                clear_failure(run.folder.logs_dir, e.key)
                summary = ", ".join(f"{r['metric']} {r['value']:.2f}" for r in rows)
                log(f"[{done}/{total}] {e.pretrain.label} seed {e.pretrain.seed} | {titles[e.key]} on "
                    f"{e.dataset.display}: {summary} ({time.perf_counter() - t0:.1f} s)"
                    f"{plan_clock(started, done - run.tally['cached'], total - done)}")
                run.tally["done"] += 1
                run.pm.hook.bench_job_finished(job=e, result={"status": "ok", "rows": rows})
            except Exception as exc:
                run.tally["failed"] += 1
                full = DiskFullError.of(exc, run.folder.result(e.key))
                _fail(run, e, full or exc)
                if full is not None:
                    raise full from None
    run.pm.hook.bench_run_finished(run=run, failed=len(run.failed))
    return len(run.failed)


def summary(run: Run, seconds: float) -> str:
    """The run's last line: every evaluation of the plan counted once, as done, cached, failed or skipped."""
    t, total = run.tally, len(run.plan.eval_jobs)
    pretrain_failed = sum(1 for j in run.plan.pretrain_jobs if j.key in run.failed)
    if t["cached"] == total:
        return f"{run.spec.name}: nothing to do ({total} evaluation{'s' * (total != 1)} cached)"
    parts = [f"{t['done']} done", f"{t['cached']} cached", f"{t['failed']} failed"]
    if t["skipped"]:
        parts.append(f"{t['skipped']} skipped because their pretraining failed ({pretrain_failed} job"
                     f"{'s' * (pretrain_failed != 1)})")
    return (f"{run.spec.name}: {total} evaluation{'s' * (total != 1)}: {', '.join(parts)}; {seconds:.1f} s; "
            f"results in {run.folder.results_dir}, leaderboard in {run.folder.leaderboard}")


def _fail(run: Run, job: PretrainJob | EvalJob, exc: BaseException) -> None:
    """Record a failed job; never raises, so the other jobs still run.

    The traceback goes to ``<out>/logs/<key>.log``, one line to stderr (a :class:`BenchError` by its message
    alone, anything else by its type and message and where its traceback is), and the failure to the
    ``bench_job_finished`` hook. A log that cannot be written (read-only or vanished folder) is said on that
    line. A :class:`DiskFullError` is only recorded (no log, no line): the run stops and ``bench`` reports it.
    """
    try:
        reason = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose __str__ fails still fails its job
        reason = type(exc).__name__
    if not isinstance(exc, DiskFullError):
        path = run.folder.log(job.key)
        try:
            atomic_write_text(path, "".join(traceback.format_exception(exc)))
            if not isinstance(exc, BenchError):
                reason += f" (traceback in {path})"
        except Exception as log_exc:
            reason += f" (its log could not be written to {path}: {type(log_exc).__name__}: {log_exc})"
        try:
            log(f"FAILED {job.describe()}: {reason}", logging.ERROR)
        except Exception:  # stderr gone (a closed pipe): nothing left to tell
            pass
        pjob = job if isinstance(job, PretrainJob) else job.pretrain
        try:  # the leaderboard's failed rows; a folder that took no log takes no record either
            record_failure(run.folder.logs_dir, job.key, {"benchmark": run.spec.name, "label": pjob.label,
                                                          "seed": pjob.seed, "job": job.describe(),
                                                          "reason": reason, "log": path})
        except Exception:
            pass
    run.failed.append(job.key)
    try:
        run.pm.hook.bench_job_finished(job=job, result={"status": "failed", "error": reason})
    except Exception as hook_exc:
        try:
            log(f"  a plugin's bench_job_finished hook failed on it: {type(hook_exc).__name__}: {hook_exc}",
                logging.WARNING)
        except Exception:
            pass


def evaluate(run: Run, job: EvalJob, source: PretrainJob, encoder: nn.Module, features: FeatureCache,
             stats: PretrainStats) -> list[dict[str, Any]]:
    """Sweep the evaluator on validation data, score the test split; returns result rows."""
    t0 = time.perf_counter()
    train, test = run.load_split(job.dataset, "train"), run.load_split(job.dataset, "test")
    for split, data in (("train", train), ("test", test)):
        check_labelled(data, f"dataset '{job.dataset.display}', {split} split")
    features.register_source(train)
    features.register_source(test)
    evaluator = run.registry.get("evaluators", job.evaluator.name)(job.evaluator.params)
    head = read_head(run.folder.artifacts(source.key) / HEAD_FILE) if evaluator.online_probe else None

    def make_task(fit: ImageSet, target: ImageSet) -> EvalTask:
        return EvalTask(encoder=encoder, fit=fit, target=target, num_classes=train.num_classes,
                        features=features, device=run.device, seed=job.pretrain.seed,
                        out_dir=run.folder.evaluation(job.key), online_head=head)

    outcome = sweep_and_test(evaluator, make_task, train, test, job.grid, metric=job.metric,
                             val_fraction=job.val_fraction, seed=job.pretrain.seed,
                             storage=run.storage, study_name=f"sweep:{job.key}")
    rows: list[dict[str, Any]] = result_rows(job, source, stats, outcome, eval_wall_s=time.perf_counter() - t0,
                                             device=device_name(run.device), harness_version=harness_version())
    return rows


def write_leaderboard(run: Run) -> str:
    """Regenerate ``<out>/leaderboard.md`` from the results of this run's plan; returns it.

    Results in the folder that no job of the plan produces (an earlier version of the file, another file's
    results) stay on disk and are left out, with one line saying how many; ``bench leaderboard`` shows them all.
    The plan's jobs that failed (and have not succeeded since) follow in a "Failed jobs" table, with the reason.
    """
    results = run.folder.results_dir
    text: str = render(read_rows([results]) if results.exists() else [], title=f"Leaderboard: {run.spec.name}",
                       current_keys={job.key for job in run.plan.eval_jobs})
    keys = [j.key for p in run.plan.pretrain_jobs for j in p.all_jobs()] + [j.key for j in run.plan.eval_jobs]
    failed = failures_section(read_failures(run.folder.logs_dir, keys))
    text = f"{text.rstrip()}\n\n{failed}" if failed else text
    atomic_write_text(run.folder.leaderboard, text)
    return text
