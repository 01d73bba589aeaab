"""The analysis scripts read a finished run folder and print their tables."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ssl_bench.harness.plugins import load_registry
from tests.conftest import ROOT, TINY, bench_cmd

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "benchmarks" / "analysis" / "stage_knn.py"


def table_rows(stdout: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in stdout.splitlines() if line.startswith("| ")]
    return rows[1:]  # without the header


def test_stage_knn_prints_every_stage_and_draws_random_init_as_the_harness(tmp_path, write_toml, cli_env):
    out = tmp_path / "out"
    subprocess.run(bench_cmd("run", str(write_toml(TINY)), "--out", str(out)), env=cli_env, check=True,
                   capture_output=True, timeout=600)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--random-init", "--threads", "1"],
                          capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {(r[0], r[2]): r[3:] for r in table_rows(proc.stdout)}
    assert set(rows) == {("simclr", "0"), ("random_init", "0"), ("Random init", "0"),
                         ("simclr", "mean of 1"), ("random_init", "mean of 1"), ("Random init", "mean of 1")}
    # convnet_small: its stages, then its own feature
    cls = load_registry()[1].get("backbones", "convnet_small")
    assert all(len(v) == len(cls(cls.Params()).stage_modules()) + 1 for v in rows.values())
    assert all(0.0 <= float(x) <= 100.0 for v in rows.values() for x in v)
    # the run's own random-init encoder is the backbone drawn after torch.manual_seed(seed), as the script draws it
    assert rows[("random_init", "0")] == rows[("Random init", "0")]


def test_stage_knn_on_a_folder_without_encoders_is_one_line_and_exit_2(tmp_path, cli_env):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                          env=cli_env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path}: no finished encoder" and not proc.stdout
