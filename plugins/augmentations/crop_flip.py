"""Supervised-style pipelines: random resized crop + flip, the identity, and the evaluation view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness import Augmentation, Params, hookimpl
from ssl_bench.harness.kit.augment import random_resized_crop


class CropFlip(Augmentation):
    """The standard supervised recipe: random resized crop (scale 0.35..1 by default) and flip.

    Crop and flip are one bilinear resampling (see :func:`ssl_bench.harness.kit.augment.crop_resize`), without
    antialiasing. Used by the supervised baseline.
    """

    name = "crop_flip"

    class Params(Params):
        crop_scale_min: Annotated[float, Field(gt=0, le=1)] = 0.35
        """Smallest crop area as a fraction of the image area (the largest is 1)."""
        flip_p: Annotated[float, Field(ge=0, le=1)] = 0.5
        """Probability of a horizontal flip."""
        size: Annotated[int, Field(gt=0)] | None = None
        """Output side in pixels; None keeps the input height."""

    params: CropFlip.Params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, C, H, W) -> (B, C, S, S), S = size or H."""
        p = self.params
        return random_resized_crop(
            images, p.size or images.shape[-2], scale=(p.crop_scale_min, 1.0), generator=generator, flip_p=p.flip_p
        )


class Identity(Augmentation):
    """No augmentation: returns the images it is given (the same tensor, not a copy); for evaluation."""

    name = "identity"

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, C, H, W) -> (B, C, H, W)."""
        return images


class Eval(Augmentation):
    """The evaluation view: the image at its native size, or resized and centre-cropped to ``size``.

    With ``size`` None (the default) this is :class:`Identity` under the name ``eval`` (it returns
    the same tensor). With a ``size``, the shorter side is resized to ``size`` (bilinear, with
    antialiasing) and the centre ``size x size`` square is kept, the usual "resize, centre crop"
    evaluation transform with the resize equal to the crop. Draws nothing from the generator.
    """

    name = "eval"

    class Params(Params):
        size: Annotated[int, Field(gt=0)] | None = None
        """Output side in pixels; None keeps the images as they are."""

    params: Eval.Params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, C, H, W) -> (B, C, H, W), or (B, C, S, S) with S = size."""
        size = self.params.size
        height, width = images.shape[-2:]
        if size is None or (height == width == size):
            return images
        scale = size / min(height, width)
        new = (max(size, round(height * scale)), max(size, round(width * scale)))
        x = F.interpolate(images, size=new, mode="bilinear", align_corners=False, antialias=True)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        return x[..., top : top + size, left : left + size].clamp(0, 1)


@hookimpl
def bench_register_augmentations(register: Callable[[type], None]) -> None:
    register(CropFlip)
    register(Identity)
    register(Eval)
