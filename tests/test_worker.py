"""``bench worker``: jobs and sweep trials shared through an Optuna storage (journal file, PostgreSQL)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from ssl_bench.harness.components import EvalTask
from ssl_bench.harness.pipeline.sweep import sweep_and_test
from ssl_bench.harness.pipeline.worker import JobQueue
from ssl_bench.harness.scale.storage import describe, open_storage, with_driver
from ssl_bench.harness.testing import tiny_images
from tests.conftest import TINY, bench_cmd

TWO_SEEDS = TINY.replace("seeds = [0]", "seeds = [0, 1]")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- the queue and the sweeps, in process -----------------------------------------------------------

def test_two_workers_never_claim_the_same_job_and_a_dead_workers_job_comes_back_once(tmp_path):
    storage = open_storage(str(tmp_path / "q.journal"))
    keys = [f"job{i}" for i in range(5)]
    a = JobQueue(storage, "bench-jobs:t:1", keys, stale_after_s=600)
    b = JobQueue(open_storage(str(tmp_path / "q.journal")), "bench-jobs:t:1", keys, stale_after_s=600)  # 2nd worker
    claims = [c for _ in range(4) for c in (a.claim(), b.claim())]
    taken = [c.key for c in claims if c is not None]
    assert sorted(taken) == keys and a.claim() is None and b.claim() is None  # every job once, no more
    assert a.requeue_stale() == [] and a.running() == 5  # all alive

    lost = next(c for c in claims if c is not None)
    storage.set_trial_user_attr(lost.trial_id, "pid", dead_pid())  # its worker process died
    assert b.requeue_stale() == [lost.key] and a.requeue_stale() == []  # requeued exactly once
    retry = a.claim()
    assert retry is not None and retry.key == lost.key and b.claim() is None
    assert a.finish(retry, 0)
    assert storage.get_trial(lost.trial_id).state == TrialState.FAIL
    assert storage.get_trial(retry.trial_id).user_attrs["retry_of"] == lost.number
    assert not b.finish(lost, 0)  # the dead worker's late report is refused

    silent = next(c for c in claims if c is not None and c.key != lost.key)
    storage.set_trial_user_attr(silent.trial_id, "heartbeat", time.time() - 700)  # no heartbeat for 700 s
    assert a.requeue_stale() == [silent.key]


class CountingEvaluator:
    """Scores the grid cell ``lr`` itself; counts the fits it is asked for."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []

    def evaluate(self, task: EvalTask, hparams: dict[str, float]) -> dict[str, float]:
        self.calls.append(dict(hparams))
        return {"top1": -abs(hparams["lr"] - 0.1)}


def test_a_resumed_sweep_keeps_finished_trials_and_reruns_the_dead_ones(tmp_path):
    data = tiny_images(16)

    def make_task(fit, target):
        return EvalTask(encoder=torch.nn.Identity(), fit=fit, target=target, num_classes=4, features=None,
                        device=torch.device("cpu"), seed=0)

    grid = {"lr": (1.0, 0.1, 0.01), "weight_decay": (0.0,)}
    storage = open_storage(str(tmp_path / "s.journal"))
    study = optuna.create_study(storage=storage, study_name="sweep:k", direction="maximize")
    study.enqueue_trial({"lr": 1.0, "weight_decay": 0.0})
    finished = study.ask()  # a dead worker finished this cell ...
    finished.suggest_categorical("lr", [1.0, 0.1, 0.01]), finished.suggest_categorical("weight_decay", [0.0])
    study.tell(finished, -0.9)
    study.enqueue_trial({"lr": 0.1, "weight_decay": 0.0})
    study.ask()  # ... and died in this one
    evaluator = CountingEvaluator()
    out = sweep_and_test(evaluator, make_task, data, data, grid, metric="top1", val_fraction=0.25, seed=0,
                         storage=storage, study_name="sweep:k")
    assert evaluator.calls[:-1] == [{"lr": 0.1, "weight_decay": 0.0}, {"lr": 0.01, "weight_decay": 0.0}]
    assert out.hparams == {"lr": 0.1, "weight_decay": 0.0} and out.trials == 3 and out.val_score == 0.0
    states = Counter(t.state for t in optuna.load_study(study_name="sweep:k", storage=storage).trials)
    assert states == {TrialState.COMPLETE: 3, TrialState.FAIL: 1}
    again = CountingEvaluator()  # a rerun of a finished sweep only scores the test split
    sweep_and_test(again, make_task, data, data, grid, metric="top1", val_fraction=0.25, seed=0,
                   storage=storage, study_name="sweep:k")
    assert again.calls == [{"lr": 0.1, "weight_decay": 0.0}]


