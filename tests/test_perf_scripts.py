"""The speed scripts run and print their tables (what they measure is never asserted: a test is not a timer)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_methods_perf_script_prints_a_row_per_method_with_flops(cli_env):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "perf" / "methods.py"), "--methods",
                           "simclr,rotnet", "--steps", "1", "--batch-size", "16", "--threads", "1"],
                          capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    table = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()
             if line.startswith("| ")]
    header, body = table[0], table[1:]
    rows = {cells[0]: dict(zip(header, cells)) for cells in body}
    assert set(rows) == {"simclr", "rotnet"}
    for row in rows.values():
        assert float(row["images/s"]) > 0 and float(row["GFLOP/img"]) > 0
        assert row["precision"] in ("fp32", "bf16")
    # RotNet's step runs the backbone on four rotations of one view, SimCLR's on two views: twice the work
    assert float(rows["rotnet"]["GFLOP/img"]) == pytest.approx(2 * float(rows["simclr"]["GFLOP/img"]), rel=0.05)


def test_simclr_throughput_script_prints_both_paths_and_the_ratio(cli_env):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "perf" / "simclr_throughput.py"), "--backbone",
                           "convnet_small", "--steps", "2", "--warmup", "1", "--batch-size", "16"],
                          capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "harness step (" in out and "PIL DataLoader, num_workers=2" in out
    ratio = next(line for line in out.splitlines() if "harness / best PIL" in line)
    assert float(ratio.rsplit(":", 1)[1].strip().rstrip("x")) > 0
