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

The code is part of the key as well: every key covers the fingerprint of the source its job runs
(:mod:`~ssl_bench.harness.pipeline.code_fingerprint`: its components' modules and the harness modules
it computes with), so editing a method's loss redoes that method's pretraining and, since an evaluation's
key covers its pretraining's, their evaluations, and nothing else. Each job keeps what its key hashes
(``key_payload`` in :meth:`PretrainJob.record` and :meth:`EvalJob.record`), so a dry run can say which
part changed (:mod:`~ssl_bench.harness.record.staleness`).

A method that reads labels (:attr:`~ssl_bench.harness.components.Method.uses_labels`, the supervised
baseline) never trains on the validation rows that choose hyper-parameters (:class:`Holdout`).

An evaluation whose evaluator scores an online probe (``Evaluator.online_probe``: ``online_linear``) has every
pretraining that takes optimizer steps train one (:attr:`PretrainJob.online_probe`, in its key only then, so a
plan without one keeps every key); an untrained encoder gets no such evaluation, and its dry-run line says so.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ssl_bench.harness.components import DataContext
from ssl_bench.harness.errors import BenchError, SpecError
from ssl_bench.harness.pipeline.code_fingerprint import (
    EVAL_MODULES,
    PRETRAIN_MODULES,
    UNTRAINED_MODULES,
    CodeParts,
    job_parts,
)
from ssl_bench.harness.pipeline.online_probe import OnlineProbeSpec
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

ONLINE_PROBE_MODULE = "ssl_bench.harness.pipeline.online_probe"
"""The online probe's code: in the code fingerprint of a pretraining that trains one (and of no other)."""


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


def same_source(a: ResolvedDataset, b: ResolvedDataset) -> bool:
    """Whether ``a`` and ``b`` read the same training split (same dataset, params, version and
    ``train_split``), whatever subset (``train_size``) each takes of it."""
    return (a.name, a.params, a.version, a.train_split) == (b.name, b.params, b.version, b.train_split)


