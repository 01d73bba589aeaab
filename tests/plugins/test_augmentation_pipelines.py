"""Built-in augmentation pipelines: registration, params, per-sample randomness, seeds."""

from __future__ import annotations

import pluggy
import pytest
import torch
from pydantic import ValidationError
from torch import Tensor

import ssl_bench.harness.hookspecs
import ssl_bench.harness.plugins
from ssl_bench.harness import Augmentation
from ssl_bench.harness.kit import augment as A
from ssl_bench.plugins.augmentations import byol, crop_flip, jigsaw, moco_v2, rotation, simclr
from ssl_bench.plugins.augmentations.byol import BYOLAugmentation, BYOLPrimeAugmentation
from ssl_bench.plugins.augmentations.crop_flip import CropFlip, Eval, Identity
from ssl_bench.plugins.augmentations.jigsaw import Jigsaw2x2, SimCLRJigsaw2x2
from ssl_bench.plugins.augmentations.moco_v2 import MoCoV2Augmentation
from ssl_bench.plugins.augmentations.rotation import RotationAugmentation
from ssl_bench.plugins.augmentations.simclr import SimCLRAugmentation

PIPELINES: dict[str, type[Augmentation]] = {
    cls.name: cls
    for cls in (
        SimCLRAugmentation, CropFlip, Identity, Eval, Jigsaw2x2, SimCLRJigsaw2x2, BYOLAugmentation,
        BYOLPrimeAugmentation, MoCoV2Augmentation, RotationAugmentation,
    )
}
KEEPS_SIZE = {"identity", "eval", "jigsaw_2x2", "rotation"}
"""Pipelines whose output has the input's shape (the others crop to the input height)."""
RANDOM = sorted(set(PIPELINES) - {"identity", "eval"})
MODULES = (simclr, crop_flip, jigsaw, byol, moco_v2, rotation)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 16, h: int = 32, w: int = 32, seed: int = 0) -> Tensor:
    return torch.rand(b, 3, h, w, generator=gen(seed))


def build(name: str, **params: object) -> Augmentation:
    cls = PIPELINES[name]
    return cls(cls.Params(**params))


def test_pipelines_register_through_the_hook() -> None:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(ssl_bench.harness.hookspecs)
    for module in MODULES:
        pm.register(module, name=module.__name__)
    pm.check_pending()
    registry = ssl_bench.harness.plugins.collect(pm)
    assert registry.names("augmentations") == sorted(PIPELINES)
    for name, cls in PIPELINES.items():
        assert registry.get("augmentations", name) is cls
    assert registry.entry("augmentations", "identity").plugin == "ssl_bench.plugins.augmentations.crop_flip"
    assert registry.entry("augmentations", "simclr+jigsaw_2x2").plugin == "ssl_bench.plugins.augmentations.jigsaw"
    assert registry.entry("augmentations", "byol_prime").plugin == "ssl_bench.plugins.augmentations.byol"


def test_every_pipeline_module_is_a_default_plugin() -> None:
    assert {m.__name__ for m in MODULES} <= set(ssl_bench.harness.plugins.DEFAULT_PLUGINS)


@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_keeps_shape_dtype_range_and_device(name: str) -> None:
    x = images(h=32, w=32 if name == "rotation" else 40)
    y = build(name)(x, generator=gen(0))
    assert y.shape == (x.shape if name in KEEPS_SIZE else (16, 3, 32, 32))
    assert y.dtype == torch.float32 and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", ["simclr", "crop_flip", "byol", "byol_prime", "moco_v2", "eval"])
def test_pipeline_size_param_sets_the_output_side(name: str) -> None:
    assert build(name, size=24)(images(h=32, w=40), generator=gen(0)).shape == (16, 3, 24, 24)


