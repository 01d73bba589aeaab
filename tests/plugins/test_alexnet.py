"""Tests of the alexnet_bn backbone: shapes at any size, both stems, frozen stages."""

from __future__ import annotations

import pluggy
import pytest
import torch
from pydantic import ValidationError
from torch import nn

import ssl_bench.harness.hookspecs
import ssl_bench.harness.plugins
from ssl_bench.plugins.backbones import alexnet
from ssl_bench.plugins.backbones.alexnet import AlexNetBN

SMALL_WIDTHS = (8, 16, 16, 16, 12)


def test_registration() -> None:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(ssl_bench.harness.hookspecs)
    pm.register(alexnet)
    assert ssl_bench.harness.plugins.collect(pm).names("backbones") == ["alexnet_bn"]


@pytest.mark.parametrize("stem", ["small", "imagenet"])
@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_gradients(stem: str, size: int) -> None:
    torch.manual_seed(0)
    model = AlexNetBN(AlexNetBN.Params(stem=stem))
    assert model.feature_dim == 256
    x = torch.randn(2, 3, size, size, requires_grad=True)
    features = model(x)
    assert features.shape == (2, 256) and torch.isfinite(features).all()
    features.pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("size", [1, 8, 17])
def test_small_stem_accepts_any_size(size: int) -> None:
    model = AlexNetBN(AlexNetBN.Params(widths=SMALL_WIDTHS)).eval()
    assert model.feature_dim == 12
    assert model(torch.randn(2, 3, size, size)).shape == (2, 12)


def test_stems() -> None:
    small, imagenet = AlexNetBN(AlexNetBN.Params()), AlexNetBN(AlexNetBN.Params(stem="imagenet"))
    assert small.stages[0][0].kernel_size == (5, 5) and small.stages[0][0].stride == (1, 1)
    assert imagenet.stages[0][0].kernel_size == (11, 11) and imagenet.stages[0][0].stride == (4, 4)
    assert [s[0].out_channels for s in imagenet.stages] == [96, 256, 384, 384, 256]
    assert all(isinstance(s[1], nn.BatchNorm2d) for s in small.stages)
    assert sum(isinstance(m, nn.MaxPool2d) for m in small.modules()) == 2


def test_params() -> None:
    for bad in ({"freeze_stages": 6}, {"freeze_stages": -1}, {"stem": "cifar"}, {"widths": (1, 2, 3)}):
        with pytest.raises(ValidationError):
            AlexNetBN.Params(**bad)
    with pytest.raises(ValueError):
        AlexNetBN(AlexNetBN.Params(widths=(8, 0, 8, 8, 8)))


def test_frozen_stages_get_no_gradient_and_keep_their_statistics() -> None:
    torch.manual_seed(0)
    model = AlexNetBN(AlexNetBN.Params(widths=SMALL_WIDTHS, freeze_stages=3))
    model.train()
    frozen = [m for stage in model.stages[:3] for m in stage.modules()]
    free = [m for stage in model.stages[3:] for m in stage.modules()]
    frozen_params = [p for m in frozen for p in m.parameters(recurse=False)]
    free_params = [p for m in free for p in m.parameters(recurse=False)]
    assert not any(m.training for m in frozen) and all(m.training for m in free)
    assert not any(p.requires_grad for p in frozen_params) and all(p.requires_grad for p in free_params)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(4, 3, 32, 32) * 3 + 1).sum().backward()
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before[:3], bns[:3]))
    assert all(not torch.equal(b, bn.running_mean) for b, bn in zip(before[3:], bns[3:]))
    assert all(p.grad is None for p in frozen_params)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in free_params)
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert not any(m.training for m in frozen) and all(m.training for m in free)


def test_no_freezing_by_default() -> None:
    model = AlexNetBN(AlexNetBN.Params(widths=SMALL_WIDTHS)).train()
    assert all(m.training for m in model.modules()) and all(p.requires_grad for p in model.parameters())
