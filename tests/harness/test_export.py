"""``bench export``: a finished encoder round-trips into torchvision and timm with identical features.

One tiny run (SimCLR, two steps, 16 px shapes) pretrains a ``resnet18`` and, with timm installed, a
``timm:resnet10t``; every test exports from its folder.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from ssl_bench.harness.cli import main
from ssl_bench.harness.components import DataContext
from ssl_bench.harness.data import IMAGENET_MEAN, IMAGENET_STD, normalize, to_float
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.record.results import read_rows
from tests.conftest import ROOT

HAS_TIMM = importlib.util.find_spec("timm") is not None
RUN = """
name = "export"
seeds = [0]

[pretrain]  # 16 px: resnet18's ImageNet stem ends at 1 x 1
dataset = { name = "shapes", params = { n_train = 40, n_test = 20, image_size = 16 } }
backbone = { name = "resnet18" }
epochs = 1
batch_size = 20

[[methods]]
name = "simclr"

[[evaluations]]
name = "knn"
params = { k = 3 }
"""
TIMM_METHOD = """
[[methods]]
name = "simclr"
label = "SimCLR resnet10t"
pretrain = { backbone = { name = "timm:resnet10t" } }
"""


@pytest.fixture(scope="module")
def registry():
    return collect(make_plugin_manager(load_entrypoints=False))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """Pretrain once; the artifact folder of each job by backbone name."""
    root = tmp_path_factory.mktemp("export_run")
    path = root / "export.toml"
    path.write_text(RUN + (TIMM_METHOD if HAS_TIMM else ""))
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        try:
            assert main(["--no-plugins", "run", str(path), "--out", str(root / "out"), "--threads", "1"]) == 0
        finally:
            torch.set_num_threads(threads)
    jobs = {}
    for job in (root / "out" / "artifacts").glob("*/job.json"):
        jobs[json.loads(job.read_text())["backbone"]["name"]] = job.parent
    assert set(jobs) == ({"resnet18", "timm:resnet10t"} if HAS_TIMM else {"resnet18"})
    return jobs


@pytest.fixture(scope="module")
def images(registry, run) -> torch.Tensor:
    """Normalised test images of the run's dataset, as the harness feeds its encoders: (20, 3, 16, 16)."""
    dataset = json.loads((run["resnet18"] / "job.json").read_text())["dataset"]
    cls = registry.get("datasets", dataset["name"])
    data = cls(cls.Params(**dataset["params"])).load("test", DataContext(root=Path("."), cache_dir=Path(".")))
    return normalize(to_float(data.images))


def harness_features(registry, folder: Path, x: torch.Tensor) -> torch.Tensor:
    """What the harness's own encoder of the job in ``folder`` computes for ``x``."""
    spec = json.loads((folder / "job.json").read_text())["backbone"]
    cls = registry.get("backbones", spec["name"])
    backbone = cls(cls.Params.model_validate(spec["params"]))
    backbone.load_state_dict(torch.load(folder / "encoder.pt", weights_only=True))
    with torch.no_grad():
        return backbone.eval()(x)


def features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def export(*args: str) -> int:
    return main(["--no-plugins", "export", *args])


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape and ours.abs().sum() > 0
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6), (ours - theirs).abs().max()


def test_torchvision_format_loads_with_only_the_classifier_missing(run, registry, images, tmp_path):
    torchvision = pytest.importorskip("torchvision", reason="the torchvision format is checked against torchvision")
    out = tmp_path / "r18.pth"
    assert export(str(run["resnet18"]), "--format", "torchvision", "-o", str(out)) == 0
    model = torchvision.models.resnet18()
    report = model.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert sorted(report.missing_keys) == ["fc.bias", "fc.weight"] and report.unexpected_keys == []
    model.fc = torch.nn.Identity()
    assert_same(features(model, images), harness_features(registry, run["resnet18"], images))
    side = json.loads((tmp_path / "r18.pth.json").read_text())
    assert side["library"] == {"name": "torchvision", "model": "resnet18", "kwargs": {},
                               "missing_keys": ["fc.bias", "fc.weight"]}


