"""Execute a plan: pretrain what is missing (resuming), evaluate, record, regenerate the leaderboard.

Layout of an output folder::

    <out>/artifacts/<pretrain key>/encoder.pt    backbone weights of a finished pretraining
    <out>/artifacts/<pretrain key>/pretrain.json PretrainStats
    <out>/artifacts/<pretrain key>/last.pt       resumable state of an unfinished pretraining
    <out>/artifacts/<pretrain key>/features/     cached features per dataset split
    <out>/results/<eval key>.parquet             result rows of a finished evaluation
    <out>/evaluations/<eval key>/                files an evaluator writes (gallery PNG)
    <out>/logs/<key>.log                         traceback of a failed job
    <out>/leaderboard.md                         regenerated after every run
"""

from __future__ import annotations

import functools
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pluggy
import torch
from torch import nn

from ssl_bench.harness.components import Backbone, DataContext, EvalTask, instantiate_method
from ssl_bench.harness.data import ImageSet, balanced_subset, stratified_split
from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline.features import FeatureCache
from ssl_bench.harness.pipeline.plan import EvalJob, Plan, PretrainJob, ResolvedDataset
from ssl_bench.harness.pipeline.specs import BenchmarkSpec
from ssl_bench.harness.pipeline.sweep import sweep_and_test
from ssl_bench.harness.pipeline.train import CHECKPOINT, PretrainStats, pretrain
from ssl_bench.harness.plugins import Registry, harness_version
from ssl_bench.harness.record.atomic import atomic_torch_save, atomic_write_text
from ssl_bench.harness.record.leaderboard import render
from ssl_bench.harness.record.results import device_name, dumps, provenance, read_rows, result_path, write_rows
from ssl_bench.harness.scale.distributed import agree, barrier, is_main, rank, world_size


def log(message: str) -> None:
    if is_main():  # under torchrun, rank 0 speaks for all
        print(message, file=sys.stderr, flush=True)


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
    _splits: dict[str, ImageSet] = field(default_factory=dict)

    @property
    def results_dir(self) -> Path:
        return self.out_dir / "results"

    def artifacts(self, job: PretrainJob) -> Path:
        return self.out_dir / "artifacts" / job.key

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
    """Run every unfinished job; returns the number of failed jobs. Finished jobs are skipped."""
    run.pm.hook.bench_run_started(run=run)
    total = len(run.plan.eval_jobs)
    done = 0
    for pjob in run.plan.pretrain_jobs:
        evals = run.plan.evals_of(pjob)
        todo = [e for e in evals if not result_path(run.results_dir, e.key).exists()]
        for e in evals:
            if e not in todo:
                done += 1
                run.pm.hook.bench_job_finished(job=e, result={"status": "cached"})
        if not agree(bool(todo)):  # under torchrun every process follows rank 0's view of the files
            continue
        try:
            stats = ensure_pretrained(run, pjob)
            if not is_main():
                continue  # the other processes only help pretrain; rank 0 evaluates
            source = winner_of(run, pjob)
            encoder = load_encoder(run, source)
        except Exception as exc:
            _fail(run, pjob, exc)
            if world_size() > 1:  # the other processes wait in a collective for this one: stop them all
                raise SystemExit(f"process {rank()}: {pjob.label} seed {pjob.seed}: {exc}; stopping every process "
                                 "(finished jobs are kept, rerun to resume)") from exc
            done += len(todo)
            continue
        features = FeatureCache(encoder, run.device, run.artifacts(source) / "features")
        for e in todo:
            done += 1
            try:
                t0 = time.perf_counter()
                rows = evaluate(run, e, source, encoder, features, stats)
                write_rows(result_path(run.results_dir, e.key), rows)
                summary = ", ".join(f"{r['metric']} {r['value']:.2f}" for r in rows)
                log(f"[{done}/{total}] {e.pretrain.label} seed {e.pretrain.seed} | {e.evaluator.name} on {e.dataset.display}: "
                    f"{summary} ({time.perf_counter() - t0:.1f} s)")
                run.pm.hook.bench_job_finished(job=e, result={"status": "ok", "rows": rows})
            except Exception as exc:
                _fail(run, e, exc)
    run.pm.hook.bench_run_finished(run=run, failed=len(run.failed))
    return len(run.failed)


def _fail(run: Run, job: PretrainJob | EvalJob, exc: BaseException) -> None:
    path = run.out_dir / "logs" / f"{job.key}.log"
    atomic_write_text(path, "".join(traceback.format_exception(exc)))
    reason = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc} (traceback in {path})"
    log(f"FAILED {job.describe()}\n  {reason}")
    run.failed.append(job.key)
    run.pm.hook.bench_job_finished(job=job, result={"status": "failed", "error": reason})


def build_backbone(run: Run, job: PretrainJob) -> Backbone:
    return run.registry.get("backbones", job.backbone.name)(job.backbone.params)  # type: ignore[no-any-return]


