"""Output polish of issue 16: help without torch, job lines that tell jobs apart, plurals, the figures that a
leaderboard without matplotlib leaves out (it says so), and the data root the CIFAR-10 tests read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ssl_bench.harness import cli
from ssl_bench.harness.pipeline.plan import evaluator_titles, make_plan
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.plugins import collect, make_plugin_manager
from tests.conftest import ROOT, TINY, data_root

HELP_IMPORTS = """
import sys
from ssl_bench.harness import cli
for argv in (["--help"], ["run", "--help"], ["list", "--help"]):
    try:
        cli.main(argv)
    except SystemExit as exc:
        assert exc.code == 0, exc.code
print("torch" in sys.modules, "ssl_bench.plugins" in sys.modules)
"""

FINETUNES = TINY.split("[[evaluations]]")[0] + """
[[evaluations]]
name = "knn"

[[evaluations]]
name = "finetune"
params = { label_fraction = 0.01, epochs = 1 }

[[evaluations]]
name = "finetune"
params = { label_fraction = 0.1, epochs = 1 }
"""


def test_help_imports_no_torch_and_no_plugin():
    proc = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["False", "False"]


def test_the_kinds_of_bench_list_are_the_component_kinds():
    from ssl_bench.harness.components import COMPONENT_KINDS

    assert list(cli.KINDS) == sorted(COMPONENT_KINDS)


def test_a_lazy_name_can_be_read_and_replaced_on_the_module(monkeypatch):
    from ssl_bench.harness.pipeline.plan import make_plan as real

    assert cli.make_plan is real  # imported on first access

    def planted(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(cli, "make_plan", planted)
    cli._import_lazily()  # what main does: a name bound already is kept
    assert cli.make_plan is planted


def test_job_lines_name_the_params_that_tell_two_evaluations_apart(tmp_path, capsys):
    path = tmp_path / "b.toml"
    path.write_text(FINETUNES)
    registry = collect(make_plugin_manager(load_entrypoints=False))
    plan = make_plan(load_benchmark(path, registry=registry), registry, path.name)
    titles = evaluator_titles(plan.eval_jobs)
    by_evaluator = {titles[e.key] for e in plan.eval_jobs}
    assert by_evaluator == {"knn", "finetune(label_fraction=0.01)", "finetune(label_fraction=0.1)"}
    one = next(e for e in plan.eval_jobs if e.evaluator.name == "finetune")
    assert f" {titles[one.key]} on shapes " in one.describe(titles[one.key])
    assert " finetune on shapes " in one.describe()  # without the plan's titles: the name alone

    assert cli.main(["--no-plugins", "run", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " finetune(" in line]
    assert len(lines) == 4 and sum("finetune(label_fraction=0.01) on shapes" in line for line in lines) == 2


def test_the_transfer_study_s_few_label_fine_tunes_print_different_lines():
    registry = collect(make_plugin_manager(load_entrypoints=False))
    spec = load_benchmark(ROOT / "benchmarks" / "transfer.toml", "cpu", registry)
    plan = make_plan(spec, registry, "transfer.toml")
    titles = evaluator_titles(plan.eval_jobs)
    simclr = [e for e in plan.eval_jobs if e.pretrain.label == "SimCLR v1" and e.evaluator.name == "finetune"]
    shown = {titles[e.key] for e in simclr}
    assert len(shown) == 2 and all("label_fraction=0.01" in t or "label_fraction=0.1" in t for t in shown)


def test_counts_are_singular_when_they_are_one(tmp_path, capsys):
    path = tmp_path / "one.toml"
    one = '[[methods]]\nname = "random_init"\n\n[[evaluations]]\nname = "knn"\n'
    path.write_text(TINY.split("[[methods]]")[0] + one)
    assert cli.main(["--no-plugins", "validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: ok (1 pretraining job, 1 evaluation job)"


def test_a_leaderboard_without_matplotlib_says_it_left_the_figures_out(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    assert cli.main(["leaderboard", str(results)]) == 0
    assert "figures" not in capsys.readouterr().err  # only markdown on stdout: no figures to leave out
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    target = tmp_path / "board.md"
    assert cli.main(["leaderboard", str(results), "-o", str(target)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["leaderboard: figures left out: matplotlib is not installed (pip install 'ssl-bench[plots]')"]
    assert target.is_file()


def test_the_data_root_of_the_tests_is_bench_data_root_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_ROOT", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("BENCH_DATA_ROOT")
    assert data_root() == ROOT.parent / "shared" / "data"


@pytest.mark.parametrize("flag", ["--yes", "--max-hours"])
def test_run_help_documents_the_preflight_flags(flag, capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert flag in capsys.readouterr().out


def test_the_readme_says_how_to_install_the_cpu_build_of_torch():
    readme = (ROOT / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
    assert "--max-hours" in readme and "--yes" in readme
