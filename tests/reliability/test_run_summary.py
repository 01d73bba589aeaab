"""The run's last line counts every evaluation once: done, cached, failed, or skipped because its encoder failed."""

from __future__ import annotations

import pytest

from ssl_bench.harness.components import DataContext
from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline import runner
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.runner import Run, execute, summary
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.pipeline.train import resolve_device
from ssl_bench.harness.plugins import collect, make_plugin_manager
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # whole (tiny) runs


def make_run(tmp_path, registry) -> Run:
    path = tmp_path / "t.toml"
    path.write_text(TINY)  # simclr and random_init, each evaluated by knn and linear: 4 evaluations
    spec = load_benchmark(path, registry=registry)
    return Run(spec, make_plan(spec, registry), registry, make_plugin_manager(load_entrypoints=False),
               tmp_path / "out", resolve_device("cpu"), DataContext(root=tmp_path, cache_dir=tmp_path / "cache"),
               progress=False)


def test_a_failed_pretraining_skips_its_evaluations_and_the_numbers_add_up(tmp_path, monkeypatch, one_thread):
    registry = collect(make_plugin_manager(load_entrypoints=False))
    real = runner.ensure_pretrained

    def simclr_fails(run, job):
        if job.method.name == "simclr":
            raise BenchError("simclr: planted failure")
        return real(run, job)

    monkeypatch.setattr(runner, "ensure_pretrained", simclr_fails)
    run = make_run(tmp_path, registry)
    assert execute(run) == 1  # one failed job: the pretraining
    assert dict(run.tally) == {"done": 2, "skipped": 2}
    line = summary(run, 1.0)
    assert "4 evaluations: 2 done, 0 cached, 0 failed, 2 skipped because their pretraining failed (1 job)" in line

    monkeypatch.setattr(runner, "ensure_pretrained", real)
    again = make_run(tmp_path, registry)
    assert execute(again) == 0 and dict(again.tally) == {"cached": 2, "done": 2}
    third = make_run(tmp_path, registry)
    execute(third)
    assert summary(third, 1.0) == "tiny: nothing to do (4 evaluations cached)"
