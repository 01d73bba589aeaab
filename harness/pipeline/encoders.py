"""Make the encoder a pretraining job stands for, and load it.

One function per kind of :class:`~ssl_bench.harness.pipeline.plan.PretrainJob`:

- ``run`` / ``cell``: :func:`_train` pretrains it (resuming from its checkpoint) and saves the encoder,
  with the run's snapshots on the way;
- ``select``: :func:`ensure_selected` pretrains every cell of a sweep, scores each on validation data
  and records the winner; :func:`winner_of` reads that record;
- ``snapshot``: :func:`ensure_snapshot` replays its run up to the step when the run finished without it.

:func:`ensure_pretrained` dispatches on the kind and skips what is saved already; :func:`load_encoder`
loads a finished encoder. Where the files go is :class:`~ssl_bench.harness.record.layout.RunFolder`'s.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import TYPE_CHECKING

import torch
from torch import nn

from ssl_bench.harness.components import Backbone, EvalTask, instantiate_method
from ssl_bench.harness.data import stratified_split
from ssl_bench.harness.pipeline.features import FeatureCache
from ssl_bench.harness.pipeline.plan import PretrainJob
from ssl_bench.harness.pipeline.train import PretrainStats, pretrain
from ssl_bench.harness.record.atomic import atomic_torch_save, atomic_write_text
from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.harness.scale.distributed import agree, barrier, is_main

if TYPE_CHECKING:
    from ssl_bench.harness.pipeline.runner import Run


def log(message: str) -> None:
    """Print a progress line to stderr; under torchrun only rank 0 speaks for all."""
    if is_main():
        print(message, file=sys.stderr, flush=True)


def build_backbone(run: Run, job: PretrainJob) -> Backbone:
    """A fresh (randomly initialised) backbone of ``job``."""
    backbone: Backbone = run.registry.get("backbones", job.backbone.name)(job.backbone.params)
    return backbone


def read_stats(folder: RunFolder, job: PretrainJob) -> PretrainStats:
    """The stats saved beside the finished encoder of ``job``."""
    return PretrainStats(**json.loads(folder.stats(job.key).read_text()))


def ensure_pretrained(run: Run, job: PretrainJob) -> PretrainStats:
    """Make the encoder of ``job`` unless it is saved; resumes from its checkpoint when there is one.

    For a pretraining sweep, pretrain every cell and select the winner (see :func:`ensure_selected`);
    for a snapshot its run did not save, replay the run (see :func:`ensure_snapshot`).
    """
    if job.kind == "select":
        return ensure_selected(run, job)
    if agree(run.folder.encoder(job.key).exists()):
        return read_stats(run.folder, job)
    if job.kind == "snapshot":
        return ensure_snapshot(run, job)
    return _train(run, job, job.key, missing_snapshots(run, job))


def missing_snapshots(run: Run, job: PretrainJob) -> list[PretrainJob]:
    """The snapshots of run ``job`` whose encoder is not saved yet."""
    return [s for s in run.plan.snapshots_of(job) if not run.folder.encoder(s.key).exists()]


def ensure_snapshot(run: Run, job: PretrainJob) -> PretrainStats:
    """Make a snapshot its run did not save (the run finished before it was asked for): replay the run
    in the snapshot's folder (resumable) up to the last missing snapshot, saving each on the way."""
    assert job.snapshot_of is not None
    todo = missing_snapshots(run, job.snapshot_of)
    last = max(s.snapshot_step for s in todo)
    log(f"replaying {job.label} seed {job.seed} to step {last} for its snapshots")
    _train(run, job.snapshot_of, job.key, todo, stop_at=last)
    return read_stats(run.folder, job)


def save_encoder(folder: RunFolder, key: str, backbone: nn.Module, stats: PretrainStats) -> None:
    """Save ``backbone``'s weights and ``stats`` as the finished encoder of pretraining job ``key``."""
    atomic_torch_save(backbone.state_dict(), folder.encoder(key))
    atomic_write_text(folder.stats(key), json.dumps(stats.as_dict()))


