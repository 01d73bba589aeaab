"""[pretrain] precision: what ``auto`` resolves to, that a bf16 step really computes in bf16, and that the
resolved precision reaches the result rows."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.harness.pipeline import precision as precision_module
from ssl_bench.harness.pipeline.precision import autocast, channels_last, resolve_precision
from ssl_bench.harness.pipeline.specs import ComponentRef, DatasetRef, OptimizerSpec, PretrainSpec
from ssl_bench.harness.pipeline.train import pretrain
from ssl_bench.harness.testing import build_method, tiny_images

CPU = torch.device("cpu")


def spec(**kw):
    kw = {"epochs": 1, "batch_size": 8, "optimizer": OptimizerSpec(lr=0.05)} | kw
    return PretrainSpec(dataset=DatasetRef(name="x"), backbone=ComponentRef(name="convnet_small"), **kw)


def test_auto_is_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"  # an explicit choice always wins
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"


def test_bf16_autocast_runs_convolutions_in_bf16_and_fp32_does_not():
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    (x,) = channels_last([torch.randn(2, 3, 8, 8)])
    assert x.is_contiguous(memory_format=torch.channels_last)
    with autocast("bf16", CPU):
        assert conv(x).dtype == torch.bfloat16
    with autocast("fp32", CPU):
        assert conv(x).dtype == torch.float32


def test_channels_last_leaves_tensors_that_are_not_image_batches_alone():
    flat = torch.randn(4, 3)
    assert channels_last([flat])[0] is flat


@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_pretraining_records_the_precision_it_computed_in(asked, tmp_path, bench_registry):
    method = build_method(bench_registry, "simclr")
    views = {n: bench_registry.get("augmentations", n)(bench_registry.get("augmentations", n).Params())
             for n in method.views}
    stats = pretrain(method, views, tiny_images(16), spec(precision=asked), seed=0, device=CPU,
                     workdir=tmp_path, progress=False)
    assert stats.precision == asked and stats.steps == 2
    assert all(torch.isfinite(torch.tensor(stats.epoch_losses)))
    assert all(p.dtype == torch.float32 for p in method.parameters())  # mixed precision: weights stay fp32


def test_precision_is_part_of_the_pretraining_key(bench_registry):
    from ssl_bench.harness.pipeline.plan import make_plan
    from ssl_bench.harness.pipeline.specs import BenchmarkSpec

    def key(precision):
        bench = BenchmarkSpec.model_validate({
            "name": "p", "seeds": [0],
            "pretrain": {"dataset": {"name": "shapes"}, "backbone": {"name": "convnet_small"}, "epochs": 1,
                         "precision": precision},
            "methods": [{"name": "simclr"}], "evaluations": [{"name": "knn"}]})
        return make_plan(bench, bench_registry).pretrain_jobs[0].key

    assert len({key("auto"), key("fp32"), key("bf16")}) == 3
