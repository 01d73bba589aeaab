"""``mypy --strict`` over ssl_bench.harness (the configuration is pyproject's [tool.mypy]).

mypy names a module by its folder, and the folder harness/ installs as ssl_bench.harness (a
package-dir mapping that an editable install resolves with an import hook mypy cannot see), so the
check runs over a tree of links that spells the installed names.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_mypy_strict_passes_on_the_harness(tmp_path):
    pytest.importorskip("mypy")
    (tmp_path / "ssl_bench").mkdir()
    for folder in ("harness", "plugins"):
        (tmp_path / "ssl_bench" / folder).symlink_to(ROOT / folder, target_is_directory=True)
    env = dict(os.environ, MYPYPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "ssl_bench.harness"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout.replace(str(tmp_path / "ssl_bench"), "") + proc.stderr