def _train(run: Run, job: PretrainJob, folder_key: str, snapshots: list[PretrainJob],
           stop_at: int | None = None) -> PretrainStats:
    """Pretrain ``job`` in the artifacts folder of ``folder_key`` (resuming from its checkpoint), saving
    ``snapshots`` on the way; with ``stop_at`` a replay that ends there and saves no final encoder."""
    train = run.load_split(job.dataset, "train")
    torch.manual_seed(job.seed)
    method_cls = run.registry.get("methods", job.method.name)
    method = instantiate_method(method_cls, job.method.params, build_backbone(run, job), num_classes=train.num_classes,
                                num_samples=len(train))
    workdir = run.folder.artifacts(folder_key)
    checkpoint = run.folder.checkpoint(folder_key)  # what pretrain() writes in its workdir
    stats = PretrainStats()
    if method_cls.trains and job.pretrain.epochs > 0:
        pipelines = {view: run.registry.get("augmentations", r.name)(r.params) for view, r in job.views.items()}
        resumed = checkpoint.exists()
        log(f"{'resuming' if resumed else 'pretraining'} {job.label} seed {job.seed} "
            f"({job.pretrain.epochs} epochs of {job.dataset.display} on {run.device})")
        saves = {s.snapshot_step: functools.partial(save_encoder, run.folder, s.key, method.backbone)
                 for s in snapshots}
        stats = pretrain(method, pipelines, train, job.pretrain, seed=job.seed, device=run.device,
                         workdir=workdir, progress=run.progress, desc=f"{job.label} s{job.seed}",
                         snapshots=saves, stop_at=stop_at)
        log(f"pretrained {job.label} seed {job.seed}: {stats.steps} steps, loss {stats.final_loss:.3f}, "
            f"{stats.images_per_s:.0f} img/s, {stats.train_s:.0f} s")
    if is_main():
        if stop_at is None:
            save_encoder(run.folder, folder_key, method.backbone, stats)
            run.pm.hook.bench_job_finished(job=job, result={"status": "ok", "stats": stats.as_dict()})
        checkpoint.unlink(missing_ok=True)
    barrier()
    return stats


def ensure_selected(run: Run, job: PretrainJob) -> PretrainStats:
    """Pretrain every cell of a sweep, score each by ``select`` on validation data, record the winner.

    The validation split is carved (stratified, seeded) from the pretraining dataset's training split;
    each cell's encoder is scored by the named evaluator with its default params. Ties go to the
    first cell in grid order. The choice is written to ``selection.json`` beside the job.
    """
    selection = run.folder.selection(job.key)
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
            features = FeatureCache(encoder, run.device, run.folder.features(cell.key))
            features.register_source(train)
            task = EvalTask(encoder=encoder, fit=train.subset(rest), target=train.subset(val),
                            num_classes=train.num_classes, features=features, device=run.device, seed=job.seed)
            scores[cell.key] = cls(cls.Params()).evaluate(task, {})[metric]
            log(f"  {job.label} seed {job.seed} {dict(cell.hparams)}: validation {job.pretrain.select} "
                f"{scores[cell.key]:.2f}")
        if is_main():
            winner = max(job.candidates, key=lambda c: scores[c.key])
            atomic_write_text(selection, json.dumps({
                "winner": winner.key, "select": job.pretrain.select, "hparams": dict(winner.hparams),
                "scores": [{"key": c.key, "hparams": dict(c.hparams), "score": scores[c.key]} for c in job.candidates]},
                indent=2))
        barrier()
    return ensure_pretrained(run, winner_of(run, job))


def winner_of(run: Run, job: PretrainJob) -> PretrainJob:
    """The job whose encoder stands for ``job``: its sweep's recorded winner, or itself."""
    if job.kind != "select":
        return job
    key = json.loads(run.folder.selection(job.key).read_text())["winner"]
    return next(c for c in job.candidates if c.key == key)


def load_encoder(run: Run, job: PretrainJob) -> nn.Module:
    """The frozen pretrained backbone of ``job`` on the run's device, in eval mode."""
    backbone: nn.Module = build_backbone(run, job)
    backbone.load_state_dict(torch.load(run.folder.encoder(job.key), map_location="cpu", weights_only=True))
    backbone.to(run.device).eval().requires_grad_(False)
    return backbone
