"""Expand a benchmark into jobs with content keys.

A job's key hashes its fully resolved spec: plugin params with defaults filled in, data subset,
seed, budget and the versions of the plugins involved. Same key = same work, so ``bench run`` skips
a job whose result exists, and changing one parameter re-runs only the jobs it reaches.

The data itself is part of the key too, where the plan is given the :class:`DataContext` its jobs
will load from (``make_plan(..., data=ctx)``): each split a job reads contributes the dataset's
:meth:`~ssl_bench.harness.components.Dataset.fingerprint` (for file datasets the paths, sizes and
modification times of its files, the same identity the decode caches key on; computed from a
listing, never by decoding). A fixed dataset, or another ``--data-root``, thus gives new keys: its
jobs are redone into new files beside the old ones, which stay as they were. The fingerprint lives
in the plan rather than being read off the loaded :class:`~ssl_bench.harness.data.ImageSet` when a
job runs because "done" is decided before anything is loaded (the dry run, the skip of finished
evaluations). Embedded datasets (``shapes``, ``digits``) have an empty fingerprint and a plan made
without a context has none at all: their keys are what they were before fingerprints existed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ssl_bench.harness.components import DataContext
from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline.specs import (
    BenchmarkSpec,
    ComponentRef,
    DatasetRef,
    PretrainSpec,
    axis_points,
    eval_datasets,
    method_pretrain,
    resolve,
)
from ssl_bench.harness.plugins import Registry, harness_version


def content_key(payload: dict[str, Any]) -> str:
    """A 16-hex-digit SHA-256 of canonical JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Resolved:
    """A component with validated params (defaults filled in) and the version that registered it."""

    name: str
    params: Any
    version: str

    def payload(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params.model_dump(mode="json"), "version": self.version}


@dataclass(frozen=True)
class ResolvedDataset(Resolved):
    train_size: int | None = None
    test_size: int | None = None
    train_split: str = "train"

    def payload(self) -> dict[str, Any]:
        split = {"train_split": self.train_split} if self.train_split != "train" else {}
        return super().payload() | {"train_size": self.train_size, "test_size": self.test_size} | split

    @property
    def display(self) -> str:
        name = self.name if self.train_split == "train" else f"{self.name}/{self.train_split}"
        return name if self.train_size is None else f"{name}[{self.train_size}]"


JobKind = Literal["run", "cell", "select", "snapshot"]
"""What a :class:`PretrainJob` stands for:

- ``run``: pretrain one method with one seed (also an untrained method's one-off encoder);
- ``cell``: one grid cell of a pretraining sweep, pretrained like a run;
- ``select``: a pretraining sweep: its ``candidates`` are the cells, it stands for the one chosen on validation data;
- ``snapshot``: the encoder of run ``snapshot_of`` after ``snapshot_step`` optimizer steps.
"""


@dataclass(frozen=True)
class PretrainJob:
    """One encoder to make: pretrain a method with one seed, pick a sweep's winner, or snapshot a run."""

    key: str
    method: Resolved
    label: str
    seed: int
    dataset: ResolvedDataset
    backbone: Resolved
    views: dict[str, Resolved]
    pretrain: PretrainSpec
    kind: JobKind
    """What the job stands for (see :data:`JobKind`); not part of the content key."""
    candidates: tuple[PretrainJob, ...] = ()
    """For ``select``: one job per grid cell; this job stands for the winner."""
    hparams: tuple[tuple[str, float], ...] = ()
    """For a ``cell``: its optimizer values (empty otherwise)."""
    snapshot_of: PretrainJob | None = None
    """For a ``snapshot``: the run it is taken from (``snapshot_step`` optimizer steps in)."""
    snapshot_step: int = 0
    data: str = ""
    """Fingerprint of the pretraining split's data (:meth:`Dataset.fingerprint`), in the key unless ''."""

    def record(self) -> dict[str, Any]:
        """The fully resolved spec of this job as JSON-ready data (its ``job.json``): key, kind, the
        method, backbone, dataset and view pipelines with every param resolved, the budget, seed, sweep
        cell, snapshot step and data fingerprint."""
        budget = self.pretrain.model_dump(mode="json", exclude={"dataset", "backbone", "augmentations", "axes"})
        return {"key": self.key, "kind": self.kind, "label": self.label, "seed": self.seed,
                "method": self.method.payload(), "backbone": self.backbone.payload(),
                "dataset": self.dataset.payload(), "views": {v: r.payload() for v, r in self.views.items()},
                "budget": budget, "hparams": dict(self.hparams), "data": self.data,
                "candidates": [c.key for c in self.candidates],
                "snapshot_of": self.snapshot_of.key if self.snapshot_of is not None else None,
                "snapshot_step": self.snapshot_step, "harness": harness_version()}

    def describe(self) -> str:
        """One line of ``bench run --dry-run``."""
        if self.kind == "snapshot":
            assert self.snapshot_of is not None
            return (f"snapshot {self.key}  {self.label} seed={self.seed} after step {self.snapshot_step} of "
                    f"{self.snapshot_of.key}")
        if self.kind == "select":
            return (f"select   {self.key}  {self.label} seed={self.seed}: best of {len(self.candidates)} by "
                    f"{self.pretrain.select} on validation data")
        cell = "".join(f" {k}={v}" for k, v in self.hparams)
        return (f"pretrain {self.key}  {self.label} seed={self.seed} on {self.dataset.display} "
                f"backbone={self.backbone.name} epochs={self.pretrain.epochs} batch={self.pretrain.batch_size}{cell}")

    def all_jobs(self) -> list[PretrainJob]:
        """The sweep's cells and then this job, or just this job."""
        return [*self.candidates, self]


