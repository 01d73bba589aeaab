"""Tests of the built-in backbone plugins: convnet_small and the ResNets."""

from __future__ import annotations

import pluggy
import pytest
import torch
from pydantic import ValidationError
from torch import nn

import ssl_bench.harness.hookspecs
import ssl_bench.harness.plugins
from ssl_bench.harness.components import Backbone
from ssl_bench.plugins.backbones import convnet, resnet
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.backbones.resnet import ResNet18, ResNet18Cifar, ResNet50, ResNet50Cifar

ALL = [ConvNetSmall, ResNet18, ResNet18Cifar, ResNet50, ResNet50Cifar]
FEATURE_DIMS = {"convnet_small": 128, "resnet18": 512, "resnet18_cifar": 512, "resnet50": 2048, "resnet50_cifar": 2048}


def test_registration() -> None:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(ssl_bench.harness.hookspecs)
    pm.register(convnet)
    pm.register(resnet)
    registry = ssl_bench.harness.plugins.collect(pm)
    assert registry.names("backbones") == sorted(FEATURE_DIMS)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_forward_shape_and_gradients(cls: type[Backbone]) -> None:
    torch.manual_seed(0)
    model = cls(cls.Params())
    assert model.feature_dim == FEATURE_DIMS[cls.name]
    for size in (32, 64):
        model.zero_grad()
        x = torch.randn(2, 3, size, size, requires_grad=True)
        features = model(x)
        assert features.shape == (2, model.feature_dim) and torch.isfinite(features).all()
        features.pow(2).mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("size", [7, 20, 45])
def test_convnet_accepts_any_size(size: int) -> None:
    model = ConvNetSmall(ConvNetSmall.Params(width=8, stages=3, blocks_per_stage=2))
    assert model.feature_dim == 32
    assert model(torch.randn(2, 3, size, size)).shape == (2, 32)


def test_convnet_params() -> None:
    with pytest.raises(ValidationError):
        ConvNetSmall.Params(width=0)
    with pytest.raises(ValidationError):
        ConvNetSmall.Params(depth=3)  # unknown field
    assert ConvNetSmall(ConvNetSmall.Params(width=16, stages=2)).feature_dim == 32


def test_resnet_stems() -> None:
    imagenet, cifar = ResNet18(ResNet18.Params()), ResNet18Cifar(ResNet18Cifar.Params())
    assert imagenet.net.conv1.kernel_size == (7, 7) and isinstance(imagenet.net.maxpool, nn.MaxPool2d)
    assert cifar.net.conv1.kernel_size == (3, 3) and cifar.net.conv1.stride == (1, 1)
    assert isinstance(cifar.net.maxpool, nn.Identity) and isinstance(cifar.net.fc, nn.Identity)


def test_resnet_zero_init_residual() -> None:
    model = ResNet18Cifar(ResNet18Cifar.Params(zero_init_residual=True))
    assert all(block.bn2.weight.abs().sum() == 0 for block in model.net.layer1)
    default = ResNet18Cifar(ResNet18Cifar.Params())
    assert all(block.bn2.weight.abs().sum() > 0 for block in default.net.layer1)
