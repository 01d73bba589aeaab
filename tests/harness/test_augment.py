"""Batched augmentation ops: per-sample randomness, seeds, and agreement with torchvision's per-image ops."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from ssl_bench.harness.kit import augment as A

Op = Callable[[Tensor, torch.Generator], Tensor]

OPS: dict[str, Op] = {
    "random_resized_crop": lambda x, g: A.random_resized_crop(x, 24, generator=g, flip_p=0.5),
    "horizontal_flip": lambda x, g: A.horizontal_flip(x, generator=g),
    "color_jitter": lambda x, g: A.color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=g),
    "random_grayscale": lambda x, g: A.random_grayscale(x, p=0.5, generator=g),
    "random_gaussian_blur": lambda x, g: A.random_gaussian_blur(x, p=0.8, kernel_size=5, generator=g),
    "random_solarize": lambda x, g: A.random_solarize(x, p=0.5, generator=g),
    "jigsaw_2x2": lambda x, g: A.jigsaw_2x2(x, generator=g),
    "random_rotation": lambda x, g: A.random_rotation(x, generator=g)[0],
    "mask_region": lambda x, g: A.mask_region(x, generator=g, size_fraction=0.3, mode="random")[0],
}


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def images(b: int = 16, c: int = 3, h: int = 32, w: int = 32, seed: int = 0, quantized: bool = True) -> Tensor:
    """Random float images in [0, 1]; quantized to 8-bit levels so channel ties (hue edge cases) occur."""
    x = torch.rand(b, c, h, w, generator=gen(seed))
    return (x * 255).round() / 255 if quantized else x


# ---------------------------------------------------------------------------- generic properties


@pytest.mark.parametrize("name", OPS)
def test_op_shape_dtype_range_and_input_untouched(name: str) -> None:
    x = images()
    before = x.clone()
    y = OPS[name](x, gen(0))
    expected = (16, 3, 24, 24) if name == "random_resized_crop" else (16, 3, 32, 32)
    assert y.shape == expected
    assert y.dtype == torch.float32
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", OPS)
def test_op_is_seed_deterministic(name: str) -> None:
    x = images()
    assert torch.equal(OPS[name](x, gen(1)), OPS[name](x, gen(1)))
    assert not torch.equal(OPS[name](x, gen(1)), OPS[name](x, gen(2)))


@pytest.mark.parametrize("name", OPS)
def test_op_draws_parameters_per_sample(name: str) -> None:
    x = images(b=1, seed=3).expand(32, -1, -1, -1).contiguous()  # one image, 32 times
    y = OPS[name](x, gen(0))
    distinct = {tuple(row.flatten()[::7].tolist()) for row in y}
    assert len(distinct) >= 2, f"{name} gave every copy of one image the same parameters"


def test_float_boxes_and_half_size_work() -> None:
    x = images(b=4)
    boxes = torch.tensor([[0.5, 1.5, 10.25, 12.75]] * 4)
    assert A.crop_resize(x, boxes, (8, 16)).shape == (4, 3, 8, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", OPS)
def test_op_runs_on_cuda_with_cuda_generator(name: str) -> None:
    x = images().cuda()
    y = OPS[name](x, gen(0, "cuda"))
    assert y.device == x.device
    assert torch.equal(y, OPS[name](x, gen(0, "cuda")))


# ---------------------------------------------------------------------------- crop boxes


def test_crop_boxes_are_whole_pixels_inside_the_image_and_within_range() -> None:
    h, w = 32, 48
    boxes = A.sample_crop_boxes(4096, h, w, scale=(0.2, 0.9), ratio=(0.5, 2.0), generator=gen(0))
    assert boxes.shape == (4096, 4) and boxes.dtype == torch.float32
    top, left, bh, bw = boxes.unbind(1)
    assert torch.equal(boxes, boxes.round())
    assert (top >= 0).all() and (left >= 0).all() and (bh >= 1).all() and (bw >= 1).all()
    assert (top + bh <= h).all() and (left + bw <= w).all()
    # Rounding the sides to whole pixels widens the ranges a little.
    area = bh * bw / (h * w)
    assert area.min() > 0.2 * 0.8 and area.max() < 0.9 * 1.2
    aspect = bw / bh
    assert aspect.min() > 0.5 * 0.8 and aspect.max() < 2.0 * 1.2
    # Positions are spread over the image, not pinned to a corner or the centre.
    assert top.unique().numel() > 10 and left.unique().numel() > 10


def test_crop_boxes_fall_back_to_a_central_crop_when_nothing_fits() -> None:
    # A 32 x 8 image cannot hold a crop of 90 % of its area with a ratio in [3/4, 4/3].
    boxes = A.sample_crop_boxes(5, 32, 8, scale=(0.9, 1.0), generator=gen(0))
    expected = torch.tensor([[10.0, 0.0, 11.0, 8.0]]).expand(5, 4)  # width 8, height round(8 / 0.75)
    assert torch.equal(boxes, expected)


def test_crop_boxes_reject_bad_ranges() -> None:
    with pytest.raises(ValueError):
        A.sample_crop_boxes(2, 8, 8, scale=(0.5, 0.1), generator=gen(0))


# ---------------------------------------------------------------------------- crop + flip vs torchvision


def _tv_resized_crop(x: Tensor, box: Tensor, size: tuple[int, int], flip: bool) -> Tensor:
    t, l, h, w = (int(v) for v in box.tolist())
    out = TF.resized_crop(x, t, l, h, w, list(size), antialias=False)
    return TF.horizontal_flip(out) if flip else out


@pytest.mark.parametrize("size", [(32, 32), (24, 24), (40, 40), (20, 28)])
@pytest.mark.parametrize("scale", [(0.08, 0.3), (0.5, 1.0)])
def test_crop_resize_matches_torchvision_resized_crop(size: tuple[int, int], scale: tuple[float, float]) -> None:
    # Non-square input; up- and downsampling; tolerance covers float32 rounding of the grid only.
    x = images(b=24, h=30, w=36, quantized=False)
    boxes = A.sample_crop_boxes(24, 30, 36, scale=scale, generator=gen(5))
    flip = torch.arange(24) % 3 == 0
    ours = A.crop_resize(x, boxes, size, flip=flip)
    for i in range(24):
        ref = _tv_resized_crop(x[i], boxes[i], size, bool(flip[i]))
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_crop_resize_of_the_whole_image_is_the_identity_and_flip_mirrors() -> None:
    x = images(b=3, h=16, w=20)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 20.0]]).expand(3, 4)
    torch.testing.assert_close(A.crop_resize(x, boxes, (16, 20)), x, atol=1e-6, rtol=0)
    flip = torch.tensor([True, False, True])
    out = A.crop_resize(x, boxes, (16, 20), flip=flip)
    torch.testing.assert_close(out, torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), atol=1e-6, rtol=0)


def test_random_resized_crop_equals_boxes_then_crop_resize() -> None:
    x = images()
    g = gen(4)
    boxes = A.sample_crop_boxes(16, 32, 32, (0.3, 1.0), generator=g)
    flip = A.bernoulli_mask(16, 0.5, generator=g)
    expected = A.crop_resize(x, boxes, 20, flip=flip)
    assert torch.equal(A.random_resized_crop(x, 20, (0.3, 1.0), generator=gen(4), flip_p=0.5), expected)


def test_horizontal_flip_flips_some_samples_and_keeps_the_rest() -> None:
    x = images(b=64)
    y = A.horizontal_flip(x, p=0.5, generator=gen(0))
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(64)])
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    assert (flipped | kept).all()
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(A.horizontal_flip(x, p=0.0, generator=gen(0)), x)
    assert torch.equal(A.horizontal_flip(x, p=1.0, generator=gen(0)), x.flip(-1))


# ---------------------------------------------------------------------------- colour vs torchvision

ADJUST = {
    "brightness": (A.adjust_brightness, TF.adjust_brightness, (0.0, 2.0)),
    "contrast": (A.adjust_contrast, TF.adjust_contrast, (0.0, 2.0)),
    "saturation": (A.adjust_saturation, TF.adjust_saturation, (0.0, 2.0)),
    "hue": (A.adjust_hue, TF.adjust_hue, (-0.5, 0.5)),
}


def _special_images() -> Tensor:
    """Greys, black, white, primaries, and pixels with two equal maximal channels."""
    px = torch.tensor([
        [0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1],
        [1, 0, 1], [0.6, 0.6, 0.2], [0.2, 0.6, 0.6], [0.6, 0.2, 0.6], [0.3, 0.2, 0.1], [0.1, 0.2, 0.3],
        [0.9, 0.9, 0.9], [0.01, 0.0, 0.0],
    ])
    return px.T.reshape(1, 3, 4, 4).expand(8, -1, -1, -1).contiguous()


@pytest.mark.parametrize("kind", ADJUST)
@pytest.mark.parametrize("special", [False, True])
def test_adjust_matches_torchvision_per_image(kind: str, special: bool) -> None:
    ours_fn, ref_fn, (lo, hi) = ADJUST[kind]
    x = _special_images() if special else images(b=32)
    factors = torch.rand(x.shape[0], generator=gen(7)) * (hi - lo) + lo
    factors[0] = 1.0 if kind != "hue" else 0.0  # the identity factor
    factors[-1] = lo
    ours = ours_fn(x, factors)
    for i in range(x.shape[0]):
        ref = ref_fn(x[i], float(factors[i]))
        torch.testing.assert_close(ours[i], ref, atol=2e-6, rtol=0, msg=f"{kind} factor {float(factors[i])}")


def test_hue_round_trip_and_full_turn() -> None:
    x = images(b=8)
    torch.testing.assert_close(A.adjust_hue(x, torch.zeros(8)), x, atol=2e-6, rtol=0)
    twice = A.adjust_hue(A.adjust_hue(x, torch.full((8,), 0.5)), torch.full((8,), 0.5))
    torch.testing.assert_close(twice, x, atol=5e-6, rtol=0)


def test_grayscale_matches_torchvision() -> None:
    x = images(b=8)
    ref = torch.stack([TF.rgb_to_grayscale(img, num_output_channels=3) for img in x])
    torch.testing.assert_close(A.random_grayscale(x, p=1.0, generator=gen(0)), ref, atol=1e-7, rtol=0)
    assert torch.equal(A.random_grayscale(x, p=0.0, generator=gen(0)), x)


def test_random_grayscale_converts_some_samples_and_keeps_the_rest() -> None:
    x = images(b=64)
    y = A.random_grayscale(x, p=0.5, generator=gen(1))
    grey = (y[:, 0] == y[:, 1]).flatten(1).all(1) & (y[:, 1] == y[:, 2]).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert (grey ^ kept).all()
    assert 10 < int(grey.sum()) < 54


def test_color_jitter_draws_torchvision_ranges_and_applies_in_fixed_order() -> None:
    """Replays the documented draw order (apply mask, brightness, contrast, saturation, hue)."""
    b, (bs, cs, ss, hs), p = 48, (0.8, 0.4, 1.2, 0.3), 0.7
    x = images(b=b)
    out = A.color_jitter(x, bs, cs, ss, hs, p=p, generator=gen(11))
    g = gen(11)
    apply = torch.rand(b, generator=g) < p
    bf, cf, sf = (torch.rand(b, generator=g) * (1 + s - max(0.0, 1 - s)) + max(0.0, 1 - s) for s in (bs, cs, ss))
    hf = torch.rand(b, generator=g) * 2 * hs - hs
    assert bf.min() >= 0.2 and bf.max() <= 1.8 and sf.min() >= 0 and hf.abs().max() <= hs
    for i in range(b):
        ref = x[i]
        if apply[i]:
            ref = TF.adjust_brightness(ref, float(bf[i]))
            ref = TF.adjust_contrast(ref, float(cf[i]))
            ref = TF.adjust_saturation(ref, float(sf[i]))
            ref = TF.adjust_hue(ref, float(hf[i]))
            assert not torch.equal(out[i], x[i])
        else:
            assert torch.equal(out[i], x[i])  # not selected: untouched, bit for bit
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    assert 0 < int(apply.sum()) < b


def test_color_jitter_with_zero_strength_or_p_is_identity() -> None:
    x = images(b=8)
    assert torch.equal(A.color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.0, generator=gen(0)), x)
    assert torch.equal(A.color_jitter(x, 0.0, 0.0, 0.0, 0.0, p=1.0, generator=gen(0)), x)


def test_color_ops_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        A.color_jitter(images(b=2), 0.4, 0.4, 0.4, 0.6, generator=gen(0))
    with pytest.raises(ValueError):
        A.adjust_saturation(torch.rand(2, 4, 8, 8), torch.ones(2))


def test_colour_ops_leave_one_channel_images_alone_or_treat_them_as_grey() -> None:
    x = images(b=4, c=1)
    assert torch.equal(A.adjust_saturation(x, torch.zeros(4)), x)
    assert torch.equal(A.adjust_hue(x, torch.full((4,), 0.3)), x)
    assert torch.equal(A.random_grayscale(x, p=1.0, generator=gen(0)), x)
    ref = torch.stack([TF.adjust_contrast(img, 0.5) for img in x])
    torch.testing.assert_close(A.adjust_contrast(x, 0.5), ref, atol=2e-6, rtol=0)