@pytest.mark.parametrize("name", RANDOM)
def test_pipeline_is_per_sample_and_seed_deterministic(name: str) -> None:
    aug = build(name)
    x = images(b=1).expand(16, -1, -1, -1).contiguous()
    y = aug(x, generator=gen(3))
    distinct = len({tuple(v.flatten()[::5].tolist()) for v in y})
    assert distinct >= (3 if name == "rotation" else 8 if name == "jigsaw_2x2" else 16)  # copies differ
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
        ("eval", {"size": 0}),
        ("jigsaw_2x2", {"p": 1.5}),
        ("simclr+jigsaw_2x2", {"simclr": {"temperature": 0.5}}),
        ("simclr+jigsaw_2x2", {"jigsaw_p": -1}),
        ("byol", {"blur_sigma_min": 3.0}),
        ("byol_prime", {"solarize_p": 2.0}),
        ("byol", {"hue": 0.6}),
        ("moco_v2", {"blur_kernel_fraction": 0.0}),
        ("rotation", {"p": 0.5}),
    ],
)
def test_params_reject_bad_values_and_unknown_keys(name: str, params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PIPELINES[name].Params(**params)


@pytest.mark.parametrize("name", PIPELINES)
def test_every_param_field_is_documented(name: str) -> None:
    for field_name, field in PIPELINES[name].Params.model_fields.items():
        assert field.description, f"{name}.Params.{field_name} has no docstring"


# ---------------------------------------------------------------------------- new pipelines


def test_jigsaw_2x2_pipeline_is_the_op() -> None:
    x = images()
    assert torch.equal(build("jigsaw_2x2")(x, generator=gen(2)), A.jigsaw_2x2(x, generator=gen(2)))
    assert torch.equal(build("jigsaw_2x2", p=0.0)(x, generator=gen(2)), x)


def test_simclr_jigsaw_is_simclr_then_the_shuffle_on_one_stream() -> None:
    x = images()
    aug = build("simclr+jigsaw_2x2", simclr={"jitter_strength": 1.0})
    assert aug.params.simclr == SimCLRAugmentation.Params(jitter_strength=1.0)
    g = gen(4)
    expected = A.jigsaw_2x2(build("simclr", jitter_strength=1.0)(x, generator=g), generator=g)
    assert torch.equal(aug(x, generator=gen(4)), expected)
    y = aug(x, generator=gen(4))
    plain = build("simclr", jitter_strength=1.0)(x, generator=gen(4))
    assert torch.equal(y.flatten(1).sort(1).values, plain.flatten(1).sort(1).values)


def test_byol_defaults_follow_table_6() -> None:
    t, t_prime = BYOLAugmentation.Params(), BYOLPrimeAugmentation.Params()
    for p in (t, t_prime):
        assert (p.crop_scale_min, p.flip_p, p.jitter_p, p.grayscale_p) == (0.08, 0.5, 0.8, 0.2)
        assert (p.brightness, p.contrast, p.saturation, p.hue) == (0.4, 0.4, 0.2, 0.1)
        assert (p.blur_sigma_min, p.blur_sigma_max, p.blur_kernel_fraction) == (0.1, 2.0, 0.1)
    assert (t.blur_p, t.solarize_p) == (1.0, 0.0)
    assert (t_prime.blur_p, t_prime.solarize_p) == (0.1, 0.2)


def test_byol_t_always_blurs_and_t_prime_solarizes_some_samples() -> None:
    x = images(b=32)
    no_colour = {"jitter_p": 0.0, "grayscale_p": 0.0}
    blurred = build("byol", **no_colour)(x, generator=gen(1))
    sharp = build("byol", **no_colour, blur_p=0.0)(x, generator=gen(1))
    changed = sum(not torch.equal(a, b) for a, b in zip(blurred, sharp))
    assert changed >= 28  # sigma near 0.1 gives a 3 px kernel of (~1e-22, 1, ~1e-22): no change in float32
    assert build("byol", **no_colour, blur_p=0.0, solarize_p=1.0)(x, generator=gen(1)).ne(sharp).any()
    prime = build("byol_prime", **no_colour, blur_p=0.0)(x, generator=gen(1))
    solarized = torch.tensor([torch.equal(a, A.solarize(b)) for a, b in zip(prime, sharp)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(prime, sharp)])
    assert (solarized | kept).all() and 0 < int(solarized.sum()) < 32


def test_moco_v2_defaults_follow_the_paper() -> None:
    p = MoCoV2Augmentation.Params()
    assert (p.crop_scale_min, p.brightness, p.contrast, p.saturation, p.hue) == (0.2, 0.4, 0.4, 0.4, 0.1)
    assert (p.jitter_p, p.grayscale_p, p.blur_p, p.flip_p) == (0.8, 0.2, 0.5, 0.5)


def test_rotation_pipeline_returns_the_rotated_images_of_the_op() -> None:
    x = images()
    expected, _ = A.random_rotation(x, generator=gen(0))
    assert torch.equal(build("rotation")(x, generator=gen(0)), expected)


def test_eval_is_the_identity_at_native_size_and_resizes_then_centre_crops() -> None:
    x = images(h=32, w=40)
    assert build("eval")(x, generator=gen(0)) is x
    y = build("eval", size=16)(x, generator=gen(0))
    assert y.shape == (16, 3, 16, 16) and y.min() >= 0 and y.max() <= 1
    half = torch.nn.functional.interpolate(x, size=(16, 20), mode="bilinear", antialias=True)
    torch.testing.assert_close(y, half[..., 2:18].clamp(0, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_runs_on_cuda_with_a_cuda_generator(name: str) -> None:
    x = images().cuda()
    g = torch.Generator(device="cuda")
    y = build(name)(x, generator=g.manual_seed(0))
    assert y.device == x.device and y.dtype == torch.float32
    assert torch.equal(y, build(name)(x, generator=g.manual_seed(0)))