@dataclass(frozen=True)
class EvalJob:
    """Evaluate one pretrained encoder with one protocol on one target dataset."""

    key: str
    benchmark: str
    pretrain: PretrainJob
    evaluator: Resolved
    dataset: ResolvedDataset
    grid: dict[str, tuple[float, ...]]
    metric: str
    val_fraction: float
    data: tuple[str, str] = ("", "")
    """Fingerprints of the target's train and test splits (:meth:`Dataset.fingerprint`), in the key unless ''."""

    def describe(self) -> str:
        grid = " x ".join(f"{k}{list(v)}" for k, v in self.grid.items()) or "no sweep"
        return (f"eval     {self.key}  {self.pretrain.label} seed={self.pretrain.seed} {self.evaluator.name} on "
                f"{self.dataset.display} ({grid}) <- {self.pretrain.key}")


@dataclass(frozen=True)
class Plan:
    pretrain_jobs: list[PretrainJob]
    eval_jobs: list[EvalJob]

    def evals_of(self, job: PretrainJob) -> list[EvalJob]:
        return [e for e in self.eval_jobs if e.pretrain.key == job.key]

    def snapshots_of(self, job: PretrainJob) -> list[PretrainJob]:
        return [j for j in self.pretrain_jobs if j.kind == "snapshot" and j.snapshot_of is not None
                and j.snapshot_of.key == job.key]

    def units(self) -> dict[str, Plan]:
        """The plan cut into independent units by run key: a run with its snapshots and their evaluations."""
        groups: dict[str, list[PretrainJob]] = {}
        for job in self.pretrain_jobs:
            groups.setdefault((job.snapshot_of or job).key, []).append(job)
        return {key: Plan(jobs, [e for j in jobs for e in self.evals_of(j)]) for key, jobs in groups.items()}


def _resolve(registry: Registry, kind: str, ref: ComponentRef, source: str, loc: str) -> Resolved:
    params = resolve(registry, kind, ref, source, loc)
    return Resolved(ref.name, params, registry.entry(kind, ref.name).version)


def _dataset(registry: Registry, ref: DatasetRef, source: str, loc: str) -> ResolvedDataset:
    r = _resolve(registry, "datasets", ref, source, loc)
    return ResolvedDataset(r.name, r.params, r.version, ref.train_size, ref.test_size, ref.train_split)


Fingerprint = Callable[[ResolvedDataset, str], str]
"""(dataset, "train" | "test") -> the data fingerprint of that split ('' when there is none)."""


def data_fingerprints(registry: Registry, data: DataContext | None) -> Fingerprint:
    """The fingerprint function of a plan: each dataset split's :meth:`Dataset.fingerprint`, computed once.

    ``"train"`` means the dataset's ``train_split``. Without a context (``data`` None) every fingerprint
    is ''. A dataset whose data cannot be found or listed yet has '' too: its job reports it when it runs.
    """
    memo: dict[tuple[str, str], str] = {}

    def fingerprint(ds: ResolvedDataset, split: str) -> str:
        if data is None:
            return ""
        source = ds.train_split if split == "train" else split
        memo_key = (content_key(ds.payload()), source)
        if memo_key not in memo:
            dataset = registry.get("datasets", ds.name)(ds.params)
            try:
                memo[memo_key] = dataset.fingerprint(source, data) if source in dataset.splits else ""
            except (BenchError, OSError):
                memo[memo_key] = ""
        return memo[memo_key]

    return fingerprint


