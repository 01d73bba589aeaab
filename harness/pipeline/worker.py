"""``bench worker``: take jobs from a queue in a shared Optuna storage until none are left.

The queue is an Optuna study named ``bench-jobs:<benchmark>:<hash of the plan's job keys>``. Its
trials are the jobs: one per pretraining job with all the evaluations of its encoder (as a shard
deals them, see :mod:`ssl_bench.harness.pipeline.shard`), each carrying the job's key in its user attributes. The
first worker to create the study enqueues every job (creating a study is atomic in every Optuna
storage); the others wait until it has. A worker claims a job by moving a waiting trial to running,
which the storage grants to exactly one worker (a row lock in a database, the order of the journal
on a file), so two workers never run the same job, and within it the same sweep cell, twice.

While it runs a job a worker writes a heartbeat (the ``heartbeat`` user attribute, in seconds since
the epoch) every ``heartbeat_s``. A running job whose heartbeat is older than ``stale_after_s``, or
whose worker process on this host is gone, is stale: the first worker to notice fails its trial
(again granted to one worker) and enqueues the job anew. Whoever takes it resumes from the dead
worker's checkpoint when the output folder is shared, and its evaluation sweeps keep the trials the
dead worker finished (their studies live in the same storage, see :mod:`ssl_bench.harness.pipeline.sweep`).

A worker stops when no job is waiting or running; it waits while others still run jobs, since
one of them may die and its job come back.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline.plan import Plan, content_key
from ssl_bench.harness.pipeline.runner import Run, execute, log, write_leaderboard

HOST = socket.gethostname()


@dataclass(frozen=True)
class Claim:
    """A job this worker holds: its trial in the queue study and its pretraining job key."""

    trial_id: int
    number: int
    key: str


def queue_name(benchmark: str, plan: Plan) -> str:
    """The queue study of a plan: same benchmark file and profile, same queue on every machine."""
    return f"bench-jobs:{benchmark}:{content_key({'jobs': sorted({j.key for j in plan.pretrain_jobs})})}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobQueue:
    """The jobs of one plan in a shared storage; every method is safe against concurrent workers."""

    def __init__(self, storage: optuna.storages.BaseStorage, name: str, keys: list[str], *,
                 stale_after_s: float, seed_wait_s: float = 120.0) -> None:
        self.storage, self.name, self.stale_after_s = storage, name, stale_after_s
        self.worker = f"{HOST}:{os.getpid()}"
        sampler = optuna.samplers.RandomSampler()  # never asked: every trial is enqueued
        try:
            self.study = optuna.create_study(storage=storage, study_name=name, sampler=sampler)
            for key in keys:
                self.study.enqueue_trial({}, user_attrs={"job": key})
            self.study.set_user_attr("jobs", len(keys))
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
            deadline = time.monotonic() + seed_wait_s
            while "jobs" not in self.study.user_attrs:
                if time.monotonic() > deadline:
                    raise BenchError(f"job queue {name} was created but never filled (its creator died?); "
                                     "delete the study (optuna delete-study) and start the workers again") from None
                time.sleep(0.5)
        self.study_id = storage.get_study_id_from_name(name)

    def _trials(self, *states: TrialState) -> list[optuna.trial.FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def claim(self) -> Claim | None:
        """Take a waiting job, or None when none is waiting."""
        for t in self._trials(TrialState.WAITING):
            try:
                if not self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    continue  # another worker took it first
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            for k, v in {"worker": self.worker, "host": HOST, "pid": os.getpid(), "heartbeat": time.time()}.items():
                self.storage.set_trial_user_attr(t._trial_id, k, v)
            return Claim(t._trial_id, t.number, t.user_attrs["job"])
        return None

    def running(self) -> int:
        return len(self._trials(TrialState.RUNNING))

    def is_stale(self, trial: optuna.trial.FrozenTrial, now: float) -> bool:
        attrs = trial.user_attrs
        if attrs.get("host") == HOST and isinstance(attrs.get("pid"), int) and not _alive(attrs["pid"]):
            return True
        beat = attrs.get("heartbeat")
        if beat is None:
            beat = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - float(beat) > self.stale_after_s

    def requeue_stale(self) -> list[str]:
        """Fail every stale running job and enqueue it again; returns the keys requeued by this worker."""
        now, requeued = time.time(), []
        for t in self._trials(TrialState.RUNNING):
            if "job" not in t.user_attrs or not self.is_stale(t, now):
                continue
            try:
                if not self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it (and requeued it) first
            self.study.enqueue_trial({}, user_attrs={"job": t.user_attrs["job"], "retry_of": t.number,
                                                     "requeued_by": self.worker})
            requeued.append(t.user_attrs["job"])
        return requeued

    def finish(self, claim: Claim, failed: int) -> bool:
        """Mark a job done (``failed`` of its evaluations failed); False if it was declared dead meanwhile."""
        try:
            self.storage.set_trial_user_attr(claim.trial_id, "failed", failed)
            self.storage.set_trial_state_values(claim.trial_id, TrialState.COMPLETE, values=[float(failed)])
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    @contextmanager
    def heartbeat(self, claim: Claim, interval_s: float) -> Iterator[None]:
        """Record a heartbeat on ``claim`` every ``interval_s`` seconds while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval_s):
                try:
                    self.storage.set_trial_user_attr(claim.trial_id, "heartbeat", time.time())
                except Exception as exc:  # a storage hiccup must not kill the job; the next beat retries
                    log(f"worker {self.worker}: heartbeat of job {claim.key} not recorded ({exc})")

        thread = threading.Thread(target=beat, name=f"heartbeat-{claim.key}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def serve(run: Run, storage: optuna.storages.BaseStorage, *, heartbeat_s: float = 30.0,
          stale_after_s: float = 300.0) -> int:
    """Take jobs of ``run.plan`` from the shared queue and run them until none are left.

    Returns the number of failed evaluations among the jobs this worker ran.
    """
    units = run.plan.units()  # a run and its snapshots are one job
    jobs = {key: unit.pretrain_jobs[0] for key, unit in units.items()}
    queue = JobQueue(storage, queue_name(run.spec.name, run.plan), sorted(jobs), stale_after_s=stale_after_s)
    failed, ran = 0, 0
    log(f"worker {queue.worker}: queue {queue.name} ({len(jobs)} jobs)")
    while True:
        for key in queue.requeue_stale():
            log(f"worker {queue.worker}: job {jobs[key].label} seed {jobs[key].seed} ({key}) lost its worker; requeued")
        claim = queue.claim()
        if claim is None:
            if not queue.running():
                break
            time.sleep(heartbeat_s)  # others are running jobs; one of them may come back
            continue
        job = jobs[claim.key]
        log(f"worker {queue.worker}: took {job.label} seed {job.seed} ({job.key})")
        one = dataclasses.replace(run, plan=units[claim.key], failed=[])
        with queue.heartbeat(claim, heartbeat_s):
            n = execute(one)
        if not queue.finish(claim, n):
            log(f"worker {queue.worker}: job {job.key} was declared dead while it ran (raise --stale-after)")
        failed, ran = failed + n, ran + 1
    write_leaderboard(run)
    log(f"worker {queue.worker}: no jobs left; ran {ran}, {failed} evaluations failed; "
        f"leaderboard in {run.folder.leaderboard}")
    return failed
