"""A plugin installed with pip into a fresh virtual environment is usable by name."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow
FIXTURE = ROOT / "tests" / "fixtures" / "bench-toy"


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory):
    """A new venv (seeing the installed ssl-bench and torch) with bench-toy pip-installed into it."""
    where = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(where)
    python = where / "bin" / "python"
    # See this interpreter's packages (torch, ssl-bench, pip, setuptools) even when it is itself a venv.
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(inner, "outer-environment.pth").write_text("\n".join(sorted(outer)) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    str(FIXTURE)], check=True, capture_output=True, text=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BENCH_DISABLE_PLUGIN_AUTOLOAD")}
    env["BENCH_CACHE_DIR"] = str(where / "cache")
    env["PYTHONPATH"] = str(ROOT)
    return python, env


def test_installed_plugin_is_listed(toy_env, tmp_path):
    python, env = toy_env
    out = subprocess.run([str(python), "-m", "ssl_bench.harness", "list", "methods"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, check=True).stdout
    assert "toy_siamese" in out and "[bench-toy 0.3.0]" in out
    off = subprocess.run([str(python), "-m", "ssl_bench.harness", "--no-plugins", "list", "methods"],
                         capture_output=True,
                         text=True, env=env, cwd=tmp_path, check=True).stdout
    assert "toy_siamese" not in off
    assert "toy_siamese" not in subprocess.run([sys.executable, "-m", "ssl_bench.harness", "list", "methods"],
                                               capture_output=True, text=True, env=env, check=True).stdout


def test_installed_plugin_runs_in_a_benchmark(toy_env, tmp_path):
    python, env = toy_env
    text = TINY.replace('name = "simclr"\nparams = { temperature = 0.5 }', 'name = "toy_siamese"\nlabel = "Toy"')
    path = tmp_path / "toy.toml"
    path.write_text(text)
    proc = subprocess.run([str(python), "-m", "ssl_bench.harness", "run", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [r for f in (tmp_path / "out" / "results").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    toy = [r for r in rows if r["method"] == "toy_siamese"]
    assert toy and all('"method:toy_siamese": "0.3.0"' in r["plugin_versions"] for r in toy)
    assert "Toy" in proc.stdout
