"""The `pretrained` method: weights from files, artifact folders, other runs and torchvision's cache."""

from __future__ import annotations

import collections
import pickle

import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from ssl_bench.harness.cli import main
from ssl_bench.harness.errors import BenchError, DataError
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.backbones.resnet import ResNet18
from ssl_bench.plugins.methods.pretrained import Pretrained, load_into, strip_prefixes
from tests.conftest import TINY


def small_backbone(seed: int) -> ConvNetSmall:
    torch.manual_seed(seed)
    return ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))


def build(backbone, **params) -> Pretrained:
    return Pretrained(Pretrained.Params(**params), backbone, num_classes=10)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("prefix", ["", "module.", "module.encoder_q.", "online_network.encoder.", "backbone."])
@pytest.mark.parametrize("nest", [None, "state_dict", "model"])
def test_public_release_layouts_load_exactly(tmp_path, prefix, nest):
    source = small_backbone(0)
    weights = {prefix + k: v for k, v in source.state_dict().items()}
    weights[prefix + "fc.weight"] = torch.zeros(3, 3)  # a head the backbone does not have
    file = tmp_path / "release.pth.tar"
    torch.save(weights if nest is None else {nest: weights, "epoch": 100, "arch": "convnet"}, file)
    method = build(small_backbone(1), path=str(file))
    assert same_weights(method.backbone, source)
    assert method.report.unexpected == [prefix + "fc.weight"] and not method.report.missing


def test_torchvision_layout_fills_the_harness_resnet():
    torch.manual_seed(0)
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    backbone = ResNet18(ResNet18.Params())
    report = load_into(backbone, reference.state_dict(), prefix=None, strict=True, source="tv")
    assert report.unexpected == ["fc.weight", "fc.bias"]
    x = torch.randn(2, 3, 32, 32)
    reference.fc = torch.nn.Identity()
    assert torch.allclose(backbone.eval()(x), reference.eval()(x))


def test_missing_keys_are_reported_and_strict_fails(tmp_path):
    source = small_backbone(0).state_dict()
    partial = collections.OrderedDict((k, v) for k, v in source.items() if not k.startswith("features.2"))
    file = tmp_path / "partial.pt"
    torch.save(partial, file)
    with pytest.raises(DataError, match=r"partial\.pt: the file fills only 27\.6% .* below min_coverage = 0\.9"):
        build(small_backbone(1), path=str(file))  # a partial load is refused by default ...
    method = build(small_backbone(1), path=str(file), min_coverage=0.25)  # ... and accepted when asked for
    assert method.report.missing and all(k.startswith("features.2") for k in method.report.missing)
    assert "missing (left at random init)" in str(method.report) and "27.6% of the backbone" in str(method.report)
    with pytest.raises(BenchError, match="strict load"):
        build(small_backbone(1), path=str(file), strict=True)


def test_explicit_prefix_keeps_only_those_keys(tmp_path):
    a, b = small_backbone(0), small_backbone(5)
    file = tmp_path / "two.pt"
    torch.save({**{f"student.{k}": v for k, v in a.state_dict().items()},
                **{f"teacher.{k}": v for k, v in b.state_dict().items()}}, file)
    assert same_weights(build(small_backbone(1), path=str(file), prefix="teacher.").backbone, b)


def test_nothing_matching_is_an_error_naming_the_file(tmp_path):
    file = tmp_path / "other.pt"
    torch.save({"decoder.weight": torch.zeros(2, 2)}, file)
    with pytest.raises(BenchError, match=r"other\.pt: no tensor matches backbone 'convnet_small'"):
        build(small_backbone(1), path=str(file))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_files_that_would_run_code_are_refused(tmp_path, capsys):
    file = tmp_path / "evil.pt"
    with open(file, "wb") as f:
        pickle.dump({"conv.weight": Payload()}, f, protocol=2)
    with pytest.raises(BenchError, match="refused"):
        build(small_backbone(1), path=str(file))
    assert "this must never run" not in capsys.readouterr().out


def test_params_need_exactly_one_source():
    with pytest.raises(ValidationError, match="exactly one"):
        Pretrained.Params()
    with pytest.raises(ValidationError, match="exactly one"):
        Pretrained.Params(path="a.pt", torchvision="ResNet18_Weights.IMAGENET1K_V1")


