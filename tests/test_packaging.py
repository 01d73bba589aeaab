"""The installed package: one namespace of ours in site-packages, usable from any working folder.

The editable install the tests run under hides what a user's ``pip install`` gets, so these tests build
the wheel and install it (not editable) into a fresh virtual environment.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    (path,) = out.glob("ssl_bench-*.whl")
    return path


def test_wheel_installs_only_our_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"ssl_bench"}
    assert "ssl_bench/harness/__init__.py" in names and "ssl_bench/plugins/methods/simclr.py" in names
    assert "ssl_bench/harness/py.typed" in names
    # every source file of the two folders is in the wheel (a new subpackage missing from pyproject fails here)
    for folder in ("harness", "plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            assert f"ssl_bench/{path.relative_to(ROOT).as_posix()}" in names, path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed. Its dependencies (torch, ...) come from this environment's
    site-packages through a path file, which adds the folder without running the editable install's hook."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "host_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return env_dir


def user_project(tmp_path: Path) -> Path:
    """A research folder with packages of its own called plugins/ and harness/ (as common in research code)."""
    project = tmp_path / "my_project"
    for name in ("plugins", "harness"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text("raise ImportError('the user\\'s own package was imported')\n")
    (project / "tiny.toml").write_text(TINY.replace('[[evaluations]]\nname = "linear"\nsweep = { lr = [0.1, 0.01], '
                                                    'weight_decay = [0.0] }\n', ""))
    return project


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["BENCH_CACHE_DIR"] = str(tmp_path / "cache")
    return env


def test_installed_wheel_runs_nproc_2_from_a_folder_with_its_own_plugins_and_harness(installed, tmp_path):
    project = user_project(tmp_path)
    env = clean_env(tmp_path)
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import ssl_bench.harness as h; print(h.__file__)"],
                           cwd=project, env=env, check=True, capture_output=True, text=True).stdout
    assert str(installed) in where  # the wheel's copy, not the repository's
    proc = subprocess.run([str(installed / "bin" / "bench"), "run", "tiny.toml", "--out", "runs", "--nproc", "2"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list((project / "runs" / "results").glob("*.parquet"))
    listed = subprocess.run([str(installed / "bin" / "python"), "-m", "ssl_bench.harness", "list", "methods"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and "simclr" in listed.stdout, listed.stderr


def test_pytest_in_an_unrelated_folder_does_not_import_torch(tmp_path):
    """The pytest11 plugin ssl-bench installs costs other projects nothing: torch is not imported."""
    (tmp_path / "test_other.py").write_text("def test_nothing_to_do_with_ssl_bench():\n    assert 1 + 1 == 2\n")
    code = ("import sys, pytest\n"
            "code = pytest.main(['-q', '-p', 'no:cacheprovider', 'test_other.py'])\n"
            "plugins = [p for p in sys.modules if p.startswith('ssl_bench')]\n"
            "print('TORCH', 'torch' in sys.modules, 'PLUGIN', 'ssl_bench.harness.pytest_plugin' in sys.modules)\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=clean_env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TORCH False PLUGIN True" in proc.stdout  # the plugin loaded, torch did not
