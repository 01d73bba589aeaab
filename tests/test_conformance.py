"""The conformance suite over every registered component (built-in and installed)."""

from __future__ import annotations

import pytest

from harness.plugins import collect, make_plugin_manager
from harness.testing import check_augmentation, check_backbone, check_evaluator, check_method

REGISTRY = collect(make_plugin_manager(load_entrypoints=False))


@pytest.mark.parametrize("name", REGISTRY.names("methods"))
def test_method(name):
    check_method(REGISTRY, name)


@pytest.mark.parametrize("name", REGISTRY.names("methods"))
@pytest.mark.parametrize("backbone", [b for b in REGISTRY.names("backbones") if b != "convnet_small"])
def test_method_builds_on_every_backbone(name, backbone):
    from harness.testing import build_method

    method = build_method(REGISTRY, name, backbone)
    assert method.backbone.feature_dim > 0


@pytest.mark.parametrize("name", REGISTRY.names("augmentations"))
def test_augmentation(name):
    check_augmentation(REGISTRY, name)


@pytest.mark.parametrize("name", REGISTRY.names("backbones"))
def test_backbone(name):
    check_backbone(REGISTRY, name)


@pytest.mark.parametrize("name", REGISTRY.names("evaluators"))
def test_evaluator(name):
    check_evaluator(REGISTRY, name)
