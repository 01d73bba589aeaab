"""Trackers end to end: a tiny ``bench run`` (stderr a pipe, as under Slurm or ``| tee``) and what it leaves:
metrics.jsonl and log.txt always, TensorBoard event files and a W&B offline run only when switched on, progress
lines with step and ETA on the non-terminal stderr."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ssl_bench.harness import RunFolder
from ssl_bench.plugins.trackers import jsonl, tensorboard, wandb
from tests.conftest import ROOT, bench_cmd

TRACKED = """
name = "trackers"
seeds = [0]

[pretrain]
dataset = { name = "shapes", params = { n_train = 32, n_test = 16, image_size = 16 } }
backbone = { name = "convnet_small" }
epochs = 2
batch_size = 8
optimizer = { lr = 0.01 }

[[methods]]
name = "vicreg"
params = { proj_hidden_dim = 16, proj_dim = 8 }

[[evaluations]]
name = "knn"
params = { k = 3 }
"""
STEPS = 8
"""2 epochs of 32 images in batches of 8."""


def bench_run(tmp: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``bench run`` of :data:`TRACKED` in ``tmp`` with stderr a pipe (not a terminal); returns it and its one
    pretraining job's artifact folder."""
    (tmp / "t.toml").write_text(TRACKED)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "WANDB_"))}
    full |= {"BENCH_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT) + os.pathsep + full.get("PYTHONPATH", ""),
             "BENCH_DISABLE_PLUGIN_AUTOLOAD": "1", "BENCH_LOG_EVERY": "3", "OMP_NUM_THREADS": "1"} | env
    proc = subprocess.run(bench_cmd("run", str(tmp / "t.toml"), "--out", str(tmp / "out"), "--device", "cpu",
                                    "--threads", "1"),
                          capture_output=True, text=True, env=full, cwd=tmp, timeout=600)  # stderr: a pipe
    assert proc.returncode == 0, proc.stderr
    (folder,) = RunFolder(tmp / "out").artifacts_dir.iterdir()
    return proc, folder


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A run with no tracker switched on and a progress line at every step."""
    # 0: a line after every step, so what the test sees does not depend on this machine's speed
    return bench_run(tmp_path_factory.mktemp("plain"), BENCH_PROGRESS_EVERY="0")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """A run with TensorBoard and W&B (offline, its folder in the test's) switched on."""
    tmp = tmp_path_factory.mktemp("tracked")
    proc, folder = bench_run(tmp, BENCH_TENSORBOARD="1", BENCH_WANDB="1", WANDB_MODE="offline",
                             WANDB_DIR=str(tmp / "wandb-dir"), WANDB_SILENT="true")
    return proc, folder, tmp / "wandb-dir"


def lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / RunFolder.METRICS).read_text().splitlines()]


@pytest.mark.slow
def test_metrics_jsonl_has_a_line_per_logged_step_with_the_terms(plain):
    _, folder = plain
    rows = lines(folder)
    assert [r["step"] for r in rows] == [3, 6, STEPS]  # BENCH_LOG_EVERY=3, and the last step
    for r in rows:
        assert set(r) == {"step", "epoch", "loss", "terms", "lr", "images_per_s", "time"}
        assert set(r["terms"]) == {"invariance", "variance", "covariance"}
        t = r["terms"]
        assert r["loss"] == pytest.approx(25 * t["invariance"] + 25 * t["variance"] + t["covariance"], rel=1e-5)
        assert r["epoch"] == pytest.approx(r["step"] / 4) and r["lr"] > 0 and r["images_per_s"] > 0
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    stats = json.loads((folder / RunFolder.STATS).read_text())
    assert rows[-1]["loss"] == pytest.approx(stats["final_loss"], rel=1e-6)


@pytest.mark.slow
def test_log_txt_has_the_jobs_lines_and_no_surprise_files_by_default(plain):
    proc, folder = plain
    text = (folder / RunFolder.TEXT_LOG).read_text()
    assert "INFO pretraining vicreg seed 0 (2 epochs of shapes on cpu)" in text
    assert f"INFO   vicreg s0: step {STEPS}/{STEPS}, epoch 2/2, loss " in text
    assert f"INFO pretrained vicreg seed 0: {STEPS} steps, loss " in text
    assert not (folder / RunFolder.TENSORBOARD).exists() and not (folder / "wandb").exists()
    assert not (folder.parents[1] / "wandb").exists() and not (folder.parents[2] / "wandb").exists()


@pytest.mark.slow
def test_a_non_terminal_run_prints_progress_lines_with_step_and_eta(plain):
    proc, _ = plain
    progress = [line for line in proc.stderr.splitlines() if line.startswith("  vicreg s0: step ")]
    assert [line.split("step ")[1].split(",")[0] for line in progress] == [f"{k}/{STEPS}" for k in range(1, 9)]
    assert all(" img/s, ETA " in line and ", loss " in line for line in progress)
    assert "[1/1] vicreg seed 0 | knn on shapes: top1 " in proc.stderr and " | elapsed " in proc.stderr
    assert "Warning" not in proc.stderr and "\r" not in proc.stderr  # no warnings, no bar


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_loss_curve(tracked):
    pytest.importorskip("tensorboard", reason="the TensorBoard tracker needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, folder, _ = tracked
    events = EventAccumulator(str(folder / RunFolder.TENSORBOARD))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "loss/invariance", "loss/variance", "loss/covariance", "lr", "images_per_s", "epoch"} <= tags
    rows = lines(folder)
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [r["step"] for r in rows]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert [e.value for e in events.Scalars("loss/variance")] == pytest.approx(
        [r["terms"]["variance"] for r in rows], rel=1e-6)


@pytest.mark.slow
def test_wandb_offline_keeps_one_run_on_disk(tracked):
    pytest.importorskip("wandb", reason="the W&B tracker needs the wandb package")
    proc, _, wandb_dir = tracked
    (run,) = (wandb_dir / "wandb").glob("offline-run-*")
    (records,) = run.glob("run-*.wandb")
    data = records.read_bytes()
    assert b"vicreg seed 0" in data  # the run's name
    assert b"loss/invariance" in data and b"images_per_s" in data  # the logged metrics
    assert "Traceback" not in proc.stderr


def test_switches_are_off_by_default(monkeypatch):
    monkeypatch.delenv("BENCH_TENSORBOARD", raising=False)
    monkeypatch.delenv("BENCH_WANDB", raising=False)
    assert not tensorboard.enabled() and not wandb.enabled()
    monkeypatch.setenv("BENCH_TENSORBOARD", "0")
    monkeypatch.setenv("BENCH_WANDB", "1")
    assert not tensorboard.enabled() and wandb.enabled()


def test_jsonl_record_writes_null_for_a_value_that_is_not_finite():
    line = jsonl.record(4, {"loss": float("nan"), "loss/a": 1.0, "lr": 0.1, "images_per_s": 5.0, "epoch": 1.0,
                            "grad_norm": 2.0}, now=7.0)
    assert line == {"step": 4, "epoch": 1.0, "loss": None, "terms": {"a": 1.0}, "lr": 0.1, "images_per_s": 5.0,
                    "time": 7.0, "grad_norm": 2.0}
    json.dumps(line, allow_nan=False)