@dataclass(frozen=True)
class Holdout:
    """The validation rows a method that reads labels must not train on.

    Validation rows are carved from a training split by ``stratified_split(labels, val_fraction, seed)``
    (an evaluation's sweep, :func:`~ssl_bench.harness.pipeline.sweep.sweep_and_test`, and a pretraining
    sweep's choice of its winner) with the pretraining job's seed, the seed its evaluations carve with too.
    ``splits`` are the datasets whose training split is carved so: the pretraining dataset as each
    evaluation that sweeps on it takes it (its own ``train_size``, possibly another subset than the
    pretraining's), and, for a pretraining sweep's cells, the pretraining split itself. The job trains on
    the pretraining split less every row (by position in the full split) that any of them validates on.
    The benchmark has one ``val_fraction`` for every evaluation; were there several, the rule would hold
    the union of their carve-outs out all the same.
    """

    val_fraction: float
    splits: tuple[ResolvedDataset, ...]

    def payload(self) -> dict[str, Any]:
        return {"val_fraction": self.val_fraction, "train_sizes": [s.train_size for s in self.splits]}


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
    holdout: Holdout | None = None
    """Validation rows this job must not train on (a method that reads labels); None: it trains on every row."""
    code: CodeParts = field(default_factory=dict, compare=False)
    """Fingerprint of the code the job runs (file label -> digest; see ``code_fingerprint``), in the key."""
    keyed: dict[str, Any] = field(default_factory=dict, compare=False)
    """What the key hashes, spelled out (a sweep's: its cells'; a snapshot's: its run's), so a changed key
    can be explained."""
    online_probe: OnlineProbeSpec | None = None
    """The online linear probe its pretraining trains beside the method (the plan has an online evaluation
    and the method trains); in the key only when set, so plans without one keep their keys."""
    notes: tuple[str, ...] = field(default=(), compare=False)
    """What the dry run says about it beyond its line (an online evaluation it gets none of)."""

    def record(self) -> dict[str, Any]:
        """The fully resolved spec of this job as JSON-ready data (its ``job.json``): key, kind, the
        method, backbone, dataset and view pipelines with every param resolved, the budget, seed, sweep
        cell, snapshot step, data fingerprint, code fingerprint, held-out validation rows and what the
        key hashes (``key_payload``)."""
        budget = self.pretrain.model_dump(mode="json", exclude={"dataset", "backbone", "augmentations", "axes"})
        return {"key": self.key, "kind": self.kind, "label": self.label, "seed": self.seed,
                "method": self.method.payload(), "backbone": self.backbone.payload(),
                "dataset": self.dataset.payload(), "views": {v: r.payload() for v, r in self.views.items()},
                "budget": budget, "hparams": dict(self.hparams), "data": self.data,
                "candidates": [c.key for c in self.candidates],
                "snapshot_of": self.snapshot_of.key if self.snapshot_of is not None else None,
                "snapshot_step": self.snapshot_step, "harness": harness_version(), "code": dict(self.code),
                "holdout": self.holdout.payload() if self.holdout is not None else None,
                "key_payload": self.keyed} | (
                    {"online_probe": self.online_probe.payload()} if self.online_probe is not None else {})

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
        probe = (f" online_probe(lr={self.online_probe.lr}, {self.online_probe.schedule})"
                 if self.online_probe is not None else "")
        notes = "".join(f" ({note})" for note in self.notes)
        return (f"pretrain {self.key}  {self.label} seed={self.seed} on {self.dataset.display} "
                f"backbone={self.backbone.name} epochs={self.pretrain.epochs} batch={self.pretrain.batch_size}{cell}"
                f"{probe}{notes}")

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
    code: CodeParts = field(default_factory=dict, compare=False)
    """Fingerprint of the evaluation's code (evaluator, target dataset, harness), in the key."""
    keyed: dict[str, Any] = field(default_factory=dict, compare=False)
    """What the key hashes, spelled out (its pretraining by key)."""

    def record(self) -> dict[str, Any]:
        """The evaluation's resolved spec as JSON-ready data: key, benchmark, its pretraining's key, label
        and seed, the evaluator and target dataset with every param resolved, the grid, selection metric,
        validation fraction, data and code fingerprints, and what the key hashes (``key_payload``)."""
        return {"key": self.key, "benchmark": self.benchmark, "pretrain": self.pretrain.key,
                "label": self.pretrain.label, "seed": self.pretrain.seed, "evaluator": self.evaluator.payload(),
                "dataset": self.dataset.payload(), "grid": {k: list(v) for k, v in self.grid.items()},
                "metric": self.metric, "val_fraction": self.val_fraction, "data": list(self.data),
                "code": dict(self.code), "key_payload": self.keyed}

    def describe(self, title: str | None = None) -> str:
        """One line of ``bench run --dry-run``; ``title`` names the evaluator (default: its name), see
        :func:`evaluator_titles`."""
        grid = " x ".join(f"{k}{list(v)}" for k, v in self.grid.items()) or "no sweep"
        return (f"eval     {self.key}  {self.pretrain.label} seed={self.pretrain.seed} {title or self.evaluator.name} "
                f"on {self.dataset.display} ({grid}) <- {self.pretrain.key}")


def evaluator_titles(jobs: Sequence[EvalJob]) -> dict[str, str]:
    """Evaluation key -> its evaluator as a job line names it: the name, followed by the params in which it differs
    from the other jobs of ``jobs`` with that evaluator on that dataset (the 1% and 10% fine-tunes of a plan:
    ``finetune(label_fraction=0.01)`` and ``finetune(label_fraction=0.1)``); the name alone where none differ."""
    groups: dict[tuple[str, str], list[tuple[str, dict[str, str]]]] = {}
    for job in jobs:
        params = {k: json.dumps(v, sort_keys=True) for k, v in job.evaluator.params.model_dump(mode="json").items()}
        groups.setdefault((job.evaluator.name, job.dataset.display), []).append((job.key, params))
    titles: dict[str, str] = {}
    for (name, _), members in groups.items():
        names = sorted({k for _, params in members for k in params})
        differ = [k for k in names if len({params.get(k) for _, params in members}) > 1]
        for key, params in members:
            shown = ", ".join(f"{k}={params.get(k, 'null')}" for k in differ)
            titles[key] = f"{name}({shown})" if shown else name
    return titles


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


def _require_labels(registry: Registry, ds: ResolvedDataset, source: str, loc: str, why: str) -> None:
    """A SpecError at ``loc`` when ``ds`` has no labels (its ``labelled`` is False: pretraining data only)."""
    if not getattr(registry.get("datasets", ds.name)(ds.params), "labelled", True):
        raise SpecError(source, loc, f"dataset '{ds.name}' has no labels (pretraining data only); {why}")


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


