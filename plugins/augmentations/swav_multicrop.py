"""SwAV's multi-crop views as two pipelines: ``swav_multicrop`` (global) and ``swav_multicrop_local``.

- [0] Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. Unsupervised Learning of Visual Features by
  Contrasting Cluster Assignments (SwAV). NeurIPS 2020, arXiv:2006.09882 (section 3.2, appendix A).
- [1] Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, 2020,
  arXiv:2002.05709 (the colour distortion, and its CIFAR strength 0.5 in appendix B.9).

A harness view is one pipeline call producing one (B, C, H, W) tensor, so multi-crop is a list of
views: ``views = ["swav_multicrop", "swav_multicrop", "swav_multicrop_local", ...]``. Each call crops
every sample independently (the per-view part of :func:`ssl_bench.harness.kit.augment.multi_crop`), then applies
[0]'s colour ops: colour jitter with probability 0.8, grayscale with probability 0.2, optional blur.

Defaults and why: global crops of scale (0.14, 1) at the input side and local crops of scale
(0.05, 0.14) at 96/224 of the input side (14 px at 32 px), as [0]'s 2 x 224 + 6 x 96 ImageNet setting.
Colour jitter strength 0.5, i.e. (0.4, 0.4, 0.4, 0.1), as [1] for CIFAR ([0] uses 1.0 on ImageNet).
No blur by default: [0] blurs with probability 0.5, but at 32 px a 3-pixel kernel removes most of the
signal ([1] drops blur on CIFAR); set ``blur_p = 0.5`` for larger images.

Deviations from [0]:
    - the flip is fused with the crop (it commutes with the colour ops and the symmetric blur);
    - the jitter adjustments run in the fixed order brightness, contrast, saturation, hue;
    - the blur kernel is 10% of the output side, made odd (PIL blurs with radius sigma in [0]);
    - crops are resampled bilinearly without antialiasing (local crops downsample slightly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field, model_validator
from torch import Tensor

from ssl_bench.harness import Augmentation, hookimpl
from ssl_bench.plugins.augmentations.recipe import Unit, ViewRecipeParams, view_recipe

LOCAL_SIDE_FRACTION = 96 / 224
"""Side of a local crop relative to a global one in [0] (96 px vs 224 px)."""


class SwAVCropParams(ViewRecipeParams):
    """One SwAV crop: :class:`ViewRecipeParams` plus an upper crop scale and a relative output side."""

    crop_scale_min: Annotated[float, Field(gt=0, le=1)] = 0.14
    """Smallest crop area as a fraction of the image area ([0]: 0.14 for global crops)."""
    crop_scale_max: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Largest crop area as a fraction of the image area ([0]: 1 for global crops)."""
    side_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Output side as a fraction of the input height, used when ``size`` is None."""
    saturation: Annotated[float, Field(ge=0)] = 0.4
    """Colour jitter saturation strength (0.8 s with s = 0.5, as brightness and contrast)."""
    blur_p: Unit = 0.0
    """Probability of blurring a sample ([0]: 0.5 on ImageNet; off at CIFAR size)."""

    @model_validator(mode="after")
    def _scale_range(self) -> SwAVCropParams:
        if self.crop_scale_min > self.crop_scale_max:
            raise ValueError("crop_scale_min must be <= crop_scale_max")
        return self

    def out_side(self, height: int) -> int:
        """Output side in pixels for inputs of height ``height``."""
        return self.size or max(1, round(height * self.side_fraction))


def swav_crop(images: Tensor, p: SwAVCropParams, generator: torch.Generator) -> Tensor:
    """The BYOL/MoCo view recipe with SwAV's crop scales and side. Shape: (B, 3, H, W) -> (B, 3, S, S)."""
    return view_recipe(images, p, generator, size=p.out_side(images.shape[-2]), crop_scale_max=p.crop_scale_max)


class SwAVGlobalCrop(Augmentation):
    """SwAV's global view [0]: crop of scale (0.14, 1) at the input side, flip, colour distortion."""

    name = "swav_multicrop"
    Params = SwAVCropParams
    params: SwAVCropParams

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 3, S, S), S = size or round(side_fraction * H)."""
        return swav_crop(images, self.params, generator)


class SwAVLocalCrop(Augmentation):
    """SwAV's local view [0]: crop of scale (0.05, 0.14) at 96/224 of the input side, same colour ops."""

    name = "swav_multicrop_local"

    class Params(SwAVCropParams):
        crop_scale_min: Annotated[float, Field(gt=0, le=1)] = 0.05
        """Smallest crop area as a fraction of the image area ([0]: 0.05 for local crops)."""
        crop_scale_max: Annotated[float, Field(gt=0, le=1)] = 0.14
        """Largest crop area as a fraction of the image area ([0]: 0.14 for local crops)."""
        side_fraction: Annotated[float, Field(gt=0, le=1)] = LOCAL_SIDE_FRACTION
        """Output side as a fraction of the input height (96/224: 14 px at 32 px), when ``size`` is None."""

    params: SwAVLocalCrop.Params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 3, S, S), S = size or round(side_fraction * H)."""
        return swav_crop(images, self.params, generator)


@hookimpl
def bench_register_augmentations(register: Callable[[type], None]) -> None:
    register(SwAVGlobalCrop)
    register(SwAVLocalCrop)
