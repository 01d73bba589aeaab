"""``--set KEY=VALUE``: parsed, applied after the profile, validated like the file, part of the content keys."""

from __future__ import annotations

import pytest

from ssl_bench.harness.cli import main
from ssl_bench.harness.errors import SpecError, UsageError
from ssl_bench.harness.pipeline.overrides import apply_overrides, parse_override
from ssl_bench.harness.pipeline.plan import make_plan
from ssl_bench.harness.pipeline.specs import load_benchmark, load_profiles
from ssl_bench.harness.plugins import collect, make_plugin_manager
from tests.conftest import TINY

WITH_PROFILE = TINY + """
[profiles.short]
pretrain = { epochs = 3, batch_size = 16 }
"""


@pytest.fixture(scope="module")
def registry():
    return collect(make_plugin_manager(load_entrypoints=False))


@pytest.mark.parametrize("text, path, value", [
    ("pretrain.epochs=2", ("pretrain", "epochs"), 2),
    ("methods[0].params.temperature=0.5", ("methods", 0, "params", "temperature"), 0.5),
    ("evaluations[1].sweep.lr=[0.1, 0.01]", ("evaluations", 1, "sweep", "lr"), [0.1, 0.01]),
    ("pretrain.optimizer={ name = 'adam', lr = 1e-3 }", ("pretrain", "optimizer"), {"name": "adam", "lr": 1e-3}),
    ("pretrain.backbone.name=resnet18", ("pretrain", "backbone", "name"), "resnet18"),
    ('methods[1].label="Random"', ("methods", 1, "label"), "Random"),
    ("methods[0].params.views=true", ("methods", 0, "params", "views"), True),
    ("description=a=b", ("description",), "a=b"),
    ("description=", ("description",), ""),
    ("description=x\ny = 1", ("description",), "x\ny = 1"),  # one value, never extra keys
    (' seeds = [0, 1] ', ("seeds",), [0, 1]),
    ('profiles."a.b".seeds=[2]', ("profiles", "a.b", "seeds"), [2]),
    ("pretrain.axes.batch_size=[8,16]", ("pretrain", "axes", "batch_size"), [8, 16]),
])
def test_parse_reads_the_path_and_a_toml_value(text, path, value):
    override = parse_override(text)
    assert override.path == path
    assert override.value == value and type(override.value) is type(value)
    assert override.text == text


@pytest.mark.parametrize("text", ["pretrain.epochs", "=2", "pretrain..epochs=2", "pretrain.=2", "[0].name=x",
                                  "methods[x].name=x", "methods[-1].name=x", "pre train=1", "methods[0]name=x"])
def test_a_malformed_override_is_one_line_naming_it(text):
    with pytest.raises(UsageError) as err:
        parse_override(text)
    assert str(err.value).startswith(f"--set {text}: ") and "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_apply_sets_values_creates_missing_tables_and_leaves_the_input_alone():
    raw = {"pretrain": {"epochs": 1}, "methods": [{"name": "simclr"}, {"name": "byol"}]}
    out = apply_overrides(raw, [parse_override(t) for t in (
        "pretrain.epochs=2", "methods[1].pretrain.optimizer.lr=0.05", "methods[0].params.temperature=0.5",
        "pretrain.epochs=4")])
    assert out == {"pretrain": {"epochs": 4},
                   "methods": [{"name": "simclr", "params": {"temperature": 0.5}},
                               {"name": "byol", "pretrain": {"optimizer": {"lr": 0.05}}}]}
    assert raw == {"pretrain": {"epochs": 1}, "methods": [{"name": "simclr"}, {"name": "byol"}]}


@pytest.mark.parametrize("text, message", [
    ("methods[7].params.x=1", "--set methods[7].params.x=1: methods has 3 entries"),
    ("seeds[1]=4", "--set seeds[1]=4: seeds has 1 entry"),
    ("seeds.x=1", "--set seeds.x=1: seeds is a list of 1, not a table"),
    ("pretrain[0]=1", "--set pretrain[0]=1: pretrain is a table, not a list"),
    ("pretrain.epochs.x=1", "--set pretrain.epochs.x=1: pretrain.epochs is 1, not a table"),
])
def test_apply_names_the_override_and_what_is_there(text, message):
    raw = {"seeds": [0], "pretrain": {"epochs": 1}, "methods": [{}, {}, {}]}
    with pytest.raises(UsageError) as err:
        apply_overrides(raw, [parse_override(text)])
    assert str(err.value) == message


def test_overrides_are_validated_and_change_the_spec(write_toml, registry):
    path = write_toml(TINY)
    spec = load_benchmark(path, registry=registry, overrides=[
        "pretrain.epochs=2", "methods[0].params.temperature=0.25", "pretrain.optimizer.lr=0.05"])
    assert spec.pretrain.epochs == 2
    assert spec.methods[0].params == {"temperature": 0.25}
    assert spec.pretrain.optimizer.lr == 0.05 and spec.pretrain.optimizer.momentum == 0.9  # the rest: defaults


def test_a_refused_value_gets_the_files_own_message_behind_the_override(write_toml, registry):
    """The same mistake written in the file and given with --set: one message, the override's text in front."""
    typo = write_toml(TINY.replace("temperature = 0.5", "temprature = 0.5"), "bench.toml")
    with pytest.raises(SpecError) as in_file:
        load_benchmark(typo, registry=registry)
    with pytest.raises(UsageError) as by_set:
        load_benchmark(write_toml(TINY, "bench.toml"), registry=registry,
                       overrides=["methods[0].params.temprature=0.5", "pretrain.epochs=2"])
    assert "did you mean 'temperature'" in str(in_file.value)
    assert str(by_set.value) == f"--set methods[0].params.temprature=0.5: {in_file.value}"
    assert by_set.value.exit_code == 2