@dataclass(frozen=True)
class _Evaluation:
    """One ``[[evaluations]]`` entry resolved: its evaluator, grid, metric, targets and each target's code."""

    evaluator: Resolved
    grid: dict[str, tuple[float, ...]]
    metric: str
    targets: tuple[ResolvedDataset, ...]
    code: tuple[CodeParts, ...]
    """The code fingerprint of an evaluation of each target (evaluator, dataset, :data:`EVAL_MODULES`)."""
    online: bool = False
    """Its evaluator scores the online probe (``Evaluator.online_probe``): only encoders that trained one."""

    @property
    def sweeps(self) -> bool:
        """Whether it carves validation rows from its targets' training splits (a grid of two cells or more)."""
        return math.prod(len(v) for v in self.grid.values()) > 1


def _evaluation(spec: BenchmarkSpec, registry: Registry, source: str, j: int) -> _Evaluation:
    ev = spec.evaluations[j]
    evaluator = _resolve(registry, "evaluators", ComponentRef(name=ev.name, params=ev.params), source,
                         f"evaluations[{j}]")
    cls = registry.get("evaluators", ev.name)
    grid = {k: tuple(v) for k, v in cls.search_space.items()} | {k: tuple(v) for k, v in ev.sweep.items()}
    targets = []
    for k, ref in enumerate(eval_datasets(spec, ev)):
        target = _dataset(registry, ref, source, f"evaluations[{j}].datasets[{k}]")
        _require_labels(registry, target, source, f"evaluations[{j}].datasets" + (f"[{k}]" if ev.datasets else ""),
                        f"'{ev.name}' scores class labels: name a labelled dataset in evaluations[{j}].datasets")
        targets.append(target)
    code = tuple(job_parts([cls, registry.get("datasets", t.name)], EVAL_MODULES) for t in targets)
    return _Evaluation(evaluator, grid, ev.metric or cls.selection_metric, tuple(targets), code, cls.online_probe)


def online_probe_of(spec: BenchmarkSpec, registry: Registry, source: str) -> tuple[OnlineProbeSpec | None, list[str]]:
    """The online probe the plan's pretrainings train (None: no evaluation is online) and the online evaluations.

    Raises:
        SpecError: two online evaluations ask for different probes (a pretraining trains one).
    """
    probe: OnlineProbeSpec | None = None
    names: list[str] = []
    for j, ev in enumerate(spec.evaluations):
        if not registry.get("evaluators", ev.name).online_probe:
            continue
        params = resolve(registry, "evaluators", ComponentRef(name=ev.name, params=ev.params), source,
                         f"evaluations[{j}]")
        mine = OnlineProbeSpec.of(params)
        if probe is not None and mine != probe:
            raise SpecError(source, f"evaluations[{j}].params", f"'{ev.name}' asks for another online probe than "
                            f"an earlier online evaluation ({probe.payload()}); a pretraining trains one")
        probe = mine
        names.append(ev.name)
    return probe, list(dict.fromkeys(names))


