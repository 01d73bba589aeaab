"""The MoCo v2 augmentation pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from ssl_bench.harness import Augmentation, hookimpl
from ssl_bench.plugins.augmentations.recipe import Unit, ViewRecipeParams, view_recipe


class MoCoV2Augmentation(Augmentation):
    """MoCo v2's views: crop, colour jitter, grayscale, Gaussian blur, flip.

    - [0] Chen et al., Improved Baselines with Momentum Contrastive Learning, 2020,
      arXiv:2003.04297 (crop scale 0.2..1, jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8,
      grayscale 0.2, blur sigma 0.1..2.0 with probability 0.5, flip); no solarization

    Deviations:
        - the flip is fused with the crop (the code flips last; a flip commutes with the colour
          ops and the symmetric blur, so only the random stream differs);
        - the blur kernel is 10% of the output side, made odd (3 px at 32 px, 23 px at 224 px;
          MoCo's code blurs in PIL with a radius of sigma instead);
        - the jitter adjustments run in the fixed order brightness, contrast, saturation, hue;
        - crops are resampled bilinearly without antialiasing.
    """

    name = "moco_v2"

    class Params(ViewRecipeParams):
        crop_scale_min: Annotated[float, Field(gt=0, le=1)] = 0.2
        """Smallest crop area as a fraction of the image area (the largest is 1)."""
        saturation: Annotated[float, Field(ge=0)] = 0.4
        """Colour jitter saturation strength."""
        blur_p: Unit = 0.5
        """Probability of blurring a sample."""

    params: MoCoV2Augmentation.Params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 3, S, S), S = size or H."""
        return view_recipe(images, self.params, generator)


@hookimpl
def bench_register_augmentations(register: Callable[[type], None]) -> None:
    register(MoCoV2Augmentation)
