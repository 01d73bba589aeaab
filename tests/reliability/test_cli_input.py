"""No traceback for any input (issue 20): every bad input exits 2 with one line naming what is wrong.

A failed job exits 1 with one line; a full disk stops the run with one line; a closed stdout ends quietly;
a genuine bug keeps its traceback, but in a log file the one line names. Most cases call
``ssl_bench.harness.cli.main`` in this process (an uncaught exception fails the test just as a traceback
would); the ones that need a real process (a pipe, torchrun) run ``bench``.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch

from ssl_bench.harness import cli
from ssl_bench.harness.pipeline.specs import read_toml
from tests.conftest import ROOT, TINY, bench_cmd

pytestmark = pytest.mark.slow

SMALL = TINY.split("[[methods]]")[0] + '[[methods]]\nname = "random_init"\n\n[[evaluations]]\nname = "knn"\n'
"""TINY with one method and one evaluation: the cheapest run that writes a checkpoint and a result."""

MISSING_SPLIT = ('\n[[evaluations]]\nname = "knn"\n'
                 'datasets = [{ name = "shapes", params = { n_train = 128, n_test = 64 }, train_split = "nope" }]\n')
"""An evaluation that fails (its dataset has no split 'nope') while the other jobs succeed. (Missing data does
not do: the preflight refuses the run before any job.)"""


def bench(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bench_cmd(*args), capture_output=True, text=True, env=env, timeout=timeout)


def the_line(stderr: str) -> str:
    """The one line of stderr, asserting there is exactly one and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``bench --no-plugins ARGV`` in this process; returns the exit code and stderr."""
    try:
        code = cli.main(["--no-plugins", *argv])
    except SystemExit as exc:  # argparse's own exit
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded datasets cached inside tmp_path for the in-process runs."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- 1. validate checks every profile --------------------------------------------------------------------------

@pytest.mark.parametrize(("profile", "expected"), [
    ('methods = [{ name = "simclrr" }]', "bench.toml: profiles.long: methods[0].name: Unknown method 'simclrr'"),
    ('pretrain = { epochs = "twelve" }', "bench.toml: profiles.long: pretrain.epochs: Input should be a valid integer"),
    ('pretrain = { dataset = { params = { n_train = "many" } } }',
     "bench.toml: profiles.long: pretrain.dataset.params.n_train: Input should be a valid integer"),
])
def test_validate_checks_every_profile_and_names_it(write_toml, cli_env, profile, expected):
    path = write_toml(TINY + f"\n[profiles.long]\n{profile}\n")
    proc = bench("validate", str(path), env=cli_env)
    assert proc.returncode == 2
    assert expected in the_line(proc.stderr)


def test_run_under_a_bad_profile_names_the_profile(write_toml, capsys):
    path = write_toml(TINY + '\n[profiles.long]\nmethods = [{ name = "simclrr" }]\n')
    code, err = run_main(capsys, "run", str(path), "--profile", "long", "--dry-run")
    assert code == 2 and "bench.toml: profiles.long: methods[0].name: Unknown method 'simclrr'" in the_line(err)


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.toml")), ids=lambda p: p.name)
def test_every_benchmark_file_and_each_of_its_profiles_validates(path, capsys):
    assert cli.main(["--no-plugins", "validate", str(path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{path}: ok (")
    profiles = read_toml(path).get("profiles", {})
    assert [line.split(": ")[1] for line in printed[1:]] == [f"profiles.{name}" for name in profiles]
    assert all(": ok (" in line for line in printed)


# --- 2. unreadable benchmark files -------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "expected"), [
    (b'name = "x"\n\xff\xfe\x00\x01 binary', "bench.toml: line 2: not UTF-8 text (byte 0xff)"),
    ('name = "caf\u00e9"\n'.encode("latin-1"), "bench.toml: line 1: not UTF-8 text (byte 0xe9)"),
])
def test_a_file_that_is_not_utf8_is_one_line(tmp_path, cli_env, content, expected):
    path = tmp_path / "bench.toml"
    path.write_bytes(content)
    proc = bench("validate", str(path), env=cli_env)
    assert proc.returncode == 2 and expected in the_line(proc.stderr)


def test_validate_a_folder_or_a_missing_file_is_one_line(tmp_path, capsys):
    code, err = run_main(capsys, "validate", str(tmp_path))
    assert code == 2 and f"{tmp_path}: is a folder, not a benchmark file" in the_line(err)
    code, err = run_main(capsys, "validate", str(tmp_path / "nope.toml"))
    assert code == 2 and "nope.toml: benchmark file not found" in the_line(err)


# --- 3. devices and process counts -------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["tpu", "meta", "mps", "cuda:x"])
def test_a_device_outside_the_list_is_refused_up_front(write_toml, tmp_path, capsys, cache, device):
    code, err = run_main(capsys, "run", str(write_toml(SMALL)), "--device", device, "--out", str(tmp_path / "o"),
                         "--no-progress")
    assert code == 2
    assert f"--device {device}: " in the_line(err) and "auto, cpu, cuda" in err
    assert not (tmp_path / "o" / "artifacts").exists()  # refused before any job


def test_more_processes_than_cpu_cores_is_refused(write_toml, tmp_path, cli_env):
    n = (os.cpu_count() or 1) + 1
    # pretraining on a dataset that is not there: were the processes started, they would fail at once
    path = write_toml(SMALL.replace('name = "shapes", params = { n_train = 128, n_test = 64 }', 'name = "cifar10"'))
    assert "cifar10" in path.read_text()
    proc = bench("run", str(path), "--device", "cpu", "--nproc", str(n), "--out", str(tmp_path / "o"),
                 "--data-root", str(tmp_path / "empty"), env=cli_env, timeout=180)
    assert proc.returncode == 2
    assert f"--nproc {n}: more processes than CPU cores on this machine ({n - 1})" in the_line(proc.stderr)


# --- 4. the output folder, and a failure handler that cannot write its log -----------------------------------------

def test_out_at_a_regular_file_is_refused_before_any_job(write_toml, tmp_path, capsys, cache):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    code, err = run_main(capsys, "run", str(write_toml(SMALL)), "--out", str(target), "--device", "cpu",
                         "--no-progress")
    assert code == 2 and f"--out {target}: is a file, not a folder" in the_line(err)


def test_out_under_proc_is_refused_before_any_job(write_toml, capsys, cache):
    code, err = run_main(capsys, "run", str(write_toml(SMALL)), "--out", "/proc/ssl-bench-out", "--device", "cpu",
                         "--no-progress")
    assert code == 2 and "--out /proc/ssl-bench-out: cannot write there" in the_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_out_in_a_read_only_folder_is_refused_before_any_job(write_toml, tmp_path, capsys, cache):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = run_main(capsys, "run", str(write_toml(SMALL)), "--out", str(locked / "o"), "--device", "cpu",
                             "--no-progress")
    finally:
        locked.chmod(0o755)
    assert code == 2 and f"--out {locked / 'o'}: cannot write there (Permission denied)" in the_line(err)


def test_an_unwritable_out_folder_is_refused_before_any_job(write_toml, tmp_path, capsys, cache, monkeypatch):
    """What a read-only folder looks like to the check (as root, chmod does not make one)."""
    def denied(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "mkstemp", denied)
    out = tmp_path / "o"
    code, err = run_main(capsys, "run", str(write_toml(SMALL)), "--out", str(out), "--device", "cpu",
                         "--no-progress")
    assert code == 2 and f"--out {out}: cannot write there (Permission denied)" in the_line(err)
    assert not (out / "artifacts").exists()


def test_a_failed_job_whose_log_cannot_be_written_is_still_reported_and_the_others_run(
        write_toml, tmp_path, capsys, cache, monkeypatch):
    from ssl_bench.harness.pipeline import runner

    real = runner.atomic_write_text

    def no_logs(path: Path, text: str) -> None:
        if path.suffix == ".log":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real(path, text)

    monkeypatch.setattr(runner, "atomic_write_text", no_logs)
    out = tmp_path / "o"
    code, err = run_main(capsys, "run", str(write_toml(SMALL + MISSING_SPLIT)), "--out", str(out),
                         "--device", "cpu", "--no-progress")
    assert code == 1 and "Traceback" not in err
    failed = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "'nope'" in failed[0] and "its log could not be written" in failed[0]
    assert len(list((out / "results").glob("*.parquet"))) == 1  # the knn on shapes still ran and was recorded


# --- 5. leaderboard and worker paths -----------------------------------------------------------------------------

def test_leaderboard_on_a_missing_folder_exits_2(tmp_path, capsys):
    code, err = run_main(capsys, "leaderboard", str(tmp_path / "nope"))
    assert code == 2 and f"{tmp_path / 'nope'}: no such results folder or file" in the_line(err)


def test_leaderboard_output_at_a_folder_exits_2(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    code, err = run_main(capsys, "leaderboard", str(tmp_path / "results"), "-o", str(tmp_path))
    assert code == 2 and f"--output {tmp_path}: is a folder" in the_line(err)


def test_worker_storage_at_a_folder_exits_2(write_toml, tmp_path, capsys, cache):
    code, err = run_main(capsys, "worker", str(write_toml(SMALL)), "--storage", str(tmp_path), "--out",
                         str(tmp_path / "o"), "--device", "cpu", "--no-progress")
    assert code == 2 and f"--storage {tmp_path}: is a folder" in the_line(err)


def test_worker_storage_at_a_garbage_journal_exits_2(write_toml, tmp_path, capsys, cache):
    journal = tmp_path / "garbage.journal"
    journal.write_bytes(b"\xff\x00 not a journal {\n")
    code, err = run_main(capsys, "worker", str(write_toml(SMALL)), "--storage", str(journal), "--out",
                         str(tmp_path / "o"), "--device", "cpu", "--no-progress")
    assert code == 2 and f"--storage {journal}: not an Optuna journal file" in the_line(err)


# --- 6. a full disk ----------------------------------------------------------------------------------------------

def test_disk_full_saving_a_tensor_stops_the_run_with_one_line(write_toml, tmp_path, capsys, cache, monkeypatch):
    def full(obj: object, f: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as a file object's write raises it: no name

    monkeypatch.setattr(torch, "save", full)
    code, err = run_main(capsys, "run", str(write_toml(SMALL)), "--out", str(tmp_path / "o"), "--device", "cpu",
                         "--no-progress")
    assert code in (1, 2) and "Traceback" not in err
    lines = [line for line in err.splitlines() if "no space left on device" in line.lower()]
    assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1]
    assert lines[0].startswith(f"bench: error: no space left on device writing {tmp_path}")
    assert ".tmp" not in lines[0]  # the file it stood for, not an atomic write's temporary name


def test_disk_full_writing_results_names_the_results_file(write_toml, tmp_path, capsys, cache, monkeypatch):
    import pyarrow.parquet as pq

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # no file name: the job's output is named

    monkeypatch.setattr(pq, "write_table", full)
    out = tmp_path / "o"
    code, err = run_main(capsys, "run", str(write_toml(SMALL)), "--out", str(out), "--device", "cpu",
                         "--no-progress")
    assert code in (1, 2) and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"bench: error: no space left on device writing {out / 'results'}")
    assert last.endswith(".parquet") and sum("no space left" in line for line in err.splitlines()) == 1


# --- 7. stdout closed early --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["list", "plugins"])
def test_a_closed_stdout_ends_quietly(cli_env, command):
    proc = subprocess.Popen(bench_cmd(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader went away before the first line (bench list | head -0)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert err == ""


# --- 8. whatever else --------------------------------------------------------------------------------------------

def test_an_argparse_error_is_one_line(write_toml, capsys):
    code, err = run_main(capsys, "run", str(write_toml(SMALL)), "--nproc", "x")
    assert code == 2 and "bench run: error: argument --nproc: invalid int value: 'x'" in the_line(err)


def test_a_heartbeat_that_is_not_a_number_exits_2(write_toml, tmp_path, capsys, cache):
    code, err = run_main(capsys, "worker", str(write_toml(SMALL)), "--heartbeat", "nan", "--out",
                         str(tmp_path / "o"), "--device", "cpu", "--no-progress")
    assert code == 2 and "--heartbeat nan" in the_line(err)


def test_an_internal_error_is_one_line_pointing_to_its_traceback(write_toml, capsys, monkeypatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "make_plan", broken)
    code, err = run_main(capsys, "validate", str(write_toml(SMALL)))
    line = the_line(err)
    assert code == 1 and line.startswith("bench: internal error: ZeroDivisionError: a bug (traceback in ")
    log = Path(line.split("traceback in ", 1)[1].split(";", 1)[0])
    try:
        assert "Traceback" in log.read_text() and "ZeroDivisionError: a bug" in log.read_text()
    finally:
        log.unlink()
