from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """Where the tests that need real datasets (CIFAR-10) find them: ``$BENCH_DATA_ROOT`` where it is set, as
    ``bench run`` reads it, else ``../shared/data`` beside the repository."""
    env = os.environ.get("BENCH_DATA_ROOT")
    return Path(env).expanduser() if env else ROOT.parent / "shared" / "data"


DATA_ROOT = data_root()
CIFAR10 = DATA_ROOT / "cifar10"
QUICKSTART = ROOT / "benchmarks" / "quickstart.toml"

os.environ.setdefault("BENCH_DISABLE_PLUGIN_AUTOLOAD", "0")


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny matmuls on a busy 2-core machine crawl with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def write_toml(tmp_path: Path):
    """Write a benchmark file into tmp_path and return its path."""

    def write(text: str, name: str = "bench.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a ``bench`` subprocess: decode cache inside tmp_path, no stray plugins."""
    env = dict(os.environ)
    env["BENCH_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssl_bench.harness", *args]


TINY = """
name = "tiny"
seeds = [0]
val_fraction = 0.25

[pretrain]
dataset = { name = "shapes", params = { n_train = 128, n_test = 64 } }
backbone = { name = "convnet_small" }
epochs = 1
batch_size = 32
checkpoint_every_steps = 1

[[methods]]
name = "simclr"
params = { temperature = 0.5 }

[[methods]]
name = "random_init"

[[evaluations]]
name = "knn"
params = { k = 5 }

[[evaluations]]
name = "linear"
sweep = { lr = [0.1, 0.01], weight_decay = [0.0] }
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that runs ``bench`` in a subprocess (it asks for ``cli_env``) is end to end: ``slow``."""
    for item in items:
        if "cli_env" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)
