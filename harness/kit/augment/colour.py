"""Colour ops: grayscale, brightness, contrast, saturation, hue, and the colour jitter built on them.

The ``adjust_*`` functions take per-sample factors of shape (B,) and match the per-image
``torchvision.transforms.v2.functional`` op with the same factor (float32, up to rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_bench.harness.kit.augment._common import _per_sample, _uniform, bernoulli_mask

LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G, B, as in ``torchvision``'s ``rgb_to_grayscale``."""


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma of RGB images with ITU-R 601-2 weights.

    Args:
        images: float (B, 3, H, W).

    Returns:
        float tensor of shape (B, 1, H, W).
    """
    r, g, b = images.unbind(dim=-3)
    return r.mul(LUMA_WEIGHTS[0]).add_(g, alpha=LUMA_WEIGHTS[1]).add_(b, alpha=LUMA_WEIGHTS[2]).unsqueeze_(-3)


def _check_channels(images: Tensor) -> int:
    c = images.shape[-3]
    if c not in (1, 3):
        raise ValueError(f"colour ops need 1 or 3 channels, got images of shape {tuple(images.shape)}")
    return int(c)


def _blend_(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """In place: ``x = clamp(factor * x + (1 - factor) * other, 0, 1)``; factor (B, 1, 1, 1)."""
    return x.mul_(factor).add_(other * (1 - factor)).clamp_(0, 1)


def _brightness_(x: Tensor, factor: Tensor) -> Tensor:
    return x.mul_(factor).clamp_(0, 1)


def _contrast_(x: Tensor, factor: Tensor) -> Tensor:
    gray = rgb_to_grayscale(x) if x.shape[-3] == 3 else x
    return _blend_(x, gray.mean(dim=(-3, -2, -1), keepdim=True), factor)


def _saturation_(x: Tensor, factor: Tensor) -> Tensor:
    if x.shape[-3] == 1:  # grey images have no saturation (as torchvision)
        return x
    return _blend_(x, rgb_to_grayscale(x), factor)


def adjust_brightness(images: Tensor, factor: Tensor | float) -> Tensor:
    """Scale intensities: ``clamp(factor * x, 0, 1)``.

    Args:
        images: float (B, C, H, W) in [0, 1].
        factor: per-sample factors (B,) >= 0 (or one float); 1 leaves the image unchanged.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    return _brightness_(images.clone(), _per_sample(factor, images))


def adjust_contrast(images: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each image with the mean of its grayscale version.

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}.
        factor: per-sample factors (B,) >= 0; 0 gives a flat grey image, 1 the original.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    _check_channels(images)
    return _contrast_(images.clone(), _per_sample(factor, images))


def adjust_saturation(images: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each image with its grayscale version (identity on 1-channel images).

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}.
        factor: per-sample factors (B,) >= 0; 0 gives the grayscale image, 1 the original.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    _check_channels(images)
    return _saturation_(images.clone(), _per_sample(factor, images))


def rgb_to_hcv(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """RGB -> hexcone hue, chroma and value (HSV with chroma ``= value * saturation``).

    Args:
        images: float (B, 3, H, W) in [0, 1].

    Returns:
        three float tensors of shape (B, H, W): hue in sixths of a turn in [0, 6) (0 for greys),
        chroma ``max - min`` and value ``max`` of the three channels.
    """
    r, g, b = images.unbind(dim=-3)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    inv = chroma.clamp(min=1e-12).reciprocal_()  # greys: every difference below is 0
    # Sector by the largest channel (ties: red, then green, then blue), as float masks (fast on CPU).
    is_r = (value == r).to(images.dtype)
    is_g = (value == g).to(images.dtype).mul_(1 - is_r)
    is_b = 1 - is_r - is_g
    hue = (is_r * (g - b) + is_g * (b - r) + is_b * (r - g)).mul_(inv) + 2 * is_g + 4 * is_b
    hue = hue.sub_(hue.div(6).floor_().mul_(6))  # wrap (-1, 5] into [0, 6)
    return hue, chroma, value


def hcv_to_rgb(hue: Tensor, chroma: Tensor, value: Tensor) -> Tensor:
    """Hexcone hue, chroma, value -> RGB, the inverse of :func:`rgb_to_hcv`.

    Channel ``n`` (5, 3, 1 for red, green, blue) is ``value - chroma * clamp(2 - |k - 2|, 0, 1)``
    with ``k = (n + hue) mod 6``.

    Args:
        hue: float (B, H, W) in sixths of a turn (any real; taken mod 6).
        chroma: float (B, H, W).
        value: float (B, H, W).

    Returns:
        float tensor of shape (B, 3, H, W) in [0, 1].
    """
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hue.dtype, device=hue.device).view(3, 1, 1)
    k = hue.unsqueeze(-3) + n
    k = k.sub_(k.div(6).floor_().mul_(6))
    ramp = k.sub_(2).abs_().neg_().add_(2).clamp_(0, 1)
    return ramp.mul_(chroma.unsqueeze(-3)).neg_().add_(value.unsqueeze(-3)).clamp_(0, 1)