def test_default_safetensors_export_and_its_sidecar(run, registry, images, tmp_path, monkeypatch):
    safetensors = pytest.importorskip("safetensors.torch", reason="the default format writes .safetensors")
    folder = run["resnet18"]
    monkeypatch.chdir(tmp_path)
    assert export(str(folder / "encoder.pt")) == 0  # the encoder file stands for its folder
    weights = tmp_path / f"encoder-{folder.name}.safetensors"
    state = safetensors.load_file(weights)
    harness_state = torch.load(folder / "encoder.pt", weights_only=True)
    assert set(harness_state) == {f"net.{k}" for k in state}  # the wrapper's prefix, and nothing else, is gone
    assert all(torch.equal(state[k], harness_state[f"net.{k}"]) for k in state)

    side = json.loads(weights.with_name(weights.name + ".json").read_text())
    job = json.loads((folder / "job.json").read_text())
    cls = registry.get("backbones", "resnet18")
    assert side["format"] == "safetensors" and side["library"] is None and side["removed_prefix"] == "net."
    assert side["backbone"] == job["backbone"] and side["backbone"]["params"] == {"zero_init_residual": False}
    assert side["feature_dim"] == cls(cls.Params()).feature_dim == harness_features(registry, folder, images).shape[1]
    assert side["input_size"] == [3, *images.shape[2:]] == [3, 16, 16]
    assert side["normalization"]["mean"] == list(IMAGENET_MEAN) and side["normalization"]["std"] == list(IMAGENET_STD)
    assert side["method"]["name"] == "simclr" and side["method"]["params"] == job["method"]["params"]
    assert side["job_key"] == folder.name == job["key"] and side["harness_version"] == job["harness"]
    assert side["steps"] == json.loads((folder / "pretrain.json").read_text())["steps"] == 2
    commits = {r["git_sha"] for r in read_rows([folder.parent.parent / "results"]) if r["pretrain_key"] == folder.name}
    assert len(commits) == 1 and side["git_commit"] == (commits.pop() or None)


def test_timm_format_loads_strictly_into_timm(run, registry, images, tmp_path):
    timm = pytest.importorskip("timm", reason="timm: backbones and the timm format need timm")
    out = tmp_path / "r10t.pth"
    assert export(str(run["timm:resnet10t"]), "--format", "timm", "-o", str(out)) == 0
    model = timm.create_model("resnet10t", num_classes=0)
    model.load_state_dict(torch.load(out, weights_only=True))  # strict: every key, nothing more
    assert_same(features(model, images), harness_features(registry, run["timm:resnet10t"], images))
    side = json.loads((tmp_path / "r10t.pth.json").read_text())
    assert side["library"]["model"] == "resnet10t" and side["backbone"]["name"] == "timm:resnet10t"


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n### Using an encoder elsewhere\n")
    return text[start:text.find("\n#", start + 1)]


def test_the_readme_lines_export_and_load_what_the_harness_computes(run, registry, images, tmp_path, monkeypatch):
    """The section's ``bench export`` lines (the artifact put in) and its Python block, run as written."""
    pytest.importorskip("timm", reason="the README loads a timm: backbone")
    pytest.importorskip("safetensors", reason="the README loads a .safetensors export")
    section = readme_section()
    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line, comments=True) for line in re.findall(r"^bench export .*$", section, flags=re.M)]
    assert [words[2] for words in commands] == ["runs/mine/artifacts/<key>"] * 2
    for words, backbone in zip(commands, ["resnet18", "timm:resnet10t"]):
        assert main(["--no-plugins", "export", str(run[backbone]), *words[3:]]) == 0
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md (Using an encoder elsewhere)", "exec"), scope)
    assert_same(features(scope["resnet"], images), harness_features(registry, run["resnet18"], images))
    assert_same(features(scope["encoder"], images), harness_features(registry, run["timm:resnet10t"], images))


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("bench: error: "), err
    return err


