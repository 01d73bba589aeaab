"""Make the encoder a pretraining job stands for, and load it.

One function per kind of :class:`~ssl_bench.harness.pipeline.plan.PretrainJob`:

- ``run`` / ``cell``: :func:`_train` pretrains it (resuming from its checkpoint) and saves the encoder,
  with the run's snapshots on the way;
- ``select``: :func:`ensure_selected` pretrains every cell of a sweep, scores each on validation data
  and records the winner; :func:`winner_of` reads that record;
- ``snapshot``: :func:`ensure_snapshot` replays its run up to the step when the run finished without it.

:func:`ensure_pretrained` dispatches on the kind and skips what is saved already; :func:`load_encoder`
loads a finished encoder. Where the files go is :class:`~ssl_bench.harness.record.layout.RunFolder`'s.

A finished job is saved as one unit (:func:`save_encoder`): ``encoder.pt``, ``pretrain.json`` and
``job.json`` (the resolved spec and the key of the data it read), each atomically, then the done
marker ``done.json``; only the marker makes a job done, so a kill or a full disk part-way leaves a
job that is simply redone. A sweep's ``selection.json`` is its marker, written after its ``job.json``.
Before training, :mod:`~ssl_bench.harness.pipeline.budget` refuses a job that cannot fit in memory.

While a job trains, its lines are appended to its ``log.txt`` and every few steps its metrics go to the
``bench_step_logged`` hook (the built-in JSONL tracker writes them to ``metrics.jsonl``); without a
progress bar the loop logs a progress line at most every ``BENCH_PROGRESS_EVERY`` seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from ssl_bench.harness.components import Backbone, EvalTask, Method, instantiate_method
from ssl_bench.harness.data import ImageSet, balanced_subset, stratified_split
from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline.budget import pretrain_memory_problem
from ssl_bench.harness.pipeline.features import FeatureCache
from ssl_bench.harness.pipeline.logs import counted, job_log, logger, progress_every_s
from ssl_bench.harness.pipeline.online_probe import OnlineProbe
from ssl_bench.harness.pipeline.plan import PretrainJob, ResolvedDataset
from ssl_bench.harness.pipeline.train import PretrainStats, pretrain
from ssl_bench.harness.record.atomic import atomic_torch_save, atomic_write_text
from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.harness.scale.distributed import agree, barrier, is_main, world_size
from ssl_bench.harness.scale.machine import LoadMeter, device_name

if TYPE_CHECKING:
    from ssl_bench.harness.pipeline.runner import Run


def log(message: str, level: int = logging.INFO) -> None:
    """Log a line to the ``ssl_bench`` logger (stderr, the message alone, INFO and up unless ``-v``/``-q``);
    under torchrun only rank 0 speaks for all."""
    if is_main():
        logger().log(level, message)


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
    if agree(is_saved(run.folder, job.key)):
        return read_stats(run.folder, job)
    if job.kind == "snapshot":
        return ensure_snapshot(run, job)
    return _train(run, job, job.key, missing_snapshots(run, job))


def missing_snapshots(run: Run, job: PretrainJob) -> list[PretrainJob]:
    """The snapshots of run ``job`` whose encoder is not saved yet."""
    return [s for s in run.plan.snapshots_of(job) if not is_saved(run.folder, s.key)]


def ensure_snapshot(run: Run, job: PretrainJob) -> PretrainStats:
    """Make a snapshot its run did not save (the run finished before it was asked for): replay the run
    in the snapshot's folder (resumable) up to the last missing snapshot, saving each on the way."""
    assert job.snapshot_of is not None
    todo = missing_snapshots(run, job.snapshot_of)
    last = max(s.snapshot_step for s in todo)
    log(f"replaying {job.label} seed {job.seed} to step {last} for its snapshots")
    _train(run, job.snapshot_of, job.key, todo, stop_at=last)
    return read_stats(run.folder, job)