def _pretrain_jobs(spec: BenchmarkSpec, registry: Registry, source: str, i: int,
                   pre: PretrainSpec, fingerprint: Fingerprint) -> list[PretrainJob]:
    """The pretraining jobs of method ``i`` at one point of the axes: a job per seed (with its sweep cells)."""
    m = spec.methods[i]
    method = _resolve(registry, "methods", ComponentRef(name=m.name, params=m.params), source, f"methods[{i}]")
    jobs: list[PretrainJob] = []
    dataset = _dataset(registry, pre.dataset, source, "pretrain.dataset")
    data = fingerprint(dataset, "train")
    backbone = _resolve(registry, "backbones", pre.backbone, source, "pretrain.backbone")
    views = {v: _resolve(registry, "augmentations", pre.augmentations.get(v, ComponentRef(name=v)), source,
                         f"pretrain.augmentations.{v}") for v in getattr(method.params, "views", ())}
    method_cls = registry.get("methods", m.name)
    trains = method_cls.trains
    cells: list[dict[str, float]] = ([dict(zip(pre.sweep, values)) for values in itertools.product(*pre.sweep.values())]
                                     if trains and pre.sweep else [])

    def make_job(seed: int, spec_: PretrainSpec, cell: dict[str, float], kind: JobKind) -> PretrainJob:
        budget = spec_.model_dump(mode="json", include={"epochs", "batch_size", "optimizer", "schedule"})
        budget["views"] = {v: r.payload() for v, r in views.items()}
        payload = {"kind": "pretrain", "method": method.payload(), "dataset": dataset.payload(),
                   "backbone": backbone.payload(), "budget": budget if trains else {}, "seed": seed,
                   "harness": harness_version()}  # an untrained method's budget changes nothing
        inputs = method_cls.fingerprint(method.params)
        key = content_key(payload | ({"inputs": inputs} if inputs else {}) | ({"data": data} if data else {}))
        return PretrainJob(key, method, m.label or m.name, seed, dataset, backbone, views, spec_, kind=kind,
                           hparams=tuple(cell.items()), data=data)

    for seed in spec.seeds:
        if not cells:
            run = make_job(seed, pre, {}, "run")
            jobs.append(run)
            if trains and pre.epochs > 0:
                jobs += [replace(run, key=content_key({"kind": "snapshot", "of": run.key, "step": step}),
                                 kind="snapshot", snapshot_of=run, snapshot_step=step)
                         for step in sorted(set(pre.snapshot_steps))]
            continue
        candidates = tuple(make_job(seed, pre.model_copy(update={"optimizer": pre.optimizer.model_copy(update=c)}), c,
                                    "cell") for c in cells)
        key = content_key({"kind": "select", "candidates": [c.key for c in candidates], "select": pre.select,
                           "val_fraction": spec.val_fraction})
        jobs.append(PretrainJob(key, method, m.label or m.name, seed, dataset, backbone, views, pre, kind="select",
                                candidates=candidates, data=data))
    return jobs


def make_plan(spec: BenchmarkSpec, registry: Registry, source: str = "benchmark",
              data: DataContext | None = None) -> Plan:
    """Every (method, seed) pretraining job and every (encoder, evaluation, dataset) job.

    Args:
        spec: the benchmark.
        registry: the components.
        source: the benchmark file's name, for error messages.
        data: where the jobs will load their data from; when given, every key covers the fingerprint
            of the data its job reads (see the module docstring), else no data fingerprint is used.
    """
    fingerprint = data_fingerprints(registry, data)
    pretrain_jobs: list[PretrainJob] = []
    eval_jobs: list[EvalJob] = []
    for i in range(len(spec.methods)):
        for pre in axis_points(method_pretrain(spec, i, source)):
            known = {j.key for j in pretrain_jobs}  # axes an untrained method ignores collapse into one job
            pretrain_jobs += [j for j in _pretrain_jobs(spec, registry, source, i, pre, fingerprint)
                              if j.key not in known]
    for j, ev in enumerate(spec.evaluations):
        evaluator = _resolve(registry, "evaluators", ComponentRef(name=ev.name, params=ev.params), source,
                             f"evaluations[{j}]")
        cls = registry.get("evaluators", ev.name)
        grid = {k: tuple(v) for k, v in cls.search_space.items()} | {k: tuple(v) for k, v in ev.sweep.items()}
        metric = ev.metric or cls.selection_metric
        for k, ref in enumerate(eval_datasets(spec, ev)):
            target = _dataset(registry, ref, source, f"evaluations[{j}].datasets[{k}]")
            target_data = (fingerprint(target, "train"), fingerprint(target, "test"))
            for job in pretrain_jobs:
                payload = {"kind": "eval", "benchmark": spec.name, "pretrain": job.key, "label": job.label,
                           "evaluator": evaluator.payload(), "dataset": target.payload(), "grid": grid,
                           "metric": metric, "val_fraction": spec.val_fraction, "harness": harness_version()}
                key = content_key(payload | ({"data": list(target_data)} if any(target_data) else {}))
                eval_jobs.append(EvalJob(key, spec.name, job, evaluator, target, grid, metric, spec.val_fraction,
                                         target_data))
    return Plan(pretrain_jobs, eval_jobs)
