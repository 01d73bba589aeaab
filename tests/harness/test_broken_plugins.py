"""A broken third-party plugin is one line and skipped; everything that does not need it still works.

The distribution ``tests/fixtures/bench-broken`` has one entry point per mistake (an import that fails,
an entry point naming a missing module, a name a built-in took, a misspelt hook, a registration hook
that raises) and a healthy one. Its ``bench_broken-0.1.0.dist-info`` makes the folder an installed
distribution once it is on ``sys.path``, so these tests need no pip and no venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from ssl_bench.harness import Method, hookimpl
from ssl_bench.harness.errors import DuplicateComponentError, PluginError, SpecError, UnknownComponentError
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.plugins import (
    PluginProblem,
    collect,
    load_registry,
    make_plugin_manager,
    plugin_report,
)
from tests.conftest import ROOT, TINY

FIXTURE = ROOT / "tests" / "fixtures" / "bench-broken"
SOURCE = FIXTURE / "bench_broken"
CASES = {
    "needs_missing_dep": ("failed to import: ModuleNotFoundError: No module named "
                          "'bench_broken_dependency_that_is_not_installed'", f"{SOURCE / 'needs_missing_dep.py'}:5"),
    "gone": ("its entry point 'gone = bench_broken.gone' names module 'bench_broken.gone', which is not installed",
             ""),
    "duplicate": ("Method 'simclr' is registered twice: by ssl_bench.plugins.methods.simclr (ssl-bench ",
                  f"{SOURCE / 'duplicate.py'}:"),
    "misspelt": ("it implements unknown hook 'bench_register_method' (did you mean 'bench_register_methods'?)",
                 f"{SOURCE / 'misspelt.py'}:14"),
    "raises": ("its hook bench_register_datasets raised RuntimeError: no data root configured",
               f"{SOURCE / 'raises.py'}:10"),
}


@pytest.fixture
def installed(monkeypatch):
    """bench-broken installed (its folder on sys.path), entry points loaded."""
    monkeypatch.syspath_prepend(str(FIXTURE))
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "0")
    monkeypatch.delenv("BENCH_LOAD_PLUGINS", raising=False)


def problems_by_plugin(registry) -> dict[str, PluginProblem]:
    return {p.plugin: p for p in registry.problems}


@pytest.mark.parametrize("plugin", sorted(CASES))
def test_each_mistake_is_one_line_naming_plugin_distribution_place_and_way_out(installed, plugin):
    _, registry = load_registry(warn=False)
    problem = problems_by_plugin(registry)[plugin]
    reason, where = CASES[plugin]
    line = str(problem)
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"plugin '{plugin}' (bench-broken 0.1.0) skipped: ")
    assert reason in line and where in line and problem.where.startswith(where)
    assert line.endswith(f"fix or uninstall bench-broken, or run with -p no:{plugin}")


def test_the_registry_works_without_the_broken_plugins(installed):
    _, registry = load_registry(warn=False)
    assert sorted(problems_by_plugin(registry)) == sorted(CASES)
    assert "broken_dist_healthy" in registry.names("evaluators")  # the same distribution's healthy plugin
    assert registry.entry("methods", "simclr").plugin == "ssl_bench.plugins.methods.simclr"
    assert "broken_dist_vicreg" not in registry.names("methods")  # a skipped plugin joins not even in part
    clean = collect(make_plugin_manager(load_entrypoints=False))
    for kind, names in clean.entries.items():
        assert set(names) <= set(registry.entries[kind])


def test_the_warnings_are_printed_once_each_on_stderr(installed, capsys):
    load_registry()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(CASES) and all(line.startswith("bench: warning: plugin '") for line in err)


def test_blocking_a_broken_plugin_silences_it(installed):
    _, registry = load_registry(blocked=["gone", "duplicate"], warn=False)
    assert sorted(problems_by_plugin(registry)) == sorted(set(CASES) - {"gone", "duplicate"})


def test_a_component_only_the_skipped_plugin_provides_names_it_with_exit_code_2(installed, tmp_path):
    _, registry = load_registry(warn=False)
    with pytest.raises(UnknownComponentError, match=r"Method 'broken_dist_vicreg' comes from plugin 'duplicate' "
                       r"\(bench-broken 0.1.0\), which was skipped: Method 'simclr' is registered twice") as err:
        registry.get("methods", "broken_dist_vicreg")
    assert err.value.exit_code == 2
    with pytest.raises(UnknownComponentError, match=r"Unknown method 'ijepa'.* may come from: .*'needs_missing_dep'"):
        registry.get("methods", "ijepa")  # nothing known provides it: the plugins that never registered may
    path = tmp_path / "b.toml"
    path.write_text(TINY.replace('name = "simclr"\nparams = { temperature = 0.5 }', 'name = "broken_dist_vicreg"'))
    with pytest.raises(SpecError, match=r"b.toml: methods\[0\].name: Method 'broken_dist_vicreg' comes from plugin "
                       "'duplicate'") as err:
        load_benchmark(path, registry=registry)
    assert err.value.exit_code == 2


def test_bench_plugins_reports_the_skipped_ones(installed):
    pm, registry = load_registry(warn=False)
    rows = {r["name"]: r for r in plugin_report(pm, registry)}
    assert rows["healthy"]["distribution"] == "bench-broken" and rows["healthy"]["version"] == "0.1.0"
    assert rows["healthy"]["provides"] == {"evaluators": ["broken_dist_healthy"]}
    assert rows["duplicate"]["provides"] == {} and "skipped" in rows["duplicate"]
    assert "skipped" not in rows["ssl_bench.plugins.methods.simclr"]


def test_strict_collect_keeps_raising_when_two_healthy_plugins_collide(installed):
    with pytest.raises(DuplicateComponentError, match=r"by ssl_bench.plugins.methods.simclr .* and by duplicate"):
        collect(make_plugin_manager(blocked=["raises"]))
    with pytest.raises(PluginError, match=r"its hook bench_register_datasets raised RuntimeError"):
        collect(make_plugin_manager(blocked=["duplicate"]))


def test_a_skipped_plugin_hears_no_events(installed):
    pm, _ = load_registry(warn=False)
    assert pm.get_plugin("duplicate") is None and pm.get_plugin("misspelt") is None
    assert pm.get_plugin("healthy") is not None


def test_fake_entry_points_in_process(monkeypatch):
    """The same, with modules made in the test and entry points monkeypatched (no files at all)."""
    import importlib.metadata as md

    good, wrong_args = types.ModuleType("t_fake_good"), types.ModuleType("t_fake_wrong_args")

    class Fake(Method):
        name = "t_fake_method"

    @hookimpl
    def bench_register_methods(register):
        register(Fake)

    @hookimpl
    def bench_register_evaluators(reg):  # the specification's argument is `register`
        pass

    good.bench_register_methods = bench_register_methods
    wrong_args.bench_register_evaluators = bench_register_evaluators
    monkeypatch.setitem(sys.modules, "t_fake_good", good)
    monkeypatch.setitem(sys.modules, "t_fake_wrong_args", wrong_args)
    eps = md.EntryPoints([md.EntryPoint(n, n, "bench.plugins") for n in ("t_fake_good", "t_fake_wrong_args")])
    monkeypatch.setattr(md, "entry_points", lambda **kw: eps)
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "0")
    _, registry = load_registry(warn=False)
    assert registry.entry("methods", "t_fake_method").plugin == "t_fake_good"
    (problem,) = registry.problems
    assert str(problem).startswith("plugin 't_fake_wrong_args' (unknown) skipped: hook bench_register_evaluators: "
                                   "Argument(s) {'reg'} are declared in the hookimpl but can not be found")


def test_a_broken_built_in_is_an_error_not_skipped(monkeypatch):
    import ssl_bench.harness.plugins as plugins

    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", (*plugins.DEFAULT_PLUGINS, "ssl_bench.plugins.methods.no_such"))
    with pytest.raises(PluginError, match=r"built-in plugin ssl_bench.plugins.methods.no_such: it is module "
                       r"'ssl_bench.plugins.methods.no_such', which is not installed"):
        make_plugin_manager(load_entrypoints=False)


@pytest.mark.slow
def test_bench_list_plugins_and_validate_survive_a_broken_distribution(tmp_path, cli_env):
    env = cli_env | {"PYTHONPATH": f"{FIXTURE}:{cli_env['PYTHONPATH']}", "BENCH_DISABLE_PLUGIN_AUTOLOAD": "0"}

    def bench(*args):
        return subprocess.run([sys.executable, "-m", "ssl_bench.harness", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=300)

    listed = bench("list", "methods")
    assert listed.returncode == 0 and "simclr" in listed.stdout and "Traceback" not in listed.stderr
    warnings = listed.stderr.splitlines()
    assert len(warnings) == len(CASES) and all(w.startswith("bench: warning: plugin '") for w in warnings)
    assert any("-p no:misspelt" in w for w in warnings)
    report = bench("plugins")
    assert report.returncode == 0 and "healthy" in {r["name"] for r in json.loads(report.stdout)}
    quiet = bench("-p", "no:gone", "-p", "no:misspelt", "-p", "no:needs_missing_dep", "-p", "no:duplicate",
                  "-p", "no:raises", "list")
    assert quiet.returncode == 0 and quiet.stderr == ""
    path = tmp_path / "b.toml"
    path.write_text(TINY.replace('name = "simclr"\nparams = { temperature = 0.5 }', 'name = "broken_dist_vicreg"'))
    bad = bench("validate", str(path))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "methods[0].name: Method 'broken_dist_vicreg' comes from plugin 'duplicate'" in bad.stderr