def test_refusals_are_one_line_and_exit_2(run, tmp_path, capsys):
    folder = run["resnet18"]
    assert "no such artifact folder" in one_line_error(capsys, export(str(tmp_path / "nowhere")))
    assert "unknown format; choose one of safetensors, torchvision, timm" in one_line_error(
        capsys, export(str(folder), "--format", "onnx"))
    assert "not an artifact folder or its encoder.pt" in one_line_error(capsys, export(str(folder / "job.json")))
    assert "is a folder; give the file to write" in one_line_error(capsys, export(str(folder), "-o", str(tmp_path)))
    assert "is the job's own encoder" in one_line_error(capsys, export(str(folder), "-o", str(folder / "encoder.pt")))

    unfinished = tmp_path / "out" / "artifacts" / folder.name
    shutil.copytree(folder, unfinished)
    (unfinished / "done.json").unlink()
    assert "not a finished pretraining job (no done.json)" in one_line_error(capsys, export(str(unfinished)))
    (unfinished / "last.pt").write_bytes(b"")
    assert "stopped part-way" in one_line_error(capsys, export(str(unfinished)))


def test_a_timm_backbone_has_no_torchvision_counterpart(run, capsys):
    pytest.importorskip("timm", reason="timm: backbones need timm")
    err = one_line_error(capsys, export(str(run["timm:resnet10t"]), "--format", "torchvision"))
    assert "backbone 'timm:resnet10t' has no torchvision counterpart" in err


def fake_job(registry, root: Path, key: str, backbone: str) -> Path:
    """A finished-looking artifact folder of ``backbone`` with random weights."""
    folder = root / "artifacts" / key
    folder.mkdir(parents=True)
    cls = registry.get("backbones", backbone)
    params = cls.Params()
    torch.save(cls(params).state_dict(), folder / "encoder.pt")
    (folder / "job.json").write_text(json.dumps({"key": key, "backbone": {"name": backbone,
                                                                          "params": params.model_dump(mode="json")},
                                                 "method": {"name": "random_init", "params": {}}, "harness": "0"}))
    (folder / "done.json").write_text(json.dumps({"key": key}))
    return folder


def test_cifar_stem_resnet_has_no_torchvision_counterpart(registry, tmp_path, capsys):
    folder = fake_job(registry, tmp_path, "cifar", "resnet18_cifar")
    err = one_line_error(capsys, export(str(folder), "--format", "torchvision", "-o", str(tmp_path / "x.pth")))
    assert "backbone 'resnet18_cifar' has no torchvision counterpart" in err
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "x.pth.json").exists()


def test_weights_that_are_not_the_recorded_backbone_are_refused(registry, tmp_path, capsys):
    folder = fake_job(registry, tmp_path, "swapped", "convnet_small")
    cls = registry.get("backbones", "alexnet_bn")
    torch.save(cls(cls.Params()).state_dict(), folder / "encoder.pt")
    assert "does not fit backbone 'convnet_small'" in one_line_error(capsys, export(str(folder), "-o",
                                                                                  str(tmp_path / "x.safetensors")))


class _Payload:
    """Unpickling this would run code (create a file); weights_only must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_reading_a_run_folder_runs_no_code(registry, tmp_path, capsys):
    folder = fake_job(registry, tmp_path, "hostile", "convnet_small")
    marker = tmp_path / "code-ran"
    torch.save({"weight": _Payload(marker)}, folder / "encoder.pt")
    assert "not a readable state dict" in one_line_error(capsys, export(str(folder), "-o", str(tmp_path / "x.pth")))
    assert not marker.exists()


def test_a_sweep_folder_stands_for_its_winner(run, tmp_path, capsys):
    winner = run["resnet18"]
    out = tmp_path / "out"
    shutil.copytree(winner, out / "artifacts" / winner.name)
    select = out / "artifacts" / "sweep"
    select.mkdir()
    (select / "selection.json").write_text(json.dumps({"winner": winner.name}))
    assert export(str(select), "--format", "torchvision", "-o", str(tmp_path / "w.pth")) == 0
    side = json.loads((tmp_path / "w.pth.json").read_text())
    assert (side["job_key"], side["chosen_by"]) == (winner.name, "sweep")
