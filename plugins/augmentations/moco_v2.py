"""The MoCo v2 augmentation pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field, model_validator
from torch import Tensor

from harness import Augmentation, Params, hookimpl
from harness.augment import (
    blur_kernel_size,
    color_jitter,
    random_gaussian_blur,
    random_grayscale,
    random_resized_crop,
)

Unit = Annotated[float, Field(ge=0, le=1)]


class MoCoV2Augmentation(Augmentation):
    """MoCo v2's views: crop, colour jitter, grayscale, Gaussian blur, flip.

    - [0] Chen et al., Improved Baselines with Momentum Contrastive Learning, 2020,
      arXiv:2003.04297 (crop scale 0.2..1, jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8,
      grayscale 0.2, blur sigma 0.1..2.0 with probability 0.5, flip)

    Deviations:
        - the flip is fused with the crop (the code flips last; a flip commutes with the colour
          ops and the symmetric blur, so only the random stream differs);
        - the blur kernel is 10% of the output side, made odd (3 px at 32 px, 23 px at 224 px;
          MoCo's code blurs in PIL with a radius of sigma instead);
        - the jitter adjustments run in the fixed order brightness, contrast, saturation, hue;
        - crops are resampled bilinearly without antialiasing.
    """

    name = "moco_v2"

    class Params(Params):
        crop_scale_min: Annotated[float, Field(gt=0, le=1)] = 0.2
        """Smallest crop area as a fraction of the image area (the largest is 1)."""
        flip_p: Unit = 0.5
        """Probability of a horizontal flip."""
        brightness: Annotated[float, Field(ge=0)] = 0.4
        """Colour jitter brightness strength (factor uniform in [1 - x, 1 + x])."""
        contrast: Annotated[float, Field(ge=0)] = 0.4
        """Colour jitter contrast strength."""
        saturation: Annotated[float, Field(ge=0)] = 0.4
        """Colour jitter saturation strength."""
        hue: Annotated[float, Field(ge=0, le=0.5)] = 0.1
        """Colour jitter hue strength in turns (shift uniform in [-x, x])."""
        jitter_p: Unit = 0.8
        """Probability of applying the colour jitter to a sample."""
        grayscale_p: Unit = 0.2
        """Probability of converting a sample to grayscale."""
        blur_p: Unit = 0.5
        """Probability of blurring a sample."""
        blur_sigma_min: Annotated[float, Field(gt=0)] = 0.1
        """Smallest blur standard deviation in pixels."""
        blur_sigma_max: Annotated[float, Field(gt=0)] = 2.0
        """Largest blur standard deviation in pixels."""
        blur_kernel_fraction: Annotated[float, Field(gt=0, le=1)] = 0.1
        """Blur kernel side as a fraction of the output side, made odd."""
        size: Annotated[int, Field(gt=0)] | None = None
        """Output side in pixels; None keeps the input height."""

        @model_validator(mode="after")
        def _sigma_range(self) -> MoCoV2Augmentation.Params:
            if self.blur_sigma_min > self.blur_sigma_max:
                raise ValueError("blur_sigma_min must be <= blur_sigma_max")
            return self

    params: MoCoV2Augmentation.Params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 3, S, S), S = size or H."""
        p = self.params
        size = p.size or images.shape[-2]
        x = random_resized_crop(images, size, scale=(p.crop_scale_min, 1.0), generator=generator, flip_p=p.flip_p)
        x = color_jitter(x, p.brightness, p.contrast, p.saturation, p.hue, p=p.jitter_p, generator=generator)
        x = random_grayscale(x, p.grayscale_p, generator=generator)
        kernel = blur_kernel_size(size, p.blur_kernel_fraction)
        return random_gaussian_blur(x, p.blur_p, (p.blur_sigma_min, p.blur_sigma_max), kernel, generator=generator)


@hookimpl
def bench_register_augmentations(register: Callable[[type], None]) -> None:
    register(MoCoV2Augmentation)
