from __future__ import annotations

import json

import pytest

from ssl_bench.harness.components import DataContext
from ssl_bench.harness.errors import SpecError
from ssl_bench.harness.pipeline.encoders import winner_of
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.runner import Run, execute
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.pipeline.train import resolve_device
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.record.results import read_rows
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # end to end: the CLI, whole runs, several processes

SWEPT = TINY.replace("checkpoint_every_steps = 1",
                     'checkpoint_every_steps = 1\nsweep = { lr = [0.5, 0.05] }\nselect = "knn.top1"')


@pytest.fixture(scope="module")
def registry():
    return collect(make_plugin_manager(load_entrypoints=False))


def test_plan_expands_a_pretraining_grid(write_toml, registry):
    plan = make_plan(load_benchmark(write_toml(SWEPT), registry=registry), registry)
    simclr, random_init = plan.pretrain_jobs
    assert [dict(c.hparams) for c in simclr.candidates] == [{"lr": 0.5}, {"lr": 0.05}]
    assert [c.pretrain.optimizer.lr for c in simclr.candidates] == [0.5, 0.05]
    assert len({c.key for c in simclr.candidates} | {simclr.key}) == 3
    assert random_init.candidates == ()  # nothing to sweep when nothing is trained
    assert (simclr.kind, random_init.kind) == ("select", "run")
    assert {c.kind for c in simclr.candidates} == {"cell"}


def test_bad_select_is_a_spec_error(write_toml, registry):
    with pytest.raises(SpecError, match=r"pretrain.select: expected '<evaluator>.<metric>'"):
        load_benchmark(write_toml(SWEPT.replace('"knn.top1"', '"knm.top1"')), registry=registry)


def test_sweep_selects_on_validation_and_records_the_winner(tmp_path, write_toml, registry):
    pm = make_plugin_manager(load_entrypoints=False)
    spec = load_benchmark(write_toml(SWEPT), registry=registry)
    run = Run(spec, make_plan(spec, registry), registry, pm, tmp_path / "out", resolve_device("cpu"),
              DataContext(root=tmp_path, cache_dir=tmp_path / "cache"), progress=False)
    assert execute(run) == 0
    group = run.plan.pretrain_jobs[0]
    selection = json.loads(run.folder.selection(group.key).read_text())
    scores = {s["key"]: s["score"] for s in selection["scores"]}
    assert selection["winner"] == max(scores, key=scores.get)
    winner = winner_of(run, group)
    rows = [r for r in read_rows([run.folder.results_dir]) if r["method"] == "simclr"]
    assert rows and all(r["pretrain_key"] == winner.key for r in rows)
    assert all(json.loads(r["hparams"])["pretrain.lr"] == dict(winner.hparams)["lr"] for r in rows)
