"""BYOL's asymmetric pair of pipelines: ``byol`` (T) and ``byol_prime`` (T')."""

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
    random_solarize,
)

Unit = Annotated[float, Field(ge=0, le=1)]


class BYOLParams(Params):
    """Parameters of one BYOL view; the defaults are T of table 6 (T' overrides blur and solarize)."""

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
    def _sigma_range(self) -> BYOLParams:
        if self.blur_sigma_min > self.blur_sigma_max:
            raise ValueError("blur_sigma_min must be <= blur_sigma_max")
        return self


def byol_view(images: Tensor, p: BYOLParams, generator: torch.Generator) -> Tensor:
    """Crop + flip, colour jitter, grayscale, blur, solarize: (B, 3, H, W) -> (B, 3, S, S)."""
    size = p.size or images.shape[-2]
    x = random_resized_crop(images, size, scale=(p.crop_scale_min, 1.0), generator=generator, flip_p=p.flip_p)
    x = color_jitter(x, p.brightness, p.contrast, p.saturation, p.hue, p=p.jitter_p, generator=generator)
    x = random_grayscale(x, p.grayscale_p, generator=generator)
    kernel = blur_kernel_size(size, p.blur_kernel_fraction)
    x = random_gaussian_blur(x, p.blur_p, (p.blur_sigma_min, p.blur_sigma_max), kernel, generator=generator)
    return random_solarize(x, p.solarize_p, generator=generator)


class BYOLAugmentation(Augmentation):
    """BYOL's first view T: always blurred, never solarized.

    - [0] Grill et al., Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning,
      2020, arXiv:2006.07733 (appendix B, table 6)

    Ops in the paper's order: random resized crop (scale 0.08..1) + flip, colour jitter
    (0.4, 0.4, 0.2, 0.1) with probability 0.8, grayscale 0.2, Gaussian blur (sigma 0.1..2.0)
    with probability 1.0, solarize with probability 0.

    Deviations:
        - the blur kernel is 10% of the output side, made odd (the paper's 23 px at 224 px);
          at 32 px that is a 3 px kernel, so large sigmas act as a near-box 3 x 3 blur;
        - the jitter adjustments run in the fixed order brightness, contrast, saturation, hue;
        - the flip is fused with the crop (it commutes with the colour ops and the symmetric blur);
        - crops are resampled bilinearly without antialiasing.
    """

    name = "byol"
    Params = BYOLParams
    params: BYOLParams

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 3, S, S), S = size or H."""
        return byol_view(images, self.params, generator)


class BYOLPrimeAugmentation(Augmentation):
    """BYOL's second view T': blurred with probability 0.1, solarized with probability 0.2.

    Otherwise as :class:`BYOLAugmentation` ([0] there, table 6), with the same deviations.
    """

    name = "byol_prime"

    class Params(BYOLParams):
        blur_p: Unit = 0.1
        """Probability of blurring a sample (0.1 in T')."""
        solarize_p: Unit = 0.2
        """Probability of solarizing a sample at threshold 0.5 (0.2 in T')."""

    params: BYOLPrimeAugmentation.Params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 3, S, S), S = size or H."""
        return byol_view(images, self.params, generator)


@hookimpl
def bench_register_augmentations(register: Callable[[type], None]) -> None:
    register(BYOLAugmentation)
    register(BYOLPrimeAugmentation)