def adjust_hue(images: Tensor, shift: Tensor | float) -> Tensor:
    """Rotate the hue of each image by ``shift`` turns (identity on 1-channel images).

    Saturation and value are kept; the hue rotation is done on the hexcone (HSV) hue.

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}.
        shift: per-sample hue shifts (B,) in [-0.5, 0.5] turns.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    if _check_channels(images) == 1:
        return images.clone()
    hue, chroma, value = rgb_to_hcv(images)
    hue.add_(_per_sample(shift, images).view(-1, 1, 1), alpha=6)
    return hcv_to_rgb(hue, chroma, value)


def color_jitter(
    images: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float = 0.8,
    *,
    generator: torch.Generator,
) -> Tensor:
    """Random brightness, contrast, saturation and hue per sample, applied with probability ``p``.

    Factors are uniform as in ``torchvision`` ``ColorJitter``: brightness, contrast and saturation
    in ``[max(0, 1 - x), 1 + x]``, the hue shift in ``[-hue, hue]`` turns. A strength of 0 leaves
    that property alone. Samples not selected (probability ``1 - p``) are returned unchanged.

    Deviation: the four adjustments are applied in the fixed order brightness, contrast,
    saturation, hue; ``ColorJitter`` draws a random order per call.

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}.
        brightness: brightness strength >= 0.
        contrast: contrast strength >= 0.
        saturation: saturation strength >= 0.
        hue: hue strength in [0, 0.5].
        p: probability of jittering a sample.
        generator: source of randomness, on the images' device.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise ValueError(f"jitter strengths must be >= 0 and hue <= 0.5, got {brightness, contrast, saturation, hue}")
    _check_channels(images)
    b = images.shape[0]
    # Every factor is drawn whatever the strengths, so the random stream depends only on B.
    apply = bernoulli_mask(b, p, generator=generator)
    factors = [_uniform(b, max(0.0, 1 - s), 1 + s, generator) for s in (brightness, contrast, saturation)]
    shift = _uniform(b, -hue, hue, generator)
    x = images.clone()
    ops = (_brightness_, _contrast_, _saturation_)
    for strength, op, factor in zip((brightness, contrast, saturation), ops, factors):
        if strength > 0:
            op(x, _per_sample(factor, x))
    if hue > 0:
        x = adjust_hue(x, shift)
    return torch.where(apply.view(-1, 1, 1, 1), x, images)


def random_grayscale(images: Tensor, p: float = 0.2, *, generator: torch.Generator) -> Tensor:
    """Replace each RGB sample by its luma (ITU-R 601-2) with probability ``p``, keeping 3 channels.

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}; 1-channel images are returned as they are.
        p: probability of converting a sample.
        generator: source of randomness, on the images' device.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    gray = bernoulli_mask(images.shape[0], p, generator=generator).view(-1, 1, 1, 1)
    if _check_channels(images) == 1:
        return images.clone()
    return torch.where(gray, rgb_to_grayscale(images).expand_as(images), images)