def is_saved(folder: RunFolder, key: str) -> bool:
    """Whether the encoder of pretraining job ``key`` is saved whole (its done marker is there)."""
    return folder.done_marker(key).exists()


def write_job_spec(folder: RunFolder, job: PretrainJob, data_key: str) -> None:
    """Write ``job.json``: the job's fully resolved spec and ``data_key``, the key of the split it read."""
    atomic_write_text(folder.job_spec(job.key), json.dumps(job.record() | {"data_key": data_key}, indent=2))


def save_encoder(folder: RunFolder, job: PretrainJob, backbone: nn.Module, stats: PretrainStats, *,
                 data_key: str, probe: OnlineProbe | None = None) -> None:
    """Save the finished encoder of ``job`` as one unit: ``backbone``'s weights, ``stats`` and ``job.json``,
    each atomically, then the done marker listing them (so a unit without its marker is redone).

    Args:
        folder: the output folder.
        job: the pretraining job (a run, a sweep cell or a snapshot).
        backbone: its trained backbone (the state dict is saved).
        stats: what the pretraining reported.
        data_key: the ``ImageSet.key`` of the split it was trained on (recorded in ``job.json``).
        probe: its online linear probe, whose head is saved beside the encoder (``online_head.pt``, part of
            the unit) unless it trained none.
    """
    key = job.key
    atomic_torch_save(backbone.state_dict(), folder.encoder(key))
    atomic_write_text(folder.stats(key), json.dumps(stats.as_dict()))
    write_job_spec(folder, job, data_key)
    head = probe.save(folder.artifacts(key)) if probe is not None else None
    unit = [folder.encoder(key), folder.stats(key), folder.job_spec(key)] + ([head] if head is not None else [])
    atomic_write_text(folder.done(key), json.dumps({"key": key, "files": {p.name: p.stat().st_size for p in unit}}))


def _train(run: Run, job: PretrainJob, folder_key: str, snapshots: list[PretrainJob],
           stop_at: int | None = None) -> PretrainStats:
    """Pretrain ``job`` in the artifacts folder of ``folder_key`` (resuming from its checkpoint), saving
    ``snapshots`` on the way; with ``stop_at`` a replay that ends there and saves no final encoder.
    While it trains, what it logs is appended to that folder's ``log.txt`` (rank 0)."""
    train = without_validation_rows(run, job, run.load_split(job.dataset, "train"))
    torch.manual_seed(job.seed)
    method_cls = run.registry.get("methods", job.method.name)
    method = instantiate_method(method_cls, job.method.params, build_backbone(run, job), num_classes=train.num_classes,
                                num_samples=len(train))
    checkpoint = run.folder.checkpoint(folder_key)  # what pretrain() writes in its workdir
    stats = PretrainStats()
    trains = method_cls.trains and job.pretrain.epochs > 0
    probe = (OnlineProbe(job.online_probe, method.backbone.feature_dim, train.num_classes, seed=job.seed,
                         device=run.device) if trains and job.online_probe is not None else None)
    if trains:
        with job_log(run.folder.text_log(folder_key)) if is_main() else contextlib.nullcontext():
            stats = _pretrain_logged(run, job, method, train, folder_key, snapshots, stop_at, probe)
    if is_main():
        if stop_at is None:
            save_encoder(run.folder, job, method.backbone, stats, data_key=train.key, probe=probe)
            run.pm.hook.bench_job_finished(job=job, result={"status": "ok", "stats": stats.as_dict()})
        checkpoint.unlink(missing_ok=True)
    barrier()
    return stats


