"""Job keys follow code changes, and ``bench run --dry-run`` says why a job is [todo].

A third-party method is written to a folder on ``sys.path`` (as an editable install has it), registered
through a plugin manager, run in a tiny plan; then its loss is edited in place.
"""

from __future__ import annotations

import importlib
import json
import linecache
import shutil
import uuid
from pathlib import Path

import pytest

from ssl_bench.harness.cli import _print_plan
from ssl_bench.harness.components import DataContext
from ssl_bench.harness.pipeline import code_fingerprint
from ssl_bench.harness.pipeline.plan import Plan, make_plan
from ssl_bench.harness.pipeline.runner import Run, execute
from ssl_bench.harness.pipeline.specs import load_benchmark
from ssl_bench.harness.pipeline.train import resolve_device
from ssl_bench.harness.plugins import Registry, collect, make_plugin_manager
from ssl_bench.harness.record.layout import RunFolder
from ssl_bench.harness.record.results import write_rows

METHOD = '''
"""A toy method: two views, one linear head, the mean squared distance between their projections."""

from __future__ import annotations

from torch import Tensor, nn

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, hookimpl


class ToyCode(Method):
    """Pulls two views together (collapses, which a test does not mind)."""

    name = "toy_code"

    class Params(MethodParams):
        views: tuple[str, str] = ("crop_flip", "crop_flip")
        """The two views."""

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        self.head = nn.Linear(backbone.feature_dim, 8)

    def loss(self, batch: Batch) -> Tensor:
        z1, z2 = (self.head(self.backbone(v)) for v in batch.views)
        return (z1 - z2).pow(2).mean()  # the loss


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(ToyCode)
'''

BENCH = """
name = "code_keys"
seeds = [0]
val_fraction = 0.25

[pretrain]
dataset = { name = "shapes", params = { n_train = 64, n_test = 32, image_size = 16 } }
backbone = { name = "convnet_small", params = { width = 4, stages = 2 } }
epochs = 1
batch_size = 16

[[methods]]
name = "toy_code"
label = "Toy"

[[methods]]
name = "simclr"
label = "SimCLR"

[[methods]]
name = "random_init"

[[evaluations]]
name = "knn"
params = { k = 3 }
"""


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Registry]:
    """The toy method's file (a module of its own on ``sys.path``) and a registry that has it."""
    module = f"toy_code_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "site"
    folder.mkdir()
    path = folder / f"{module}.py"
    path.write_text(METHOD)
    monkeypatch.syspath_prepend(str(folder))
    plugin = importlib.import_module(module)
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(plugin, name=module)
    return path, collect(pm)


def plan_of(tmp_path: Path, registry: Registry, text: str = BENCH) -> Plan:
    bench = tmp_path / "bench.toml"
    bench.write_text(text)
    return make_plan(load_benchmark(bench, registry=registry), registry, bench.name)


def by_label(plan: Plan) -> dict[str, tuple[str, str]]:
    """label -> (pretraining key, evaluation key)."""
    return {e.pretrain.label: (e.pretrain.key, e.key) for e in plan.eval_jobs}


