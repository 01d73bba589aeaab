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
    rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in proc.stdout.splitlines()
            if line.startswith("| ") and "method" not in line}
    assert set(rows) == {"simclr", "rotnet"}
    for cells in rows.values():
        images_per_s, gflop_per_img = float(cells[0]), float(cells[1])
        assert images_per_s > 0 and gflop_per_img > 0
    # RotNet's step runs the backbone on four rotations of one view, SimCLR's on two views: twice the work
    assert float(rows["rotnet"][1]) == pytest.approx(2 * float(rows["simclr"][1]), rel=0.05)
