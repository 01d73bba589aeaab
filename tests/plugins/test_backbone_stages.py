"""Stages of every backbone, freezing the first K, and the timm: family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_bench.harness.errors import BenchError, UnknownComponentError
from ssl_bench.harness.plugins import collect, make_plugin_manager

REGISTRY = collect(make_plugin_manager(load_entrypoints=False))
SMALL = {"convnet_small": {"width": 4}, "alexnet_bn": {"widths": (8, 8, 8, 8, 8)}}
STAGES = {"convnet_small": 4, "alexnet_bn": 5, "resnet18": 5, "resnet18_cifar": 5, "resnet50": 5, "resnet50_cifar": 5}


def build(name: str):
    cls = REGISTRY.get("backbones", name)
    return cls(cls.Params.model_validate(SMALL.get(name, {})))


def parameters_of(modules: list[nn.Module]) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stages_partition_the_parameters_in_order(name):
    model = build(name)
    stages = model.stage_modules()
    assert len(stages) == STAGES[name]
    seen: set[int] = set()
    for stage in stages:
        ids = parameters_of([stage])
        assert ids and not ids & seen, "every stage has its own parameters"
        seen |= ids
    head_free = {id(p) for p in model.parameters()} - seen
    assert not head_free, "convolutional backbones: every parameter belongs to a stage"


@pytest.mark.parametrize("name", ["convnet_small", "resnet18_cifar", "alexnet_bn"])
def test_freeze_first_k_stages_stops_gradients_and_batch_norm_updates(name):
    torch.manual_seed(0)
    model = build(name)
    model.freeze_stages(2)
    model.train()
    frozen, trainable = model.stage_modules()[:2], model.stage_modules()[2:]
    bn_before = [m.running_mean.clone() for s in frozen for m in s.modules() if isinstance(m, nn.BatchNorm2d)]
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in parameters_of_list(frozen))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters_of_list(trainable))
    bn_after = [m.running_mean for s in frozen for m in s.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn_before and all(torch.equal(a, b) for a, b in zip(bn_before, bn_after))
    live = [m for s in trainable for m in s.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.training for m in live)


def parameters_of_list(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def test_freezing_more_stages_than_exist_names_the_backbone():
    with pytest.raises(BenchError, match="convnet_small.*4 stage"):
        build("convnet_small").freeze_stages(5)


timm = pytest.importorskip("timm")


@pytest.mark.parametrize("member,stages", [("test_resnet", 5), ("test_convnext", 4), ("test_vit", 6)])
def test_timm_family_builds_any_model_without_weights(member, stages):
    cls = REGISTRY.get("backbones", f"timm:{member}")
    assert cls.name == f"timm:{member}" and REGISTRY.get("backbones", f"timm:{member}") is cls
    kwargs = {"img_size": 32} if "vit" in member else {}
    model = cls(cls.Params(model_kwargs=kwargs)).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, model.feature_dim)
    assert len(model.stage_modules()) == stages
    model.freeze_stages(1)
    assert not any(p.requires_grad for p in model.stage_modules()[0].parameters())


def test_unknown_timm_model_suggests_the_closest():
    with pytest.raises(UnknownComponentError, match="Did you mean 'timm:resnet18'"):
        REGISTRY.get("backbones", "timm:resnet18x")
    assert REGISTRY.entry("backbones", "timm:resnet18").plugin == "ssl_bench.plugins.backbones.timm_models"