def test_a_bare_postgresql_url_gets_an_installed_driver():
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db" and with_driver("/tmp/j.journal") == "/tmp/j.journal"
    url = with_driver("postgresql://u:secret@host:5432/db")
    assert url in ("postgresql+psycopg://u:secret@host:5432/db", "postgresql+psycopg2://u:secret@host:5432/db",
                   "postgresql://u:secret@host:5432/db")
    assert with_driver("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"  # an explicit driver is kept
    assert "secret" not in describe("postgresql://u:secret@host/db") and "host/db" in describe("postgresql://u:secret@host/db")


# --- worker processes --------------------------------------------------------------------------------

def start_worker(path: Path, out: Path, storage: str | None, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    args = ["worker", str(path), "--out", str(out), "--heartbeat", "0.5", "--stale-after", "30"]
    args += ["--storage", storage] if storage else []
    with open(log, "wb") as f:
        return subprocess.Popen(bench_cmd(*args), env=dict(env, OMP_NUM_THREADS="1"),  # 2 workers on a small machine
                                stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)


@pytest.fixture
def reap():
    """Kill the worker processes a test started if it fails before they end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs.append
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def queue_trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    s = open_storage(storage)
    (name,) = [n for n in optuna.get_all_study_names(s) if n.startswith("bench-jobs:")]
    return optuna.load_study(study_name=name, storage=s).trials


def two_workers_finish_every_job_once(tmp_path: Path, storage: str | None, env: dict[str, str], reap) -> None:
    path, out = tmp_path / "bench.toml", tmp_path / "out"
    path.write_text(TWO_SEEDS)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_worker(path, out, storage, env, log) for log in logs]
    for w in workers:
        reap(w)
    assert [w.wait(timeout=600) for w in workers] == [0, 0], "\n".join(log.read_text() for log in logs)
    text = "".join(log.read_text() for log in logs)
    took = Counter(line.split("(")[-1].rstrip(")") for line in text.splitlines() if " took " in line)
    assert len(took) == 4 and set(took.values()) == {1}, text  # 2 methods x 2 seeds, each taken once
    evaluated = [line for line in text.splitlines() if re.match(r"\[\d+/\d+\] ", line)]
    assert text.count("pretraining simclr seed") == 2 and len(evaluated) == 8, text  # 2 encoders, 8 evaluations once
    assert len(list((out / "results").glob("*.parquet"))) == 8
    trials = queue_trials(storage or str(out / "optuna.journal"))
    assert sorted(t.user_attrs["job"] for t in trials) == sorted(took)
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["failed"] == 0 for t in trials)
    dry = subprocess.run(bench_cmd("run", str(path), "--out", str(out), "--dry-run"), env=env, capture_output=True,
                         text=True, timeout=600).stdout
    assert "[todo]" not in dry and dry.count("[done] eval") == 8


@pytest.mark.slow
def test_two_workers_on_a_journal_file_finish_a_benchmark_with_every_job_done_once(tmp_path, cli_env, reap):
    two_workers_finish_every_job_once(tmp_path, None, cli_env, reap)


@pytest.mark.slow
def test_a_killed_workers_job_is_retried_and_resumes_from_its_checkpoint(tmp_path, cli_env, reap):
    path, out = tmp_path / "bench.toml", tmp_path / "out"
    path.write_text(TINY.replace("epochs = 1", "epochs = 10"))
    first = start_worker(path, out, None, cli_env, tmp_path / "a.log")
    reap(first)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("artifacts/*/last.pt")):
        assert first.poll() is None, (tmp_path / "a.log").read_text()
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second = start_worker(path, out, None, cli_env, tmp_path / "b.log")
    reap(second)
    assert second.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()
    text = (tmp_path / "b.log").read_text()
    assert "lost its worker; requeued" in text and "resuming simclr seed 0" in text
    assert len(list((out / "results").glob("*.parquet"))) == 4
    states = Counter((t.user_attrs["job"], t.state) for t in queue_trials(str(out / "optuna.journal")))
    simclr = next(k for k, s in states if s == TrialState.FAIL)
    assert states[(simclr, TrialState.FAIL)] == 1 and states[(simclr, TrialState.COMPLETE)] == 1


# --- the same against a PostgreSQL server on loopback ------------------------------------------------

def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(dirs[-1]).parent if dirs else None


def _install_postgresql() -> str:
    """Install Debian's postgresql package; returns why it could not, or ''."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "PostgreSQL is not installed and apt-get (as root) is not available to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            return f"installing postgresql failed: {' '.join(cmd)}: {proc.stderr.strip()[-300:]}"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (installed from Debian's package if missing)."""
    pytest.importorskip("psycopg", reason="psycopg is missing: pip install -e '.[test]' installs psycopg[binary]")
    if _pg_bin() is None:
        why = _install_postgresql()
        if why:
            pytest.skip(why)
    bindir = _pg_bin()
    assert bindir is not None
    datadir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(datadir, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(datadir / "server.log"), "-w",
                    "-o", f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_postgresql_finish_a_benchmark_with_every_job_done_once(tmp_path, cli_env, postgres_url, reap):
    two_workers_finish_every_job_once(tmp_path, postgres_url, cli_env, reap)
    sweeps = [n for n in optuna.get_all_study_names(open_storage(postgres_url)) if n.startswith("sweep:")]
    assert len(sweeps) == 4  # the linear sweeps of 4 encoders live in the server