def ensure_pretrained(run: Run, job: PretrainJob) -> PretrainStats:
    """Pretrain ``job`` unless its encoder exists; resumes from ``last.pt`` when there is one.

    For a pretraining sweep, pretrain every cell and select the winner (see :func:`ensure_selected`).
    """
    if job.candidates:
        return ensure_selected(run, job)
    folder = run.artifacts(job)
    if agree((folder / "encoder.pt").exists()):
        return PretrainStats(**json.loads((folder / "pretrain.json").read_text()))
    if job.snapshot_of is not None:
        return ensure_snapshot(run, job)
    return _train(run, job, folder, missing_snapshots(run, job))


def missing_snapshots(run: Run, job: PretrainJob) -> list[PretrainJob]:
    """The snapshots of run ``job`` whose encoder is not saved yet."""
    return [s for s in run.plan.snapshots_of(job) if not (run.artifacts(s) / "encoder.pt").exists()]


def ensure_snapshot(run: Run, job: PretrainJob) -> PretrainStats:
    """Make a snapshot its run did not save (the run finished before it was asked for): replay the run
    in the snapshot's folder (resumable) up to the last missing snapshot, saving each on the way."""
    assert job.snapshot_of is not None
    todo = missing_snapshots(run, job.snapshot_of)
    last = max(s.snapshot_step for s in todo)
    log(f"replaying {job.label} seed {job.seed} to step {last} for its snapshots")
    _train(run, job.snapshot_of, run.artifacts(job), todo, stop_at=last)
    return PretrainStats(**json.loads((run.artifacts(job) / "pretrain.json").read_text()))


def save_encoder(folder: Path, backbone: nn.Module, stats: PretrainStats) -> None:
    atomic_torch_save(backbone.state_dict(), folder / "encoder.pt")
    atomic_write_text(folder / "pretrain.json", json.dumps(stats.as_dict()))


def _train(run: Run, job: PretrainJob, folder: Path, snapshots: list[PretrainJob],
           stop_at: int | None = None) -> PretrainStats:
    """Pretrain ``job`` in ``folder`` (resuming from its ``last.pt``), saving ``snapshots`` on the way;
    with ``stop_at`` a replay that ends there and saves no final encoder."""
    train = run.load_split(job.dataset, "train")
    torch.manual_seed(job.seed)
    method_cls = run.registry.get("methods", job.method.name)
    method = instantiate_method(method_cls, job.method.params, build_backbone(run, job), num_classes=train.num_classes,
                          num_samples=len(train))
    stats = PretrainStats()
    if method_cls.trains and job.pretrain.epochs > 0:
        pipelines = {view: run.registry.get("augmentations", r.name)(r.params) for view, r in job.views.items()}
        resumed = (folder / CHECKPOINT).exists()
        log(f"{'resuming' if resumed else 'pretraining'} {job.label} seed {job.seed} "
            f"({job.pretrain.epochs} epochs of {job.dataset.display} on {run.device})")
        saves = {s.snapshot_step: functools.partial(save_encoder, run.artifacts(s), method.backbone)
                 for s in snapshots}
        stats = pretrain(method, pipelines, train, job.pretrain, seed=job.seed, device=run.device,
                         workdir=folder, progress=run.progress, desc=f"{job.label} s{job.seed}",
                         snapshots=saves, stop_at=stop_at)
        log(f"pretrained {job.label} seed {job.seed}: {stats.steps} steps, loss {stats.final_loss:.3f}, "
            f"{stats.images_per_s:.0f} img/s, {stats.train_s:.0f} s")
    if is_main():
        if stop_at is None:
            save_encoder(folder, method.backbone, stats)
            run.pm.hook.bench_job_finished(job=job, result={"status": "ok", "stats": stats.as_dict()})
        (folder / CHECKPOINT).unlink(missing_ok=True)
    barrier()
    return stats


def ensure_selected(run: Run, job: PretrainJob) -> PretrainStats:
    """Pretrain every cell of a sweep, score each by ``select`` on validation data, record the winner.

    The validation split is carved (stratified, seeded) from the pretraining dataset's training split;
    each cell's encoder is scored by the named evaluator with its default params. Ties go to the
    first cell in grid order. The choice is written to ``selection.json`` beside the job.
    """
    selection = run.artifacts(job) / "selection.json"
    if not agree(selection.exists()):
        evaluator_name, _, metric = job.pretrain.select.partition(".")
        cls = run.registry.get("evaluators", evaluator_name)
        train = run.load_split(job.dataset, "train")
        rest, val = stratified_split(train.labels, run.spec.val_fraction, job.seed)
        scores: dict[str, float] = {}
        for cell in job.candidates:
            ensure_pretrained(run, cell)
            if not is_main():
                continue  # rank 0 scores the cells
            encoder = load_encoder(run, cell)
            features = FeatureCache(encoder, run.device, run.artifacts(cell) / "features")
            features.register_source(train)
            task = EvalTask(encoder=encoder, fit=train.subset(rest), target=train.subset(val),
                            num_classes=train.num_classes, features=features, device=run.device, seed=job.seed)
            scores[cell.key] = cls(cls.Params()).evaluate(task, {})[metric]
            log(f"  {job.label} seed {job.seed} {dict(cell.hparams)}: validation {job.pretrain.select} {scores[cell.key]:.2f}")
        if is_main():
            winner = max(job.candidates, key=lambda c: scores[c.key])
            atomic_write_text(selection, json.dumps({
                "winner": winner.key, "select": job.pretrain.select, "hparams": dict(winner.hparams),
                "scores": [{"key": c.key, "hparams": dict(c.hparams), "score": scores[c.key]} for c in job.candidates]},
                indent=2))
        barrier()
    return ensure_pretrained(run, winner_of(run, job))


