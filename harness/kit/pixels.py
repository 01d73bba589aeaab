"""Pixels of normalised views: back to RGB in [0, 1], and colour jitter applied in that space.

Methods receive views standardised by :func:`ssl_bench.harness.data.normalize`; colour ops
(:mod:`ssl_bench.harness.kit.augment`) need RGB in [0, 1]. :func:`denormalize` is the inverse map,
:func:`jitter_normalized` the round trip around a colour jitter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_bench.harness.data import IMAGENET_MEAN, IMAGENET_STD, normalize
from ssl_bench.harness.kit.augment import color_jitter, random_grayscale


def denormalize(images: Tensor) -> Tensor:
    """Inverse of :func:`ssl_bench.harness.data.normalize`: ``x * std + mean``, clamped to [0, 1].

    Args:
        images: standardised RGB images. Shape: (B, 3, H, W).

    Returns:
        RGB in [0, 1], same dtype and device. Shape: (B, 3, H, W).
    """
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images * std + mean).clamp_(0, 1)


def jitter_normalized(
    images: Tensor,
    strength: float | None,
    p: float = 0.8,
    *,
    grayscale_p: float | None = None,
    generator: torch.Generator,
) -> Tensor:
    """Colour-jitter normalised images: denormalise, jitter, optionally grey, normalise again.

    The jitter is :func:`~ssl_bench.harness.kit.augment.color_jitter` with brightness, contrast and
    saturation ``strength`` and hue ``strength / 4``, applied to each sample with probability ``p``;
    then :func:`~ssl_bench.harness.kit.augment.random_grayscale` with probability ``grayscale_p``.
    None skips an op and its random draws; 0 draws as usual but changes no pixel, so the generator
    stream stays the same whatever the strength.

    Args:
        images: standardised RGB images. Shape: (B, 3, H, W).
        strength: jitter strength in [0, 1], or None for no jitter.
        p: probability of jittering a sample.
        grayscale_p: probability of turning a sample grey, or None for no grayscale step.
        generator: source of randomness, on the images' device.

    Returns:
        Standardised images. Shape: (B, 3, H, W).
    """
    x = denormalize(images)
    if strength is not None:
        x = color_jitter(x, strength, strength, strength, strength / 4, p, generator=generator)
    if grayscale_p is not None:
        x = random_grayscale(x, grayscale_p, generator=generator)
    out: Tensor = normalize(x)
    return out