def _pretrain_logged(run: Run, job: PretrainJob, method: Method, train: ImageSet, folder_key: str,
                     snapshots: list[PretrainJob], stop_at: int | None, probe: OnlineProbe | None) -> PretrainStats:
    """The training part of :func:`_train`: the memory check, the loop with its lines and step events."""
    label = f"{job.label} seed {job.seed}"
    problem = pretrain_memory_problem(train, job.pretrain.batch_size // world_size(), len(method.views), method,
                                      run.device, label)
    if agree(problem is not None):  # under torchrun every process stops on rank 0's verdict
        raise BenchError(problem or f"{label}: does not fit in memory (see rank 0)")
    pipelines = {view: run.registry.get("augmentations", r.name)(r.params) for view, r in job.views.items()}
    workdir = run.folder.artifacts(folder_key)
    resumed = run.folder.checkpoint(folder_key).exists()
    log(f"{'resuming' if resumed else 'pretraining'} {label} "
        f"({counted(job.pretrain.epochs, 'epoch')} of {job.dataset.display} on {run.device})")
    log(f"  artifacts in {workdir}", logging.DEBUG)
    saves = {s.snapshot_step: functools.partial(save_encoder, run.folder, s, method.backbone, data_key=train.key,
                                                probe=probe) for s in snapshots}
    desc = f"{job.label} s{job.seed}"

    def on_step(step: int, metrics: dict[str, float]) -> None:
        log(f"  {desc} step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()), logging.DEBUG)
        run.pm.hook.bench_step_logged(job=job, step=step, metrics=metrics, artifacts=workdir)

    meter = LoadMeter(threads=torch.get_num_threads()).start()
    stats = pretrain(method, pipelines, train, job.pretrain, seed=job.seed, device=run.device,
                     workdir=workdir, progress=run.progress, desc=desc, snapshots=saves, stop_at=stop_at,
                     on_step=on_step, progress_every_s=None if run.progress else progress_every_s(), probe=probe)
    load = meter.stop()
    stats.threads, stats.load_others, stats.contended = load.threads, load.others, load.contended
    stats.device = device_name(run.device)
    if load.contended:
        log(f"  timing contended: other processes kept {load.others:.1f} cores busy while it trained",
            logging.WARNING)
    log(f"pretrained {label}: {counted(stats.steps, 'step')}, loss {stats.final_loss:.3f}, "
        f"{stats.images_per_s:.0f} img/s, {stats.train_s:.0f} s")
    return stats


def without_validation_rows(run: Run, job: PretrainJob, train: ImageSet) -> ImageSet:
    """``train`` (the job's pretraining split) less the validation rows of ``job.holdout``, or ``train`` itself.

    Only a method that reads labels has a holdout (:class:`~ssl_bench.harness.pipeline.plan.Holdout`): for each
    split an evaluation sweeps on, the rows its sweep validates on are carved exactly as
    :func:`~ssl_bench.harness.pipeline.sweep.sweep_and_test` carves them (``stratified_split`` of that split's
    labels, the holdout's ``val_fraction``, the job's seed) and matched to this split by their position in
    the full split, so a different ``train_size`` on either side still lines up. No random draw is made.
    """
    if job.holdout is None:
        return train
    held = [_full_positions(run, ds)[stratified_split(run.load_split(ds, "train").labels, job.holdout.val_fraction,
                                                      job.seed)[1]] for ds in job.holdout.splits]
    keep = (~torch.isin(_full_positions(run, job.dataset), torch.cat(held))).nonzero().flatten()
    return train.subset(keep, key=f"{train.key}|without{len(train) - len(keep)}val")


def _full_positions(run: Run, ds: ResolvedDataset) -> torch.Tensor:
    """Positions in the full training split of the rows ``run.load_split(ds, "train")`` holds, int64 (N,):
    its class-balanced subset when ``train_size`` takes one (drawn as ``Run.load_split`` draws it)."""
    if ds.train_size is None:
        return torch.arange(len(run.load_split(ds, "train")))
    full = run.load_split(dataclasses.replace(ds, train_size=None), "train")
    if ds.train_size >= len(full):
        return torch.arange(len(full))
    return balanced_subset(full.labels, ds.train_size, seed=0)


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
            write_job_spec(run.folder, job, train.key)  # selection.json, written last, is the marker
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
