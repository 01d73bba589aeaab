"""End-to-end runs of the ``bench`` command line, as a user types it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import CIFAR10, QUICKSTART, ROOT, TINY, bench_cmd

pytestmark = pytest.mark.slow


def bench(*args, env, cwd=None, check=True):
    proc = subprocess.run(bench_cmd(*args), capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"bench {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def result_files(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.parquet")}


def test_run_rerun_and_change_one_parameter(tmp_path, write_toml, cli_env):
    path, out = write_toml(TINY), tmp_path / "out"
    first = bench("run", str(path), "--out", str(out), env=cli_env)
    files = result_files(out)
    assert len(files) == 4  # 2 methods x 2 evaluators
    board = (out / "leaderboard.md").read_text()
    assert "### knn on shapes" in board and "### linear on shapes" in board and board in first.stdout
    rows = [r for f in (out / "results").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert {r["metric"] for r in rows} >= {"top1", "top5"}
    linear = [r for r in rows if r["evaluator"] == "linear"]
    assert all(r["trials"] == 2 and set(json.loads(r["hparams"])) == {"lr", "weight_decay"} for r in linear)
    simclr = [r for r in rows if r["method"] == "simclr"]
    assert all(r["pretrain_steps"] == 4 and r["pretrain_images_per_s"] > 0 for r in simclr)

    again = bench("run", str(path), "--out", str(out), env=cli_env)
    assert result_files(out) == files  # nothing recomputed
    assert "pretraining" not in again.stderr
    assert (out / "leaderboard.md").read_text() == board

    path.write_text(TINY.replace("k = 5", "k = 3"))
    bench("run", str(path), "--out", str(out), env=cli_env)
    changed = result_files(out)
    assert len(changed) == 6 and all(changed[name] == mtime for name, mtime in files.items())


def test_dry_run_validate_list_plugins_schema(tmp_path, write_toml, cli_env):
    path = write_toml(TINY)
    dry = bench("run", str(path), "--out", str(tmp_path / "o"), "--dry-run", env=cli_env).stdout
    assert dry.count("[todo] pretrain") == 2 and dry.count("[todo] eval") == 4
    assert not (tmp_path / "o").exists()
    assert "ok (2 pretraining jobs, 4 evaluation jobs)" in bench("validate", str(path), env=cli_env).stdout
    methods = bench("list", "methods", env=cli_env).stdout
    assert "simclr" in methods and "random_init" in methods and "supervised" in methods
    report = json.loads(bench("plugins", env=cli_env).stdout)
    simclr = next(p for p in report if p["name"] == "ssl_bench.plugins.methods.simclr")
    assert simclr["provides"] == {"methods": ["simclr"]} and simclr["distribution"] == "ssl-bench"
    schema = json.loads(bench("schema", env=cli_env).stdout)
    assert "temperature" in schema["x-components"]["methods"]["simclr"]["properties"]
    assert "pretrain" in schema["properties"]


def test_bad_file_exits_2_with_one_clear_line(write_toml, cli_env):
    path = write_toml(TINY.replace("temperature = 0.5", "temperature = 0"), "wrong.toml")
    proc = bench("run", str(path), env=cli_env, check=False)
    assert proc.returncode == 2
    assert "wrong.toml: methods[0].params.temperature: Input should be greater than 0" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(write_toml, cli_env):
    proc = bench("run", str(write_toml(TINY)), "--device", "cuda", env=cli_env, check=False)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_dataset_is_refused_before_any_job(tmp_path, write_toml, cli_env):
    text = TINY + '\n[[evaluations]]\nname = "knn"\ndatasets = ["cifar10"]\n'
    out = tmp_path / "out"
    proc = bench("run", str(write_toml(text)), "--out", str(out), "--data-root", str(tmp_path / "empty"),
                 env=cli_env, check=False)
    assert proc.returncode == 2  # the preflight: found missing before the first job, not once per job
    assert "cifar10" in proc.stderr and "BENCH_DATA_ROOT" in proc.stderr and "Traceback" not in proc.stderr
    assert not result_files(out)  # nothing ran


def test_leaderboard_regenerates_from_parquet_alone(tmp_path, write_toml, cli_env):
    out = tmp_path / "out"
    bench("run", str(write_toml(TINY)), "--out", str(out), env=cli_env)
    target = tmp_path / "board.md"
    proc = bench("leaderboard", str(out / "results"), "--output", str(target), "--title", "Leaderboard: tiny",
                 env=cli_env)
    assert target.read_text() == (out / "leaderboard.md").read_text()
    assert proc.stdout.strip() == target.read_text().strip()


def test_sigkill_during_pretraining_resumes_without_losing_or_duplicating(tmp_path, write_toml, cli_env):
    text = TINY.replace("epochs = 1", "epochs = 40").replace("n_train = 128", "n_train = 256")
    path, out = write_toml(text), tmp_path / "out"
    proc = subprocess.Popen(bench_cmd("run", str(path), "--out", str(out)), env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    checkpoints = []
    while time.time() < deadline and not checkpoints:
        checkpoints = list((out / "artifacts").glob("*/last.pt")) if (out / "artifacts").exists() else []
        time.sleep(0.05)
    assert checkpoints, "no checkpoint appeared"
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results").exists() or not result_files(out)  # killed before any evaluation
    second = bench("run", str(path), "--out", str(out), env=cli_env)
    assert "resuming" in second.stderr
    rows = [r for f in (out / "results").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    keys = [(r["job_key"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) and len(result_files(out)) == 4
    simclr = [r for r in rows if r["method"] == "simclr"]
    assert all(r["pretrain_steps"] == 40 * 8 for r in simclr)
    assert not list((out / "artifacts").glob("*/last.pt"))


def test_quickstart_smoke_profile(tmp_path, cli_env):
    out = tmp_path / "q"
    proc = bench("run", str(QUICKSTART), "--profile", "smoke", "--out", str(out), env=cli_env)
    for label in ("SimCLR", "Supervised", "Random init"):
        assert label in proc.stdout


@pytest.mark.skipif(not CIFAR10.exists(), reason=f"needs CIFAR-10 at {CIFAR10} ($BENCH_DATA_ROOT or ../shared/data)")
def test_methods_benchmark_tiny_profile_on_real_cifar10(tmp_path, cli_env):
    out = tmp_path / "m"
    proc = bench("run", str(ROOT / "benchmarks" / "methods_cifar10_cpu.toml"), "--profile", "tiny", "--out", str(out),
                 "--data-root", str(CIFAR10.parent), env=cli_env)
    assert "### knn on cifar10[256]" in proc.stdout and "### linear on cifar10[256]" in proc.stdout


def test_speedrun_tiny_profile_on_shapes(tmp_path, cli_env):
    """The CPU speedrun file end to end (its tiny profile, on the embedded shapes instead of CIFAR-10): SimCLR and
    the random-init floor both get a kNN row and the summary puts the pretraining time beside the accuracy."""
    out = tmp_path / "s"
    proc = bench("run", str(ROOT / "benchmarks" / "speedrun_cpu.toml"), "--profile", "tiny", "--out", str(out),
                 "--set", "pretrain.dataset.name=shapes", env=cli_env)
    summary = proc.stdout.split("### Summary", 1)[1].split("###", 1)[0]
    assert "Pretrain time" in summary and "kNN top-1" in summary
    assert "| SimCLR" in summary and "| Random init" in summary


@pytest.mark.skipif(not CIFAR10.exists(), reason=f"needs CIFAR-10 at {CIFAR10} ($BENCH_DATA_ROOT or ../shared/data)")
def test_speedrun_tiny_profile_on_real_cifar10(tmp_path, cli_env):
    out = tmp_path / "s"
    proc = bench("run", str(ROOT / "benchmarks" / "speedrun_cpu.toml"), "--profile", "tiny", "--out", str(out),
                 "--data-root", str(CIFAR10.parent), env=cli_env)
    assert "### knn on cifar10[64]" in proc.stdout
