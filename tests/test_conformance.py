"""The conformance suite over every registered component (built-in and installed)."""

from __future__ import annotations

import importlib.util

import pytest

from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.testing import SMALL_VIT, check_augmentation, check_backbone, check_evaluator, check_method

REGISTRY = collect(make_plugin_manager(load_entrypoints=False))
FAMILY_EXAMPLES = {"timm:": "timm:test_resnet"}
NEEDS_A_FILE = {"pretrained"}
"""Methods that cannot be built from default params (tested in their own files)."""
METHODS = [m for m in REGISTRY.names("methods") if m not in NEEDS_A_FILE]
"""A small member standing in for each backbone family in the suite."""
NEEDS_A_VIT = {"mae": "vit_tiny_cifar", "simmim": "vit_tiny_cifar"}
"""Methods that refuse other backbones: checked on this one (elsewhere they must refuse in one line)."""


def backbone_names() -> list[str]:
    """Every registered backbone, with each family replaced by its example member when it can be built."""
    names = []
    for name in REGISTRY.names("backbones"):
        if name.endswith(":"):
            if name == "timm:" and importlib.util.find_spec("timm") is None:
                continue
            name = FAMILY_EXAMPLES[name]
        names.append(name)
    return names


@pytest.mark.parametrize("name", METHODS)
def test_method(name):
    if name in NEEDS_A_VIT:
        check_method(REGISTRY, name, backbone=NEEDS_A_VIT[name], backbone_params=SMALL_VIT)
    else:
        check_method(REGISTRY, name)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("backbone", [b for b in backbone_names() if b != "convnet_small"])
def test_method_builds_on_every_backbone(name, backbone):
    from ssl_bench.harness.errors import BenchError
    from ssl_bench.harness.testing import build_method

    if name in NEEDS_A_VIT and backbone != NEEDS_A_VIT[name]:
        with pytest.raises(BenchError, match=f"method '{name}' needs a vision transformer.*got '{backbone}'"):
            build_method(REGISTRY, name, backbone)
        return
    method = build_method(REGISTRY, name, backbone)
    assert method.backbone.feature_dim > 0


@pytest.mark.parametrize("name", REGISTRY.names("augmentations"))
def test_augmentation(name):
    check_augmentation(REGISTRY, name)


@pytest.mark.parametrize("name", backbone_names())
def test_backbone(name):
    check_backbone(REGISTRY, name)


EVALUATOR_PARAMS = {"detection": {"steps": 4, "batch_size": 4, "fpn_channels": 16, "box_head_dim": 32,
                                   "rpn_pre_nms_top_n": 100, "rpn_post_nms_top_n": 50, "rois_per_image": 32}}
"""Evaluators whose defaults train at paper scale: a few steps of a small model instead."""


@pytest.mark.parametrize("name", REGISTRY.names("evaluators"))
def test_evaluator(name):
    check_evaluator(REGISTRY, name, EVALUATOR_PARAMS.get(name))