def _pretrain_jobs(spec: BenchmarkSpec, registry: Registry, source: str, i: int, pre: PretrainSpec,
                   fingerprint: Fingerprint, swept: Callable[[], list[ResolvedDataset]],
                   online: tuple[OnlineProbeSpec | None, list[str]] = (None, [])) -> list[PretrainJob]:
    """The pretraining jobs of method ``i`` at one point of the axes: a job per seed (with its sweep cells).

    ``swept()`` lists the target datasets evaluations carve validation rows from (see :class:`Holdout`);
    it is asked only for a method that reads labels. ``online``: the plan's online probe and its evaluations
    (:func:`online_probe_of`); a job that takes optimizer steps trains the probe, another gets a note instead.
    """
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
    if cells:
        _require_labels(registry, dataset, source, f"methods[{i}].pretrain.sweep" if m.pretrain else "pretrain.sweep",
                        f"a pretraining sweep picks its winner by {pre.select} on labelled validation data")
    classes: list[type] = [method_cls, registry.get("backbones", backbone.name)]
    if trains:  # an untrained method reads no views and learns nothing from the data
        classes += [registry.get("augmentations", r.name) for r in views.values()]
        classes.append(registry.get("datasets", dataset.name))
    probe = online[0] if trains and pre.epochs > 0 else None
    probe_code = (ONLINE_PROBE_MODULE,) if probe is not None else ()  # only then: other keys stay as they were
    code = job_parts(classes, PRETRAIN_MODULES + probe_code if trains else UNTRAINED_MODULES)
    notes = (f"no {', '.join(online[1])}: {'an untrained encoder' if not trains else 'no pretraining steps'}, "
             "no online head",) if online[0] is not None and probe is None else ()

    def holdout(cell: bool) -> Holdout | None:
        if not (trains and method_cls.uses_labels):
            return None
        splits = [t for t in swept() if same_source(t, dataset)] + ([dataset] if cell else [])
        unique = tuple({t.train_size: t for t in splits}.values())
        return Holdout(spec.val_fraction, unique) if unique else None

    def make_job(seed: int, spec_: PretrainSpec, cell: dict[str, float], kind: JobKind) -> PretrainJob:
        budget = spec_.model_dump(mode="json", include={"epochs", "batch_size", "optimizer", "schedule", "precision"})
        budget["views"] = {v: r.payload() for v, r in views.items()}
        payload = {"kind": "pretrain", "method": method.payload(), "dataset": dataset.payload(),
                   "backbone": backbone.payload(), "budget": budget if trains else {}, "seed": seed,
                   "harness": harness_version(), "code": code}  # an untrained method's budget changes nothing
        inputs = method_cls.fingerprint(method.params)
        held = holdout(kind == "cell")
        keyed = (payload | ({"inputs": inputs} if inputs else {}) | ({"data": data} if data else {})
                 | ({"holdout": held.payload()} if held is not None else {})
                 | ({"online_probe": probe.payload()} if probe is not None else {}))
        return PretrainJob(content_key(keyed), method, m.label or m.name, seed, dataset, backbone, views, spec_,
                           kind=kind, hparams=tuple(cell.items()), data=data, holdout=held, code=code, keyed=keyed,
                           online_probe=probe, notes=notes)

    for seed in spec.seeds:
        if not cells:
            run = make_job(seed, pre, {}, "run")
            jobs.append(run)
            if trains and pre.epochs > 0:
                jobs += [replace(run, key=content_key({"kind": "snapshot", "of": run.key, "step": step}),
                                 kind="snapshot", snapshot_of=run, snapshot_step=step,
                                 keyed={"kind": "snapshot", "of": run.keyed, "step": step})
                         for step in sorted(set(pre.snapshot_steps))]
            continue
        candidates = tuple(make_job(seed, pre.model_copy(update={"optimizer": pre.optimizer.model_copy(update=c)}), c,
                                    "cell") for c in cells)
        key = content_key({"kind": "select", "candidates": [c.key for c in candidates], "select": pre.select,
                           "val_fraction": spec.val_fraction})
        keyed = {"kind": "select", "candidates": [c.keyed for c in candidates], "select": pre.select,
                 "val_fraction": spec.val_fraction}
        jobs.append(PretrainJob(key, method, m.label or m.name, seed, dataset, backbone, views, pre, kind="select",
                                candidates=candidates, data=data, code=code, keyed=keyed, online_probe=probe,
                                notes=notes))
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
    resolved: list[_Evaluation] = []

    def evaluations() -> list[_Evaluation]:  # resolved once, first asked for by a method that reads labels
        if not resolved:
            resolved.extend(_evaluation(spec, registry, source, j) for j in range(len(spec.evaluations)))
        return resolved

    def swept() -> list[ResolvedDataset]:
        return [t for e in evaluations() if e.sweeps for t in e.targets]

    online = online_probe_of(spec, registry, source)
    for i in range(len(spec.methods)):
        for pre in axis_points(method_pretrain(spec, i, source)):
            known = {j.key for j in pretrain_jobs}  # axes an untrained method ignores collapse into one job
            pretrain_jobs += [j for j in _pretrain_jobs(spec, registry, source, i, pre, fingerprint, swept, online)
                              if j.key not in known]
    for e in evaluations():
        for target, code in zip(e.targets, e.code):
            target_data = (fingerprint(target, "train"), fingerprint(target, "test"))
            for job in pretrain_jobs:
                if e.online and job.online_probe is None:
                    continue  # no online head to score (random init): the job's dry-run line says so
                payload = {"kind": "eval", "benchmark": spec.name, "pretrain": job.key, "label": job.label,
                           "evaluator": e.evaluator.payload(), "dataset": target.payload(), "grid": e.grid,
                           "metric": e.metric, "val_fraction": spec.val_fraction, "harness": harness_version(),
                           "code": code}
                keyed = payload | ({"data": list(target_data)} if any(target_data) else {})
                eval_jobs.append(EvalJob(content_key(keyed), spec.name, job, e.evaluator, target, e.grid, e.metric,
                                         spec.val_fraction, target_data, code=code, keyed=keyed))
    return Plan(pretrain_jobs, eval_jobs)