def dry_run(plan: Plan, out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    """label -> the dry run's lines of that label's jobs."""
    capsys.readouterr()
    _print_plan(plan, RunFolder(out))
    lines = capsys.readouterr().out.splitlines()
    return {label: [line for line in lines if f" {label} seed=" in line] for label in ("Toy", "SimCLR", "random_init")}


def test_editing_a_loss_redoes_that_method_and_its_evaluations_and_the_dry_run_says_why(
        tmp_path: Path, toy: tuple[Path, Registry], capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    path, registry = toy
    out = tmp_path / "out"
    plan = plan_of(tmp_path, registry)
    ctx = DataContext(root=tmp_path / "data", cache_dir=tmp_path / "cache")
    run = Run(load_benchmark(tmp_path / "bench.toml", registry=registry), plan, registry,
              make_plugin_manager(load_entrypoints=False), out, resolve_device("cpu"), ctx, progress=False)
    assert execute(run) == 0
    lines = dry_run(plan, out, capsys)
    assert all(line.startswith("[done]") for group in lines.values() for line in group) and lines["Toy"]

    toy_job = next(j for j in plan.pretrain_jobs if j.label == "Toy")
    recorded = json.loads(RunFolder(out).job_spec(toy_job.key).read_text())
    assert recorded["code"][path.name] == toy_job.code[path.name]  # job.json names the file and its digest
    assert recorded["code"]["harness/pipeline/train.py"] and recorded["key_payload"]["code"] == recorded["code"]

    path.write_text(METHOD.replace("(z1 - z2).pow(2).mean()", "(z1 - z2).abs().mean()"))
    edited = plan_of(tmp_path, registry)
    before, after = by_label(plan), by_label(edited)
    assert after["Toy"][0] != before["Toy"][0] and after["Toy"][1] != before["Toy"][1]  # pretraining and evaluation
    assert after["SimCLR"] == before["SimCLR"] and after["random_init"] == before["random_init"]
    lines = dry_run(edited, out, capsys)
    assert len(lines["Toy"]) == 2
    for line in lines["Toy"]:
        assert line.startswith("[todo]") and line.endswith(f"(code changed: {path.name})"), line
    assert all(line.startswith("[done]") for line in lines["SimCLR"] + lines["random_init"])

    path.write_text(METHOD)  # back as it was: the finished jobs are found again
    assert by_label(plan_of(tmp_path, registry)) == before


def test_docstrings_comments_and_layout_change_no_key(tmp_path: Path, toy: tuple[Path, Registry]) -> None:
    path, registry = toy
    before = by_label(plan_of(tmp_path, registry))
    reworded = (METHOD.replace("Pulls two views together", "Draws both views to one point")
                .replace('"""The two views."""', '"""Both views, the same pipeline."""')
                .replace("# the loss", "# mean squared distance").replace("\n\n\nclass", "\n\nclass"))
    assert reworded != METHOD
    path.write_text(reworded)
    assert by_label(plan_of(tmp_path, registry)) == before
    path.write_text(METHOD.replace("nn.Linear(backbone.feature_dim, 8)", "nn.Linear(backbone.feature_dim, 9)"))
    assert by_label(plan_of(tmp_path, registry))["Toy"] != before["Toy"]


def test_a_file_hashes_alike_wherever_it_is_installed(tmp_path: Path) -> None:
    """A wheel puts ``ssl_bench/plugins/...`` in site-packages, an editable install reads ``plugins/...``:
    the digest hashes the contents and the label comes from the module's name, not from the path."""
    import ssl_bench.plugins.methods.simclr as simclr

    editable = Path(simclr.__file__)
    wheel = tmp_path / "site-packages" / "ssl_bench" / "plugins" / "methods" / "simclr.py"
    wheel.parent.mkdir(parents=True)
    shutil.copyfile(editable, wheel)
    module = "ssl_bench.plugins.methods.simclr"
    assert code_fingerprint.label(module, str(wheel)) == code_fingerprint.label(module, str(editable)) \
        == "plugins/methods/simclr.py"
    assert code_fingerprint.label("ssl_bench.plugins.methods", str(wheel.with_name("__init__.py"))) \
        == "plugins/methods/__init__.py"
    digest = code_fingerprint.digest_source(editable.read_text())
    assert code_fingerprint.digest_source(wheel.read_text()) == digest
    parts = code_fingerprint.class_parts(simclr.SimCLR)
    assert parts["plugins/methods/simclr.py"] == digest
    assert "harness/kit/losses.py" in parts  # what the method imports from the kit is followed
    assert not any(label.startswith("plugins/methods/") and label != "plugins/methods/simclr.py" for label in parts)


def test_a_class_of_a_notebook_cell_is_hashed_by_its_own_source() -> None:
    """A notebook's cells have no file: ``inspect.getsource`` reads them from ``linecache``."""

    def cell(source: str, n: int) -> type:
        filename = f"<cell-{uuid.uuid4().hex[:6]}-{n}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        scope: dict[str, object] = {"__name__": "__main__"}
        exec(compile(source, filename, "exec"), scope)
        made = scope["Cell"]
        assert isinstance(made, type)
        return made

    first = cell('class Cell:\n    """One."""\n    def f(self):\n        return 1\n', 1)
    reworded = cell('class Cell:\n    """Another docstring."""\n    def f(self):\n        return 1\n', 2)
    edited = cell('class Cell:\n    """One."""\n    def f(self):\n        return 2\n', 3)
    parts = code_fingerprint.class_parts(first)
    assert list(parts) == ["__main__.Cell"] and parts["__main__.Cell"] != code_fingerprint.UNKNOWN
    assert code_fingerprint.class_parts(reworded) == parts
    assert code_fingerprint.class_parts(edited) != parts
    made = type("Made", (), {"__module__": "__main__"})  # no source anywhere: the name alone
    assert code_fingerprint.class_parts(made) == {"__main__.Made": code_fingerprint.UNKNOWN}


@pytest.mark.parametrize("rows", ["evaluation record", "evaluation spec only"])
def test_the_dry_run_names_a_spec_change_and_an_empty_slot(rows: str, tmp_path: Path, toy: tuple[Path, Registry],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Against job.json files and result rows as a run leaves them (written here without training). Rows
    hold the evaluation's whole record, or only its resolved spec (no key payload): both name a spec change."""
    _, registry = toy
    out = RunFolder(tmp_path / "out")
    plan = plan_of(tmp_path, registry)
    for job in plan.pretrain_jobs:
        out.job_spec(job.key).parent.mkdir(parents=True)
        out.job_spec(job.key).write_text(json.dumps(job.record()))
        out.done(job.key).write_text("{}")
    toy_job = next(j for j in plan.pretrain_jobs if j.label == "Toy")
    out.done(toy_job.key).unlink()
    for e in plan.eval_jobs:
        evaluation = e.record()
        if rows == "evaluation spec only":
            evaluation = {k: evaluation[k] for k in ("key", "evaluator", "dataset", "grid", "metric", "val_fraction")}
        write_rows(out.result(e.key), [{"job_key": e.key, "label": e.pretrain.label, "seed": e.pretrain.seed,
                                        "evaluator": e.evaluator.name, "metric": "top1", "value": 50.0,
                                        "split": "test",
                                        "job_spec": json.dumps({"pretrain": e.pretrain.record(),
                                                                "evaluation": evaluation})}])
    changed = plan_of(tmp_path, registry, BENCH.replace('label = "SimCLR"', 'label = "SimCLR"\n'
                                                        'params = { temperature = 0.3 }').replace("k = 3", "k = 4"))
    capsys.readouterr()
    _print_plan(changed, out)
    lines = capsys.readouterr().out.splitlines()
    assert all(x.startswith("[todo]") for x in lines if " eval " in x or "SimCLR" in x or " Toy " in x)
    line = next(x for x in lines if x.startswith("[todo] pretrain") and "SimCLR" in x)
    assert line.endswith("(spec changed: method.params.temperature 0.5 -> 0.3)"), line
    toy_line = next(x for x in lines if x.startswith("[todo] pretrain") and " Toy " in x)
    assert toy_line.endswith("(started, not finished)")  # a job.json without its done marker
    assert next(x for x in lines if x.startswith("[done] pretrain") and "random_init" in x)
    k = "(spec changed: evaluator.params.k 3 -> 4)"
    for x in (x for x in lines if x.startswith("[todo] eval")):
        want = f"(spec changed: pretraining.method.params.temperature 0.5 -> 0.3; {k[1:]}" if "SimCLR" in x else k
        assert x.endswith(want), x
    shutil.rmtree(out.results_dir)  # no rows: nothing to compare an evaluation with
    capsys.readouterr()
    _print_plan(changed, out)
    assert all(x.endswith("(not run yet)") for x in capsys.readouterr().out.splitlines() if x.startswith("[todo] eval"))