def test_torchvision_weights_absent_from_the_hub_cache_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(BenchError, match="not on disk: expected .*checkpoints/resnet18-"):
        build(ResNet18(ResNet18.Params()), torchvision="ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(BenchError, match="unknown torchvision weights"):
        build(ResNet18(ResNet18.Params()), torchvision="NoSuch_Weights.X")


def test_torchvision_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from torchvision.models import ResNet18_Weights, resnet18

    torch.manual_seed(3)
    reference = resnet18(weights=None)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1])
    method = build(ResNet18(ResNet18.Params()), torchvision="ResNet18_Weights.IMAGENET1K_V1")
    assert torch.equal(method.backbone.get_submodule("net").conv1.weight, reference.conv1.weight)


def test_prefix_stripping_handles_runs_of_prefixes():
    assert strip_prefixes("module.encoder_q.conv1.weight") == "conv1.weight"
    assert strip_prefixes("net.layer1.0.bn1.weight") == "layer1.0.bn1.weight"
    assert strip_prefixes("encoder_k.conv1.weight") == "encoder_k.conv1.weight"


@pytest.mark.usefixtures("one_thread")
def test_another_runs_encoder_scores_the_same(tmp_path, write_toml, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    first = tmp_path / "first"
    assert main(["run", str(write_toml(TINY, "first.toml")), "--out", str(first), "--no-progress"]) == 0
    second_spec = TINY.replace('name = "tiny"', 'name = "reuse"').split("[[methods]]")[0] + f"""
[[methods]]
name = "pretrained"
label = "SimCLR from the first run"
params = {{ path = "{first}", label = "simclr" }}

[[evaluations]]
name = "knn"
params = {{ k = 5 }}
"""
    second = tmp_path / "second"
    assert main(["run", str(write_toml(second_spec, "second.toml")), "--out", str(second), "--no-progress"]) == 0

    def knn_top1(out, label):
        rows = [r for f in (out / "results").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
        return [r["value"] for r in rows if r["label"] == label and r["evaluator"] == "knn" and r["metric"] == "top1"]

    assert knn_top1(second, "SimCLR from the first run") == knn_top1(first, "simclr") != []


def test_replacing_the_checkpoint_file_changes_the_job_key(tmp_path, write_toml):
    import os

    from ssl_bench.harness.pipeline.plan import make_plan
    from ssl_bench.harness.pipeline.specs import load_benchmark
    from ssl_bench.harness.plugins import collect, make_plugin_manager

    registry = collect(make_plugin_manager(load_entrypoints=False))
    file = tmp_path / "enc.pt"
    torch.save(small_backbone(0).state_dict(), file)
    spec = (TINY.split("[[methods]]")[0] + f'[[methods]]\nname = "pretrained"\nparams = {{ path = "{file}" }}\n\n'
            '[[evaluations]]\nname = "knn"\n')

    def key():
        return make_plan(load_benchmark(write_toml(spec), registry=registry), registry).pretrain_jobs[0].key

    first = key()
    assert key() == first
    torch.save(small_backbone(1).state_dict(), file)
    os.utime(file, ns=(1, 10**18))
    assert key() != first


def test_a_label_shared_by_several_benchmarks_of_one_folder_needs_benchmark(tmp_path):
    from ssl_bench.harness.record.results import write_rows
    from ssl_bench.plugins.methods.pretrained import resolve_path

    for benchmark, key, batch in (("methods", "aaa", 256), ("batches", "bbb", 64)):
        (tmp_path / "artifacts" / key).mkdir(parents=True)
        torch.save(small_backbone(0).state_dict(), tmp_path / "artifacts" / key / "encoder.pt")
        write_rows(tmp_path / "results" / f"{key}.parquet", [{
            "benchmark": benchmark, "job_key": f"eval-{key}", "label": "SimCLR", "seed": 0, "pretrain_key": key,
            "pretrain_dataset": "cifar10",
            "pretrain_batch_size": batch, "pretrain_steps": 100, "metric": "top1", "value": 1.0}])
    params = Pretrained.Params(path=str(tmp_path), label="SimCLR")
    with pytest.raises(BenchError, match=r"label 'SimCLR' names 2 pretrainings \(benchmark batches: cifar10, "
                                         r"batch 64, 100 steps; benchmark methods: .*\); set `benchmark`"):
        resolve_path(params)
    chosen = Pretrained.Params(path=str(tmp_path), label="SimCLR", benchmark="methods")
    assert resolve_path(chosen) == tmp_path / "artifacts" / "aaa" / "encoder.pt"
    with pytest.raises(BenchError, match="no results for label 'SimCLR' of benchmark nope"):
        resolve_path(Pretrained.Params(path=str(tmp_path), label="SimCLR", benchmark="nope"))