@pytest.mark.parametrize("text, where", [
    ("pretrain.epochs=-1", "bench.toml: pretrain.epochs: Input should be greater than or equal to 0 (got -1)"),
    ("pretrain.epochs=two", "bench.toml: pretrain.epochs: Input should be a valid integer"),
    ("pretrain.backbone.name=resnet9", "bench.toml: pretrain.backbone.name: Unknown backbone 'resnet9'"),
    ("pretrain.backbone={ name = 'convnet_small', params = { width = 0 } }",
     "bench.toml: pretrain.backbone.params.width: Input should be greater than 0"),
    ("pretrain.sweep.lr=[0.1]", "bench.toml: pretrain: Value error, snapshot_steps cannot be combined"),
])
def test_a_validation_error_names_the_override(write_toml, registry, text, where):
    path = write_toml(TINY.replace("checkpoint_every_steps = 1", "checkpoint_every_steps = 1\nsnapshot_steps = [1]")
                      if "sweep" in text else TINY, "bench.toml")
    with pytest.raises(UsageError) as err:
        load_benchmark(path, registry=registry, overrides=[text])
    assert str(err.value).startswith(f"--set {text}: {where}")


def test_a_mistake_of_the_file_itself_stays_the_files(write_toml, registry):
    path = write_toml(TINY.replace("k = 5", "k = 0"), "bench.toml")
    with pytest.raises(SpecError) as err:
        load_benchmark(path, registry=registry, overrides=["pretrain.epochs=2"])
    assert not isinstance(err.value, UsageError)
    assert str(err.value).startswith("bench.toml: evaluations[0].params.k: Input should be greater than")


def test_overrides_apply_after_the_profile(write_toml, registry):
    path = write_toml(WITH_PROFILE)
    spec = load_benchmark(path, "short", registry, overrides=["pretrain.epochs=5"])
    assert (spec.pretrain.epochs, spec.pretrain.batch_size) == (5, 16)  # the override wins, the profile's rest stays
    specs = load_profiles(path, registry, overrides=["pretrain.epochs=5"])
    assert {name: s.pretrain.epochs for name, s in specs.items()} == {None: 5, "short": 5}
    with pytest.raises(UsageError, match=r"^--set pretrain.epochs=-2: bench.toml: pretrain.epochs: "):
        load_benchmark(path, "short", registry, overrides=["pretrain.epochs=-2"])  # not blamed on the profile


def keys(spec, registry) -> dict[str, str]:
    """Every job's content key, by what the job is (method label, and evaluator for an evaluation)."""
    plan = make_plan(spec, registry, "bench.toml")
    out = {j.label: j.key for j in plan.pretrain_jobs}
    return out | {f"{j.pretrain.label} {j.evaluator.name}": j.key for j in plan.eval_jobs}


def test_an_override_is_part_of_the_content_keys(write_toml, registry):
    path = write_toml(TINY)
    base = keys(load_benchmark(path, registry=registry), registry)
    assert len(base) == 6
    assert keys(load_benchmark(path, registry=registry, overrides=[]), registry) == base
    assert keys(load_benchmark(path, registry=registry, overrides=["pretrain.epochs=1"]), registry) == base  # same
    changed = keys(load_benchmark(path, registry=registry, overrides=["pretrain.epochs=2"]), registry)
    # simclr's jobs read the budget; random_init trains nothing, so its budget is not in its keys
    assert {k for k in base if changed[k] != base[k]} == {"simclr", "simclr knn", "simclr linear"}
    one = keys(load_benchmark(path, registry=registry, overrides=["methods[0].params.temperature=0.25"]), registry)
    assert {k for k in base if one[k] != base[k]} == {"simclr", "simclr knn", "simclr linear"}
    assert one != changed
    written = write_toml(TINY.replace("temperature = 0.5", "temperature = 0.25"), "written.toml")
    assert keys(load_benchmark(written, registry=registry), registry) == one  # as if the file said it


def test_bench_validate_with_set(write_toml, capsys):
    path = write_toml(WITH_PROFILE)
    assert main(["validate", str(path), "--set", "pretrain.epochs=2", "--set", "methods[1].label=Random"]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (2 pretraining jobs, 4 evaluation jobs)") == 2
    assert main(["validate", str(path), "--set", "methods[7].params.x=1"]) == 2
    err = capsys.readouterr().err
    assert err == "bench: error: --set methods[7].params.x=1: methods has 2 entries\n"
    assert main(["run", str(path), "--dry-run", "--out", str(path.parent / "o"),
                 "--set", "methods[0].params.temperature=0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("bench: error: --set methods[0].params.temperature=0: bench.toml: "
                             "methods[0].params.temperature: Input should be greater than 0") and len(err) == 1


def test_run_worker_and_validate_take_repeated_sets_in_order():
    from ssl_bench.harness.cli import _parser

    for command in ("run", "worker", "validate"):
        args = _parser().parse_args([command, "f.toml", "--set", "pretrain.epochs=2", "--set", "seeds=[1]"])
        assert args.overrides == ["pretrain.epochs=2", "seeds=[1]"]
        assert _parser().parse_args([command, "f.toml"]).overrides == []
