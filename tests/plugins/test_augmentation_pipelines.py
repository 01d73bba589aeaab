"""Built-in augmentation pipelines: registration, params, per-sample randomness, seeds."""

from __future__ import annotations

import pluggy
import pytest
import torch
from pydantic import ValidationError
from torch import Tensor

import harness.hookspecs
import harness.plugins
from harness import Augmentation
from plugins.augmentations import crop_flip, simclr
from plugins.augmentations.crop_flip import CropFlip, Identity
from plugins.augmentations.simclr import SimCLRAugmentation

PIPELINES: dict[str, type[Augmentation]] = {"simclr": SimCLRAugmentation, "crop_flip": CropFlip, "identity": Identity}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 16, h: int = 32, w: int = 32, seed: int = 0) -> Tensor:
    return torch.rand(b, 3, h, w, generator=gen(seed))


def build(name: str, **params: object) -> Augmentation:
    cls = PIPELINES[name]
    return cls(cls.Params(**params))


def test_pipelines_register_through_the_hook() -> None:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(harness.hookspecs)
    pm.register(simclr, name="plugins.augmentations.simclr")
    pm.register(crop_flip, name="plugins.augmentations.crop_flip")
    pm.check_pending()
    registry = harness.plugins.collect(pm)
    assert registry.names("augmentations") == ["crop_flip", "identity", "simclr"]
    assert registry.get("augmentations", "simclr") is SimCLRAugmentation
    assert registry.entry("augmentations", "identity").plugin == "plugins.augmentations.crop_flip"


@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_keeps_shape_dtype_range_and_device(name: str) -> None:
    x = images(h=32, w=40)
    y = build(name)(x, generator=gen(0))
    assert y.shape == ((16, 3, 32, 32) if name != "identity" else x.shape)
    assert y.dtype == torch.float32 and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", ["simclr", "crop_flip"])
def test_pipeline_size_param_sets_the_output_side(name: str) -> None:
    assert build(name, size=24)(images(), generator=gen(0)).shape == (16, 3, 24, 24)


@pytest.mark.parametrize("name", ["simclr", "crop_flip"])
def test_pipeline_is_per_sample_and_seed_deterministic(name: str) -> None:
    aug = build(name)
    x = images(b=1).expand(16, -1, -1, -1).contiguous()
    y = aug(x, generator=gen(3))
    assert len({tuple(v.flatten()[::5].tolist()) for v in y}) == 16  # every copy differs
    assert torch.equal(y, aug(x, generator=gen(3)))
    assert not torch.equal(y, aug(x, generator=gen(4)))


def test_two_calls_on_one_generator_give_two_different_views() -> None:
    aug, g, x = build("simclr"), gen(0), images()
    assert not torch.equal(aug(x, generator=g), aug(x, generator=g))


def test_simclr_without_colour_is_crop_flip_with_the_same_random_stream() -> None:
    x = images()
    plain = build("simclr", crop_scale_min=0.35, jitter_p=0.0, grayscale_p=0.0)(x, generator=gen(9))
    assert torch.equal(plain, build("crop_flip")(x, generator=gen(9)))


def test_simclr_jitter_and_grayscale_act_on_every_sample_when_p_is_one() -> None:
    x = images()
    crop_only = build("simclr", jitter_p=0.0, grayscale_p=0.0)(x, generator=gen(1))
    jittered = build("simclr", jitter_p=1.0, grayscale_p=0.0)(x, generator=gen(1))
    assert all(not torch.equal(a, b) for a, b in zip(jittered, crop_only))  # same crops, new colours
    grey = build("simclr", jitter_p=1.0, grayscale_p=1.0)(x, generator=gen(1))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_simclr_defaults_follow_the_cifar_recipe() -> None:
    p = SimCLRAugmentation.Params()
    assert (p.crop_scale_min, p.jitter_strength, p.jitter_p, p.grayscale_p, p.flip_p, p.size) == (
        0.08, 0.5, 0.8, 0.2, 0.5, None,
    )
    assert CropFlip.Params().crop_scale_min == 0.35


def test_identity_returns_its_input() -> None:
    x = images()
    assert build("identity")(x, generator=gen(0)) is x


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("simclr", {"crop_scale_min": 0.0}),
        ("simclr", {"jitter_p": 1.5}),
        ("simclr", {"jitter_strength": -0.1}),
        ("simclr", {"size": 0}),
        ("simclr", {"temperature": 0.5}),
        ("crop_flip", {"flip_p": -0.1}),
        ("crop_flip", {"crop_scale_min": 1.2}),
        ("identity", {"size": 32}),
    ],
)
def test_params_reject_bad_values_and_unknown_keys(name: str, params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PIPELINES[name].Params(**params)


@pytest.mark.parametrize("name", PIPELINES)
def test_every_param_field_is_documented(name: str) -> None:
    for field_name, field in PIPELINES[name].Params.model_fields.items():
        assert field.description, f"{name}.Params.{field_name} has no docstring"
