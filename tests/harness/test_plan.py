from __future__ import annotations

import pytest

from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.plugins import collect, make_plugin_manager
from tests.conftest import TINY


@pytest.fixture(scope="module")
def registry():
    return collect(make_plugin_manager(load_entrypoints=False))


def plan_of(write_toml, registry, text):
    return make_plan(load_benchmark(write_toml(text), registry=registry), registry)


def keys(plan):
    return {j.key for j in plan.pretrain_jobs}, {j.key for j in plan.eval_jobs}


def test_plan_expands_methods_seeds_evaluations(write_toml, registry):
    plan = plan_of(write_toml, registry, TINY.replace("seeds = [0]", "seeds = [0, 1]"))
    assert len(plan.pretrain_jobs) == 2 * 2
    assert len(plan.eval_jobs) == 2 * 2 * 2
    linear = [e for e in plan.eval_jobs if e.evaluator.name == "linear"][0]
    assert linear.grid == {"lr": (0.1, 0.01), "weight_decay": (0.0,)}
    assert all(j.candidates == () for j in plan.pretrain_jobs)  # no sweep, no selection step
    assert {j.kind for j in plan.pretrain_jobs} == {"run"}


def test_keys_are_stable_and_defaults_resolved(write_toml, registry):
    a = keys(plan_of(write_toml, registry, TINY))
    explicit = TINY.replace("temperature = 0.5", "temperature = 0.5, proj_dim = 128")
    assert keys(plan_of(write_toml, registry, explicit)) == a  # spelling out a default is the same work


def test_one_parameter_changes_only_the_jobs_it_reaches(write_toml, registry):
    base_pre, base_eval = keys(plan_of(write_toml, registry, TINY))
    pre, ev = keys(plan_of(write_toml, registry, TINY.replace("temperature = 0.5", "temperature = 0.2")))
    assert len(base_pre - pre) == 1  # only SimCLR's pretraining changed; random init kept its key
    assert len(base_eval - ev) == 2  # and its two evaluations
    pre, ev = keys(plan_of(write_toml, registry, TINY.replace("k = 5", "k = 7")))
    assert pre == base_pre and len(base_eval - ev) == 2  # a kNN parameter touches only the kNN jobs


def test_checkpoint_cadence_and_budget_of_untrained_methods_do_not_change_keys(write_toml, registry):
    base_pre, _ = keys(plan_of(write_toml, registry, TINY))
    pre, _ = keys(plan_of(write_toml, registry,
                          TINY.replace("checkpoint_every_steps = 1", "checkpoint_every_steps = 9")))
    assert pre == base_pre
    plan = plan_of(write_toml, registry, TINY.replace("epochs = 1", "epochs = 2"))
    random_init = [j for j in plan.pretrain_jobs if j.method.name == "random_init"][0]
    assert random_init.key in base_pre


def test_axes_expand_every_method_at_every_point(write_toml, registry):
    text = TINY.replace("checkpoint_every_steps = 1",
                        "checkpoint_every_steps = 1\naxes = { batch_size = [16, 32], train_size = [64, 128] }")
    plan = plan_of(write_toml, registry, text)
    simclr = [j for j in plan.pretrain_jobs if j.method.name == "simclr"]
    points = sorted((j.pretrain.batch_size, j.dataset.train_size) for j in simclr)
    assert points == [(16, 64), (16, 128), (32, 64), (32, 128)]
    assert len({j.key for j in plan.pretrain_jobs}) == len(plan.pretrain_jobs)
    random_init = [j for j in plan.pretrain_jobs if j.method.name == "random_init"]
    assert sorted(j.dataset.train_size for j in random_init) == [64, 128]  # batch size changes nothing untrained
    assert all(j.label == "simclr" and not j.pretrain.axes for j in simclr)
    # evaluations target the benchmark's own dataset, whatever the pretraining subset
    assert {e.dataset.train_size for e in plan.eval_jobs} == {None}
    assert len(plan.eval_jobs) == 2 * len(plan.pretrain_jobs)


def test_an_axis_point_equal_to_the_plain_setting_shares_its_key(write_toml, registry):
    plain = plan_of(write_toml, registry, TINY)
    text = TINY.replace("checkpoint_every_steps = 1", "checkpoint_every_steps = 1\naxes = { batch_size = [32, 64] }")
    assert keys(plain) <= keys(plan_of(write_toml, registry, text))


def test_train_split_enters_the_key_and_the_display_only_when_set(write_toml, registry):
    plain = plan_of(write_toml, registry, TINY)
    text = TINY.replace("params = { n_train = 128, n_test = 64 } }",
                        'params = { n_train = 128, n_test = 64 }, train_split = "extra" }')
    other = plan_of(write_toml, registry, text)
    job = [j for j in other.pretrain_jobs if j.method.name == "simclr"][0]
    assert job.dataset.display == "shapes/extra" and job.key not in keys(plain)[0]
    explicit = TINY.replace("params = { n_train = 128, n_test = 64 } }",
                            'params = { n_train = 128, n_test = 64 }, train_split = "train" }')
    assert keys(plan_of(write_toml, registry, explicit)) == keys(plain)