def winner_of(run: Run, job: PretrainJob) -> PretrainJob:
    """The job whose encoder stands for ``job``: itself, or its sweep's recorded winner."""
    if not job.candidates:
        return job
    key = json.loads((run.artifacts(job) / "selection.json").read_text())["winner"]
    return next(c for c in job.candidates if c.key == key)


def load_encoder(run: Run, job: PretrainJob) -> nn.Module:
    """The frozen pretrained backbone of ``job`` on the run's device, in eval mode."""
    backbone = build_backbone(run, job)
    backbone.load_state_dict(torch.load(run.artifacts(job) / "encoder.pt", map_location="cpu", weights_only=True))
    backbone.to(run.device).eval().requires_grad_(False)
    return backbone


def evaluate(run: Run, job: EvalJob, source: PretrainJob, encoder: nn.Module, features: FeatureCache,
             stats: PretrainStats) -> list[dict[str, Any]]:
    """Sweep the evaluator on validation data, score the test split; returns result rows."""
    t0 = time.perf_counter()
    train, test = run.load_split(job.dataset, "train"), run.load_split(job.dataset, "test")
    features.register_source(train)
    features.register_source(test)
    evaluator = run.registry.get("evaluators", job.evaluator.name)(job.evaluator.params)

    def make_task(fit: ImageSet, target: ImageSet) -> EvalTask:
        return EvalTask(encoder=encoder, fit=fit, target=target, num_classes=train.num_classes,
                        features=features, device=run.device, seed=job.pretrain.seed,
                        out_dir=run.out_dir / "evaluations" / job.key)

    outcome = sweep_and_test(evaluator, make_task, train, test, job.grid, metric=job.metric,
                             val_fraction=job.val_fraction, seed=job.pretrain.seed,
                             storage=run.storage, study_name=f"sweep:{job.key}")
    p = source
    base = {
        "benchmark": job.benchmark, "job_key": job.key, "pretrain_key": p.key, "method": p.method.name,
        "label": p.label, "method_params": dumps(p.method.params.model_dump(mode="json")),
        "backbone": p.backbone.name, "pretrain_dataset": p.dataset.display, "pretrain_epochs": p.pretrain.epochs,
        "pretrain_steps": stats.steps,
        "pretrain_total_steps": stats.steps_per_epoch * p.pretrain.epochs if p.snapshot_of else stats.steps,
        "pretrain_batch_size": stats.batch_size or p.pretrain.batch_size,
        "pretrain_wall_s": stats.train_s, "pretrain_images_per_s": stats.images_per_s,
        "pretrain_final_loss": stats.final_loss, "pretrain_epoch_losses": stats.epoch_losses,
        "evaluator": job.evaluator.name, "evaluator_params": dumps(job.evaluator.params.model_dump(mode="json")),
        "dataset": job.dataset.display,
        "label_fraction": float(getattr(job.evaluator.params, "label_fraction", 1.0)), "seed": p.seed, "split": "test",
        "hparams": dumps(outcome.hparams | {f"pretrain.{k}": v for k, v in p.hparams}), "trials": outcome.trials,
        "val_score": outcome.val_score,
        "eval_wall_s": time.perf_counter() - t0, "device": device_name(run.device),
        "harness_version": harness_version(), "status": "ok",
        "plugin_versions": dumps({f"{kind}:{r.name}": r.version for kind, r in
                                  (("method", p.method), ("backbone", p.backbone), ("dataset", p.dataset),
                                   ("evaluator", job.evaluator))}),
        **provenance(),
    }
    return [base | {"metric": m, "value": float(v)} for m, v in outcome.metrics.items()]


def write_leaderboard(run: Run) -> str:
    """Regenerate ``<out>/leaderboard.md`` from every result in the output folder; returns it."""
    text = render(read_rows([run.results_dir]) if run.results_dir.exists() else [], title=f"Leaderboard: {run.spec.name}")
    atomic_write_text(run.out_dir / "leaderboard.md", text)
    return text
