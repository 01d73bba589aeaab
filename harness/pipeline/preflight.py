"""Preflight: what ``bench run`` checks before its first job (issue 16).

Two things a long run should not find out hours in:

1. **Data.** Every dataset split the unfinished jobs will read is looked up once, before anything is
   computed, and all that cannot be loaded are reported in one error (:class:`MissingDataError`, exit
   code 2), not one failed job per evaluation. Looking up is cheap by the dataset contract
   (:meth:`~ssl_bench.harness.components.Dataset.fingerprint`): a split whose fingerprint the plan
   recorded was found by a listing of its files; a split with an empty fingerprint is either embedded
   (generated, or shipped inside a package: cheap to load) or not found, and only loading tells. Such a
   split is loaded through :meth:`Run.load_split`, whose memo its jobs then reuse, and a missing one
   raises its dataset's own "expected here" :class:`~ssl_bench.harness.errors.DataError` before
   anything is decoded. The training split of each encoder still to train is loaded the same way (its
   job loads it first thing anyway): its size gives the number of steps. Finished jobs are not looked at.
2. **Cost.** An encoder still to train costs ``steps x batch`` images, ``steps = epochs x (N // batch)``
   less the steps its checkpoint holds, each image seen once per view of its method. The seconds per
   step come from this device: each distinct configuration of the plan takes a few real training steps
   on random images of its shape (:mod:`~ssl_bench.harness.pipeline.speed`, seconds in all);
   configurations beyond the probes' budget borrow a measured speed. Evaluations are not estimated.

Above ``--max-hours`` (default :data:`DEFAULT_MAX_HOURS`) the run asks y/N on a terminal and is refused
without one (exit 2), pointing at a cheaper profile of the file and at ``--yes``.

Nothing here changes a number a job produces: the loads and probes run inside ``torch.random.fork_rng``
(the global RNG is as it was), the probes build modules of their own, and nothing is written.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ssl_bench.harness.data import ImageSet
from ssl_bench.harness.errors import BenchError, DataError, UsageError
from ssl_bench.harness.pipeline.encoders import is_saved, log
from ssl_bench.harness.pipeline.logs import counted, duration
from ssl_bench.harness.pipeline.plan import PretrainJob, ResolvedDataset, content_key, make_plan
from ssl_bench.harness.pipeline.speed import StepTimer, fork_rng

if TYPE_CHECKING:
    from ssl_bench.harness.pipeline.runner import Run
    from ssl_bench.harness.pipeline.specs import BenchmarkSpec

DEFAULT_MAX_HOURS = 2.0
"""Estimated hours of pretraining above which ``bench run`` asks (terminal) or refuses (no terminal)."""


class MissingDataError(DataError):
    """Datasets the plan needs cannot be loaded; one line names each with where it was expected."""

    exit_code = 2


@dataclass(frozen=True)
class Training:
    """One encoder this run will train (or replay up to a snapshot), and its cost.

    Attributes:
        job: the run or sweep cell that trains.
        steps: optimizer steps still to take.
        batch: images per step (the budget's batch, at most the set's size).
        views: views per image (the method's augmentation pipelines).
        seconds: the estimated wall time; None when no speed could be measured.
        measured: whether ``seconds`` comes from a probe of its own configuration (else borrowed).
    """

    job: PretrainJob
    steps: int
    batch: int
    views: int
    seconds: float | None = None
    measured: bool = True

    @property
    def images(self) -> int:
        """Images to process: steps x batch."""
        return self.steps * self.batch


@dataclass
class Estimate:
    """What this run still has to do, from :func:`estimate`."""

    device: torch.device
    trainings: list[Training] = field(default_factory=list)
    evaluations: int = 0
    """Evaluations still to run."""
    encoders_done: int = 0
    """Encoders the unfinished evaluations need that are saved already."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Training-set sizes found, by dataset (name and params): what :func:`cheaper_profile` compares with."""

    @property
    def images(self) -> int:
        return sum(t.images for t in self.trainings)

    @property
    def seconds(self) -> float | None:
        """Estimated seconds of pretraining; None when a training could not be timed."""
        times = [t.seconds for t in self.trainings if t.steps]
        return None if any(s is None for s in times) else sum(s for s in times if s is not None)

    def line(self) -> str:
        """The one summary line ``bench run`` prints before its first job."""
        evals = f"{counted(self.evaluations, 'evaluation')} to run"
        done = f" ({self.encoders_done} saved)" if self.encoders_done else ""
        trainings = [t for t in self.trainings if t.steps]
        if not trainings:
            return f"preflight: no encoder to train{done}; {evals}"
        views = sum(t.images * t.views for t in trainings)
        seconds = self.seconds
        borrowed = sum(not t.measured for t in trainings)
        speed = ("time unknown (no speed measured)" if seconds is None else
                 f"about {duration(seconds)} of training on {self.device}"
                 + (f" ({borrowed} borrowing a measured speed)" if borrowed else ""))
        return (f"preflight: {counted(len(trainings), 'encoder')} to train{done}, {self.images:,} images "
                f"({views:,} views), {speed}; {evals} (not in the estimate)")


def dataset_id(ds: ResolvedDataset) -> str:
    """A dataset by name and params (not its subset or split): what one missing-data message stands for."""
    return content_key({"name": ds.name, "params": ds.params.model_dump(mode="json")})


def preflight(run: Run, *, max_hours: float | None = None, assume_yes: bool = False, processes: int = 1,
              dry_run: bool = False, profiles: Callable[[], Mapping[str | None, BenchmarkSpec]] | None = None,
              profile: str | None = None) -> Estimate:
    """Check the data of the unfinished jobs, estimate their cost, print the line, and ask or refuse.

    Args:
        run: the run about to be executed (its folder says what is done; its split memo keeps what is loaded).
        max_hours: estimated hours above which to ask (terminal) or refuse (no terminal); None:
            :data:`DEFAULT_MAX_HOURS`.
        assume_yes: ``--yes``: never ask, never refuse on cost.
        processes: processes that will pretrain together (``--nproc``); on CUDA each takes its share of a batch.
        dry_run: ``--dry-run``: missing data is a warning line, and the cost is only printed.
        profiles: the file's specs by profile, read only to point a refused run at a cheaper profile.
        profile: the profile this run is under (never suggested).

    Raises:
        MissingDataError: datasets cannot be loaded (every one named; not under ``dry_run``).
        UsageError: the estimate is over ``max_hours`` and there is no terminal, or the answer was no.
    """
    max_hours = DEFAULT_MAX_HOURS if max_hours is None else max_hours
    if math.isnan(max_hours) or max_hours <= 0:
        raise UsageError(f"--max-hours {max_hours}: give a number of hours above 0")
    found = estimate(run, processes=processes, dry_run=dry_run)
    if not found.evaluations:
        return found  # a cached rerun: the summary line says so
    log(found.line())
    seconds = found.seconds
    if dry_run or assume_yes or seconds is None or seconds <= max_hours * 3600:
        return found
    over = (f"estimated {duration(seconds)} of pretraining on {run.device} ({found.images:,} images), "
            f"over --max-hours {max_hours:g}")
    cheaper = _cheaper(profiles, run, found, profile)
    hint = f"--profile {cheaper} runs a smaller budget" if cheaper else "a smaller budget (pretrain.epochs) is cheaper"
    if sys.stdin is not None and sys.stdin.isatty():
        print(f"bench: {over}; {hint}. Run it? [y/N] ", end="", file=sys.stderr, flush=True)
        if sys.stdin.readline().strip().lower() in ("y", "yes"):
            return found
        raise UsageError(f"not started ({over}); {hint}, or pass --yes to run it anyway")
    raise UsageError(f"{over}; {hint}, or pass --yes to run it anyway (no terminal to ask)")


def _cheaper(profiles: Callable[[], Mapping[str | None, BenchmarkSpec]] | None, run: Run, found: Estimate,
             current: str | None) -> str | None:
    """:func:`cheaper_profile` of the file, or None where its profiles cannot be read."""
    try:
        return cheaper_profile(profiles(), run, found, current) if profiles is not None else None
    except BenchError:
        return None


def estimate(run: Run, *, processes: int = 1, dry_run: bool = False) -> Estimate:
    """The encoders the unfinished evaluations still need and their cost; every split they read looked up.

    The global RNG is left as it was (the loads and probes run under ``torch.random.fork_rng``).

    Raises:
        MissingDataError: the splits that cannot be loaded, all in one message (not under ``dry_run``,
            where it is logged as a warning and the estimate goes on without them).
    """
    with fork_rng(run.device):
        return _estimate(run, processes, dry_run)


def _estimate(run: Run, processes: int, dry_run: bool) -> Estimate:
    folder = run.folder
    todo = [e for e in run.plan.eval_jobs if not folder.has_result(e.key)]
    found = Estimate(run.device, evaluations=len(todo))
    pending = list({e.pretrain.key: e.pretrain for e in todo}.values())
    looked = _Lookup(run)
    work: list[tuple[PretrainJob, str, int | None]] = []  # (job that trains, its folder key, stop at step)
    training: set[str] = set()
    for job in pending:
        runs = _to_train(run, job, training)
        if runs is None:
            found.encoders_done += 1
            continue
        trains = run.registry.get("methods", job.method.name).trains and job.pretrain.epochs > 0
        looked.need(job.dataset, "train", job.data, load=trains)
        work += runs
    for e in todo:
        for split, fingerprint in zip(("train", "test"), e.data):
            looked.need(e.dataset, split, fingerprint, load=False)
    if looked.missing:
        error = MissingDataError(f"{counted(len(looked.missing), 'dataset')} the plan needs cannot be loaded, "
                                 f"nothing was run: " + " | ".join(looked.missing.values()))
        if not dry_run:
            raise error
        log(f"warning: {error}")
    costs = _Costs(run, processes)
    for job, key, stop_at in work:
        data = looked.loaded.get(_split_key(job.dataset, "train"))
        if data is None or not len(data):
            continue  # missing (a dry run) or not loadable for another reason: its job will say why
        data = _training_rows(run, job, data)
        found.sizes[dataset_id(job.dataset)] = len(data)
        found.trainings.append(costs.cost(job, data, _resumed_steps(folder.checkpoint(key)), stop_at))
    found.trainings = costs.borrow(found.trainings)
    return found


def _to_train(run: Run, job: PretrainJob, training: set[str]) -> list[tuple[PretrainJob, str, int | None]] | None:
    """What making the encoder of ``job`` trains: ``(job, folder key, stop_at)`` each; None when it is saved.

    Mirrors :func:`~ssl_bench.harness.pipeline.encoders.ensure_pretrained`: a sweep trains its unsaved
    cells (or only its recorded winner), a run trains with its snapshots on the way, and a snapshot whose
    run is neither saved with it nor trained in this run replays the run up to its last missing step.
    ``training`` collects the keys of the runs trained so far.
    """
    folder = run.folder
    if job.kind == "select":
        winner = _recorded_winner(run, job)
        if winner is not None:
            return None if is_saved(folder, winner.key) else [(winner, winner.key, None)]
        cells = [c for c in job.candidates if not is_saved(folder, c.key)]
        training.update(c.key for c in cells)
        return [(c, c.key, None) for c in cells]
    if is_saved(folder, job.key):
        return None
    if job.kind != "snapshot":
        training.add(job.key)
        return [(job, job.key, None)]
    assert job.snapshot_of is not None
    if job.snapshot_of.key in training:
        return []  # saved on the way by its run's training
    training.add(job.snapshot_of.key)
    last = max(s.snapshot_step for s in run.plan.snapshots_of(job.snapshot_of) if not is_saved(folder, s.key))
    return [(job.snapshot_of, job.key, last)]


def _recorded_winner(run: Run, job: PretrainJob) -> PretrainJob | None:
    """The cell a sweep's ``selection.json`` names, or None when there is no readable selection."""
    from ssl_bench.harness.pipeline.encoders import winner_of

    if not run.folder.selection(job.key).exists():
        return None
    try:
        return winner_of(run, job)
    except (OSError, ValueError, KeyError, StopIteration):
        return None


def _training_rows(run: Run, job: PretrainJob, train: ImageSet) -> ImageSet:
    """The rows ``job`` trains on: its split less the validation rows a method that reads labels leaves out."""
    try:
        from ssl_bench.harness.pipeline.encoders import without_validation_rows

        return without_validation_rows(run, job, train)
    except Exception:  # noqa: BLE001 - what the job itself would fail on; the whole split is close enough
        return train


def _resumed_steps(checkpoint: Path) -> int:
    """Steps a resumable checkpoint holds (0 without one); read memory-mapped, so weights are not loaded."""
    if not checkpoint.exists():
        return 0
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        return int(state["stats"]["steps"])
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is the job's to set aside; count it all
        return 0


def _split_key(ds: ResolvedDataset, split: str) -> str:
    return content_key({"dataset": ds.payload(), "split": split})


class _Lookup:
    """Looks each split up once; collects one message per dataset (name and params) that cannot be loaded."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.loaded: dict[str, ImageSet] = {}
        self.missing: dict[str, str] = {}
        self._seen: set[str] = set()

    def need(self, ds: ResolvedDataset, split: str, fingerprint: str, *, load: bool) -> None:
        """Look ``split`` of ``ds`` up: loaded when ``load`` or when the plan found no fingerprint for it."""
        key, dataset = _split_key(ds, split), dataset_id(ds)
        if key in self._seen or dataset in self.missing:
            return
        self._seen.add(key)
        if fingerprint and not load:
            return  # the plan listed its files
        try:
            self.loaded[key] = self.run.load_split(ds, split)
        except DataError as exc:
            self.missing[dataset] = " ".join(str(exc).split())
        except Exception:  # noqa: BLE001 - anything else (a split the dataset lacks, a bug) fails its jobs
            pass


class _Costs:
    """The cost of each training, its seconds per step from the device (:class:`StepTimer`)."""

    def __init__(self, run: Run, processes: int) -> None:
        self.run, self.processes = run, max(1, processes)
        self.timer = StepTimer(run)

    def cost(self, job: PretrainJob, data: ImageSet, resumed: int, stop_at: int | None) -> Training:
        """The cost of training ``job`` on ``data`` from step ``resumed`` to ``stop_at`` (None: the end)."""
        method_cls = self.run.registry.get("methods", job.method.name)
        views = len(getattr(job.method.params, "views", ())) or 1
        n = len(data)
        batch = min(job.pretrain.batch_size, n)
        total = job.pretrain.epochs * (n // batch) if method_cls.trains else 0
        steps = max(0, (total if stop_at is None else min(stop_at, total)) - resumed)
        if not steps:
            return Training(job, 0, batch, views, 0.0)
        # on CUDA each process steps through its share of the batch on its own GPU; on the CPU they share the cores
        local = batch // self.processes if self.run.device.type == "cuda" else batch
        per_step = self.timer.seconds_per_step(job, data, local)
        return Training(job, steps, batch, views, None if per_step is None else per_step * steps,
                        measured=per_step is not None)

    @staticmethod
    def borrow(trainings: Sequence[Training]) -> list[Training]:
        """Trainings left unmeasured (the probe budget ran out, or a probe failed) take the slowest speed per
        image measured on the same backbone, else the slowest measured at all."""
        measured = [t for t in trainings if t.seconds is not None and t.steps and t.measured]
        out: list[Training] = []
        for t in trainings:
            if t.seconds is not None or not measured:
                out.append(t)
                continue
            alike = [m for m in measured if m.job.backbone == t.job.backbone] or measured
            per_image = max(m.seconds / m.images for m in alike if m.seconds is not None)
            out.append(Training(t.job, t.steps, t.batch, t.views, per_image * t.images, measured=False))
        return out


def _embedded_size(run: Run, ds: ResolvedDataset) -> int | None:
    """The size of an embedded set's training split (its fingerprint is empty: made from its params), else None."""
    try:
        dataset = run.registry.get("datasets", ds.name)(ds.params)
        if ds.train_split not in dataset.splits or dataset.fingerprint(ds.train_split, run.data):
            return None
        with fork_rng(run.device):
            return len(dataset.load(ds.train_split, run.data))
    except Exception:  # noqa: BLE001 - not found, or anything else: no size
        return None


def cheaper_profile(profiles: Mapping[str | None, BenchmarkSpec], run: Run, found: Estimate,
                    current: str | None) -> str | None:
    """A profile of the file with less pretraining than this run: ``cpu`` where it has one, else the least.

    Less is compared on ``epochs x training images x views`` summed over the encoders a profile trains,
    from its plan: a set's size is its ``train_size``, else the size this preflight found, else (an
    embedded set, cheap to make: see the module docstring) its length, else the largest size found.
    """
    largest = max(found.sizes.values(), default=0)
    sizes = dict(found.sizes)

    def size(ds: ResolvedDataset) -> int:
        if ds.train_size:
            return ds.train_size
        if dataset_id(ds) not in sizes:
            sizes[dataset_id(ds)] = _embedded_size(run, ds) or largest
        return sizes[dataset_id(ds)]

    def images(spec: BenchmarkSpec) -> float:
        plan = make_plan(spec, run.registry, spec.name)
        total = 0.0
        for job in (j for p in plan.pretrain_jobs for j in p.all_jobs() if j.kind in ("run", "cell")):
            if run.registry.get("methods", job.method.name).trains:
                views = max(1, len(getattr(job.method.params, "views", ())))
                total += job.pretrain.epochs * size(job.dataset) * views
        return total

    mine = images(run.spec)
    costs: dict[str, float] = {}
    for name, spec in profiles.items():
        if name and name != current:
            try:
                costs[name] = images(spec)
            except BenchError:
                continue
    cheaper = {name: cost for name, cost in costs.items() if cost < mine}
    if "cpu" in cheaper:
        return "cpu"
    return min(cheaper, key=lambda name: cheaper[name]) if cheaper else None


__all__ = ["DEFAULT_MAX_HOURS", "Estimate", "MissingDataError", "Training", "cheaper_profile", "estimate",
           "preflight"]
