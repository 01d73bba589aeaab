from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pluggy
import pytest

import ssl_bench.harness as harness
from ssl_bench.harness import hookimpl, hookspecs
from ssl_bench.harness.components import Method
from ssl_bench.harness.errors import DuplicateComponentError, PluginError, UnknownComponentError
from ssl_bench.harness.plugins import DEFAULT_PLUGINS, collect, make_plugin_manager, plugin_report

HARNESS = Path(harness.__file__).parent


def test_harness_never_imports_plugins():
    for path in HARNESS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.startswith(("plugins", "ssl_bench.plugins"))]
            assert not bad, f"{path.name} imports {names}"


def test_every_default_plugin_registers_something():
    pm = make_plugin_manager(load_entrypoints=False)
    report = {r["name"]: r for r in plugin_report(pm, collect(pm))}
    for name in DEFAULT_PLUGINS:  # a tracker registers no component: it listens to the events
        assert report[name]["provides"] or report[name]["hooks"], f"{name} registers nothing and listens to nothing"
        assert report[name]["distribution"] == "ssl-bench"


def test_every_hookspec_is_documented():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("bench_"):
            assert fn.__doc__ and len(fn.__doc__.strip()) > 20, f"{name} lacks its manual"
            assert ":param" in fn.__doc__, f"{name} documents no parameter"


class Dup(Method):
    """A second 'simclr'."""

    name = "simclr"


class DupPlugin:
    @hookimpl
    def bench_register_methods(self, register):
        register(Dup)


def test_duplicate_name_names_both_plugins():
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(DupPlugin(), name="test-dup")
    try:
        with pytest.raises(DuplicateComponentError, match=r"ssl_bench.plugins.methods.simclr .*test-dup"):
            collect(pm)
    finally:
        pm.unregister(name="test-dup")


def test_registering_a_non_component_is_an_error():
    class Bad:
        @hookimpl
        def bench_register_methods(self, register):
            register(int)

    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(hookspecs)
    pm.register(Bad(), name="bad")
    with pytest.raises(PluginError, match="bad registered"):
        collect(pm)


def test_unknown_name_suggests_closest():
    registry = collect(make_plugin_manager(load_entrypoints=False))
    with pytest.raises(UnknownComponentError, match="Did you mean 'knn'"):
        registry.get("evaluators", "knnn")


def test_blocking_a_builtin(monkeypatch):
    pm = make_plugin_manager(load_entrypoints=False, blocked=["ssl_bench.plugins.methods.simclr"])
    assert "simclr" not in collect(pm).names("methods")


def test_autoload_switch(monkeypatch):
    calls = []
    monkeypatch.setattr("importlib.metadata.entry_points", lambda **kw: calls.append(kw) or [])
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    make_plugin_manager()
    assert calls == []
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "0")
    make_plugin_manager()
    assert calls == [{"group": "bench.plugins"}]


class Events:
    def __init__(self):
        self.seen = []

    @hookimpl
    def bench_run_started(self, run):
        self.seen.append(("started", run))

    @hookimpl
    def bench_job_finished(self, job, result):
        self.seen.append(("job", result["status"]))

    @hookimpl
    def bench_run_finished(self, run, failed):
        self.seen.append(("finished", failed))


def test_hook_bench_register_methods_and_friends():
    registry = collect(make_plugin_manager(load_entrypoints=False))
    for kind in ("methods", "datasets", "augmentations", "backbones", "evaluators"):
        assert registry.names(kind), f"no {kind} registered"


@pytest.mark.slow
def test_hook_bench_run_started_job_finished_run_finished(tmp_path):
    from ssl_bench.harness.components import DataContext
    from ssl_bench.harness.pipeline.plan import make_plan
    from ssl_bench.harness.pipeline.runner import Run, execute
    from ssl_bench.harness.pipeline.specs import load_benchmark
    from ssl_bench.harness.pipeline.train import resolve_device
    from tests.conftest import TINY

    pm = make_plugin_manager(load_entrypoints=False)
    events = Events()
    pm.register(events, name="test-events")
    registry = collect(pm)
    path = tmp_path / "t.toml"
    path.write_text(TINY.replace('\n[[methods]]\nname = "simclr"\nparams = { temperature = 0.5 }\n', ""))
    spec = load_benchmark(path, registry=registry)
    run = Run(spec, make_plan(spec, registry), registry, pm, tmp_path / "out", resolve_device("cpu"),
              DataContext(root=tmp_path, cache_dir=tmp_path / "cache"), progress=False)
    assert execute(run) == 0
    assert events.seen[0] == ("started", run) and events.seen[-1] == ("finished", 0)
    assert [s for k, s in events.seen if k == "job"] == ["ok", "ok", "ok"]  # pretrain + 2 evals
    events.seen.clear()
    execute(run)
    assert [s for k, s in events.seen if k == "job"] == ["cached", "cached"]


def test_a_mistyped_params_key_suggests_the_field_and_lists_them(tmp_path):
    from ssl_bench.harness.errors import SpecError
    from ssl_bench.harness.pipeline.specs import load_benchmark
    from tests.conftest import TINY

    path = tmp_path / "t.toml"
    path.write_text(TINY.replace("temperature = 0.5", "temprature = 0.5"))
    registry = collect(make_plugin_manager(load_entrypoints=False))
    with pytest.raises(SpecError, match=r"t.toml: methods\[0\].params.temprature: Extra inputs are not permitted; "
                       r"did you mean 'temperature'\? valid fields: .*temperature, views$"):
        load_benchmark(path, registry=registry)
    path.write_text(TINY.replace("k = 5", "zzz = 5"))
    with pytest.raises(SpecError, match=r"evaluations\[0\].params.zzz: Extra inputs are not permitted; valid fields: "
                       r"chunk_size, k, temperature$"):
        load_benchmark(path, registry=registry)


def test_an_unknown_name_in_bench_load_plugins_exits_2(monkeypatch):
    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "no_such_plugin")
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "0")
    with pytest.raises(PluginError) as err:
        make_plugin_manager()
    assert err.value.exit_code == 2
