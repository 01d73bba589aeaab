"""The ``online_linear`` evaluator: scoring the head trained beside pretraining, its plan, its checks, end to end."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.harness import cli
from ssl_bench.harness.errors import BenchError, SpecError
from ssl_bench.harness.pipeline.online_probe import HEAD_FILE, OnlineProbeSpec
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.record.results import read_rows
from ssl_bench.harness.testing import check_evaluator, colour_task
from ssl_bench.plugins.datasets.shapes import SHAPES
from ssl_bench.plugins.evaluators.online_linear import OnlineLinear

BENCH = """
name = "online"
seeds = [0]

[pretrain]
dataset = { name = "shapes", params = { n_train = 128, n_test = 64 } }
backbone = { name = "convnet_small", params = { width = 4 } }
epochs = 1
batch_size = 32
precision = "fp32"

[[methods]]
name = "simclr"

[[methods]]
name = "random_init"

[[evaluations]]
name = "knn"
params = { k = 5 }
"""
ONLINE = BENCH + """
[[evaluations]]
name = "online_linear"
params = { lr = 0.1 }
"""


@pytest.fixture(scope="module")
def registry():
    return collect(make_plugin_manager(load_entrypoints=False))


def plan_of(write_toml, registry, text):
    return make_plan(load_benchmark(write_toml(text), registry=registry), registry)


def by_method(plan):
    return {j.method.name: j for j in plan.pretrain_jobs}


def test_it_scores_the_given_head_on_the_target_features():
    task = colour_task()
    features = task.features(task.target)  # noisy one-hot colours (N, 4)
    task.online_head = {"weight": torch.eye(4, features.shape[1]), "bias": torch.zeros(4)}
    metrics = OnlineLinear(OnlineLinear.Params()).evaluate(task, {})
    expected = (features.argmax(1) == task.target.labels).double().mean().item() * 100
    assert metrics["top1"] == pytest.approx(expected) and {"top1", "top2", "auc"} <= set(metrics)
    task.online_head = {"weight": -torch.eye(4, features.shape[1]), "bias": torch.zeros(4)}  # an anti-classifier
    assert OnlineLinear(OnlineLinear.Params()).evaluate(task, {})["top1"] < metrics["top1"]


def test_it_passes_the_evaluator_conformance_checks(registry):
    check_evaluator(registry, "online_linear", device="cpu")


def test_no_head_a_foreign_head_or_a_sweep_is_a_clear_error():
    evaluator = OnlineLinear(OnlineLinear.Params())
    task = colour_task()
    with pytest.raises(BenchError, match="trained no online head"):
        evaluator.evaluate(task, {})
    task.online_head = {"weight": torch.zeros(10, 4), "bias": torch.zeros(10)}
    with pytest.raises(BenchError, match="10 classes"):
        evaluator.evaluate(task, {})
    with pytest.raises(ValueError, match="sweeps nothing"):
        evaluator.evaluate(task, {"lr": 0.1})


def test_the_plan_trains_a_probe_only_where_the_method_trains(write_toml, registry):
    plain, online = by_method(plan_of(write_toml, registry, BENCH)), plan_of(write_toml, registry, ONLINE)
    jobs = by_method(online)
    assert jobs["simclr"].online_probe == OnlineProbeSpec(lr=0.1, momentum=0.9, weight_decay=0.0)
    assert jobs["simclr"].keyed["online_probe"] == {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
                                                    "schedule": "constant"}
    assert jobs["simclr"].key != plain["simclr"].key and "online_probe" not in plain["simclr"].keyed
    assert jobs["random_init"].online_probe is None and jobs["random_init"].key == plain["random_init"].key
    assert "no online_linear: an untrained encoder" in jobs["random_init"].describe()
    assert "online_probe(lr=0.1, constant)" in jobs["simclr"].describe()
    evals = {(e.evaluator.name, e.pretrain.method.name) for e in online.eval_jobs}
    assert evals == {("knn", "simclr"), ("knn", "random_init"), ("online_linear", "simclr")}
    other = by_method(plan_of(write_toml, registry, ONLINE.replace("lr = 0.1", "lr = 0.05")))
    assert other["simclr"].key != jobs["simclr"].key  # the probe's lr is part of the key


def test_a_sweep_is_refused_naming_the_evaluation(write_toml, registry):
    with pytest.raises(SpecError, match=r"evaluations\[1\]\.sweep: 'online_linear' .* nothing to sweep") as err:
        load_benchmark(write_toml(ONLINE + "sweep = { lr = [0.1, 0.01] }\n"), registry=registry)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_another_dataset_than_the_pretraining_one_is_refused(write_toml, registry):
    with pytest.raises(SpecError, match=r"evaluations\[1\]\.datasets\[0\]: 'online_linear' .* got 'digits'"):
        load_benchmark(write_toml(ONLINE + 'datasets = ["digits"]\n'), registry=registry)
    other_params = ONLINE + 'datasets = [{ name = "shapes", params = { n_train = 128, n_test = 64, seed = 3 } }]\n'
    with pytest.raises(SpecError, match="same params"):
        load_benchmark(write_toml(other_params), registry=registry)
    load_benchmark(write_toml(ONLINE + 'datasets = ["shapes"]\n'), registry=registry)  # the pretraining one: fine


def test_it_cannot_pick_a_pretraining_sweeps_winner(write_toml, registry):
    text = ONLINE.replace('precision = "fp32"', 'precision = "fp32"\nsweep = { lr = [0.1, 0.05] }\n'
                          'select = "online_linear.top1"')
    with pytest.raises(SpecError, match=r"pretrain\.select: 'online_linear'"):
        load_benchmark(write_toml(text), registry=registry)


def test_end_to_end_rows_for_the_trained_encoder_none_for_random_init(tmp_path, write_toml, one_thread, capsys):
    out = tmp_path / "out"
    path = write_toml(ONLINE)
    assert cli.main(["--no-plugins", "run", str(path), "--out", str(out), "--device", "cpu", "--no-progress",
                     "--dry-run"]) == 0
    assert "no online_linear: an untrained encoder" in capsys.readouterr().out
    assert cli.main(["--no-plugins", "-q", "run", str(path), "--out", str(out), "--device", "cpu",
                     "--no-progress", "-y"]) == 0
    rows = read_rows([out / "results"])
    online = {(r["method"], r["metric"]): r["value"] for r in rows if r["evaluator"] == "online_linear"}
    assert {m for m, _ in online} == {"simclr"}  # random init: no online head, no row
    assert {"top1", "top2", "auc"} <= {metric for _, metric in online} and 0 <= online[("simclr", "top1")] <= 100
    assert {r["method"] for r in rows if r["evaluator"] == "knn"} == {"simclr", "random_init"}
    simclr = next(r["pretrain_key"] for r in rows if r["method"] == "simclr")
    head = torch.load(out / "artifacts" / simclr / HEAD_FILE, weights_only=True)
    classes = len(SHAPES)  # the pretraining dataset's classes; 32 features: convnet width 4 x 2^3
    assert head["weight"].shape == (classes, 32) and head["bias"].shape == (classes,)
    assert "Online linear top-1" in (out / "leaderboard.md").read_text()
