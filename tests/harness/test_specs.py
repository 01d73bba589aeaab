from __future__ import annotations

import pytest

from ssl_bench.harness.errors import SpecError
from ssl_bench.harness.pipeline.specs import deep_merge, format_loc, load_benchmark, method_pretrain
from ssl_bench.harness.plugins import collect, make_plugin_manager
from tests.conftest import QUICKSTART, TINY


@pytest.fixture(scope="module")
def registry():
    return collect(make_plugin_manager(load_entrypoints=False))


def test_quickstart_validates(registry):
    spec = load_benchmark(QUICKSTART, registry=registry)
    assert spec.name == "quickstart"
    assert [m.name for m in spec.methods] == ["simclr", "supervised", "random_init"]


def test_profile_deep_merges(registry):
    spec = load_benchmark(QUICKSTART, "smoke", registry)
    assert spec.seeds == [0]
    assert spec.pretrain.epochs == 1
    assert spec.pretrain.dataset.params == {"n_train": 256, "n_test": 128, "image_size": 16}  # image_size: the base's
    assert spec.pretrain.backbone.name == "convnet_small"  # untouched keys survive


def test_unknown_profile_lists_available(registry):
    with pytest.raises(SpecError, match=r"quickstart.toml: profiles: no profile 'gpu'; available: smoke"):
        load_benchmark(QUICKSTART, "gpu", registry)


def test_extra_key_cites_file_and_dotted_key(write_toml, registry):
    path = write_toml(TINY.replace("epochs = 1", "epochs = 1\nepoch = 3"), "bad.toml")
    with pytest.raises(SpecError) as err:
        load_benchmark(path, registry=registry)
    assert "bad.toml: pretrain.epoch: Extra inputs are not permitted" in str(err.value)
    assert err.value.exit_code == 2


def test_plugin_param_bound_cites_dotted_key(write_toml, registry):
    path = write_toml(TINY.replace("temperature = 0.5", "temperature = -1"), "t.toml")
    with pytest.raises(SpecError, match=r"t.toml: methods\[0\].params.temperature: Input should be greater than 0"):
        load_benchmark(path, registry=registry)


def test_unknown_plugin_param(write_toml, registry):
    path = write_toml(TINY.replace("temperature = 0.5", "temprature = 0.5"), "t.toml")
    with pytest.raises(SpecError, match=r"methods\[0\].params.temprature: Extra inputs are not permitted"):
        load_benchmark(path, registry=registry)


def test_unknown_method_lists_available_and_closest(write_toml, registry):
    path = write_toml(TINY.replace('name = "simclr"', 'name = "simclrr"'), "t.toml")
    with pytest.raises(SpecError) as err:
        load_benchmark(path, registry=registry)
    msg = str(err.value)
    assert "t.toml: methods[0].name: Unknown method 'simclrr'" in msg
    assert "random_init" in msg and "Did you mean 'simclr'?" in msg


def test_unknown_view_is_an_error(write_toml, registry):
    path = write_toml(TINY.replace("temperature = 0.5", 'views = ["simclr", "nope"]'), "t.toml")
    with pytest.raises(SpecError, match=r"methods\[0\].params.views: Unknown augmentation 'nope'"):
        load_benchmark(path, registry=registry)


def test_unsweepable_key_is_an_error(write_toml, registry):
    path = write_toml(TINY.replace("weight_decay = [0.0]", "momentum = [0.9]"), "t.toml")
    with pytest.raises(SpecError, match=r"evaluations\[1\].sweep.momentum: 'linear' cannot sweep 'momentum'"):
        load_benchmark(path, registry=registry)


def test_bad_toml_and_missing_file(write_toml, tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        load_benchmark(write_toml("name = ", "broken.toml"))
    with pytest.raises(SpecError, match="benchmark file not found"):
        load_benchmark(tmp_path / "nope.toml")


def test_method_pretrain_override(write_toml, registry):
    text = TINY.replace('name = "random_init"',
                        'name = "random_init"\npretrain = { optimizer = { name = "lars", lr = 0.3 } }')
    spec = load_benchmark(write_toml(text), registry=registry)
    assert method_pretrain(spec, 1).optimizer.name == "lars"
    assert method_pretrain(spec, 1).optimizer.momentum == 0.9
    assert method_pretrain(spec, 0).optimizer.name == "sgd"


def test_method_pretrain_override_error_cites_method(write_toml, registry):
    text = TINY.replace('name = "random_init"', 'name = "random_init"\npretrain = { epochs = -2 }')
    with pytest.raises(SpecError, match=r"methods\[1\].pretrain.epochs: Input should be greater than or equal to 0"):
        load_benchmark(write_toml(text), registry=registry)


def test_deep_merge_and_format_loc():
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": 3}, "l": [2]}) == {"a": {"b": 3, "c": 2}, "l": [2]}
    renamed = {"dataset": {"name": "cifar10", "train_size": 100}}
    assert deep_merge({"dataset": {"name": "imagenet", "params": {"image_size": 224}}}, renamed) == renamed
    assert deep_merge({"d": {"name": "x", "params": {"a": 1}}}, {"d": {"name": "x", "params": {"b": 2}}}) == \
        {"d": {"name": "x", "params": {"a": 1, "b": 2}}}
    assert format_loc(("methods", 2, "params", "temperature")) == "methods[2].params.temperature"
