"""The view recipe the BYOL and MoCo v2 pipelines share: crop + flip, colour jitter, grayscale,
Gaussian blur, solarize, each with its own probability. The pipelines differ only in defaults."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, model_validator
from torch import Tensor

from ssl_bench.harness import Params
from ssl_bench.harness.kit.augment import (
    blur_kernel_size,
    color_jitter,
    random_gaussian_blur,
    random_grayscale,
    random_resized_crop,
    random_solarize,
)

Unit = Annotated[float, Field(ge=0, le=1)]


class ViewRecipeParams(Params):
    """Parameters of one view of the recipe; defaults are BYOL's T (table 6 of arXiv:2006.07733)."""

    crop_scale_min: Annotated[float, Field(gt=0, le=1)] = 0.08
    """Smallest crop area as a fraction of the image area (the largest is 1)."""
    flip_p: Unit = 0.5
    """Probability of a horizontal flip."""
    brightness: Annotated[float, Field(ge=0)] = 0.4
    """Colour jitter brightness strength (factor uniform in [1 - x, 1 + x])."""
    contrast: Annotated[float, Field(ge=0)] = 0.4
    """Colour jitter contrast strength."""
    saturation: Annotated[float, Field(ge=0)] = 0.2
    """Colour jitter saturation strength."""
    hue: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    """Colour jitter hue strength in turns (shift uniform in [-x, x])."""
    jitter_p: Unit = 0.8
    """Probability of applying the colour jitter to a sample."""
    grayscale_p: Unit = 0.2
    """Probability of converting a sample to grayscale."""
    blur_p: Unit = 1.0
    """Probability of blurring a sample (1.0 in T, 0.1 in T')."""
    blur_sigma_min: Annotated[float, Field(gt=0)] = 0.1
    """Smallest blur standard deviation in pixels."""
    blur_sigma_max: Annotated[float, Field(gt=0)] = 2.0
    """Largest blur standard deviation in pixels."""
    blur_kernel_fraction: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Blur kernel side as a fraction of the output side, made odd (23 px at 224, 3 px at 32)."""
    solarize_p: Unit = 0.0
    """Probability of solarizing a sample at threshold 0.5 (0 in T, 0.2 in T')."""
    size: Annotated[int, Field(gt=0)] | None = None
    """Output side in pixels; None keeps the input height."""

    @model_validator(mode="after")
    def _sigma_range(self) -> ViewRecipeParams:
        if self.blur_sigma_min > self.blur_sigma_max:
            raise ValueError("blur_sigma_min must be <= blur_sigma_max")
        return self


def view_recipe(images: Tensor, p: ViewRecipeParams, generator: torch.Generator, *, size: int | None = None,
                crop_scale_max: float = 1.0) -> Tensor:
    """Crop + flip, colour jitter, grayscale, blur, solarize: (B, 3, H, W) -> (B, 3, S, S).

    ``size`` (default ``p.size``, else the input height) is the output side S; crops cover a fraction
    of the image area between ``p.crop_scale_min`` and ``crop_scale_max``.
    """
    size = size or p.size or images.shape[-2]
    x = random_resized_crop(images, size, scale=(p.crop_scale_min, crop_scale_max), generator=generator,
                            flip_p=p.flip_p)
    x = color_jitter(x, p.brightness, p.contrast, p.saturation, p.hue, p=p.jitter_p, generator=generator)
    x = random_grayscale(x, p.grayscale_p, generator=generator)
    kernel = blur_kernel_size(size, p.blur_kernel_fraction)
    x = random_gaussian_blur(x, p.blur_p, (p.blur_sigma_min, p.blur_sigma_max), kernel, generator=generator)
    return random_solarize(x, p.solarize_p, generator=generator)
