"""The SimCLR augmentation pipeline (CIFAR recipe)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from ssl_bench.harness import Augmentation, Params, hookimpl
from ssl_bench.harness.kit.augment import color_jitter, random_grayscale, random_resized_crop


class SimCLRAugmentation(Augmentation):
    """SimCLR's views: random resized crop + flip, colour jitter, random grayscale.

    - [0] Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, 2020,
      arXiv:2002.05709 (appendix A for the ops, B.9 for CIFAR-10: jitter strength 0.5, no blur)

    Colour distortion of strength ``s`` is ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) applied with
    probability 0.8, followed by grayscale with probability 0.2.

    Deviations:
        - the jitter adjustments run in the fixed order brightness, contrast, saturation, hue
          (torchvision's ColorJitter, used by the paper's code, shuffles the order per image);
        - crops are resampled bilinearly without antialiasing (no effect when upsampling, which
          is the case at 32 px unless ``size`` is smaller than the input);
        - no Gaussian blur (the paper drops it for CIFAR; add a blur pipeline for larger images).
    """

    name = "simclr"

    class Params(Params):
        crop_scale_min: Annotated[float, Field(gt=0, le=1)] = 0.08
        """Smallest crop area as a fraction of the image area (the largest is 1)."""
        jitter_strength: Annotated[float, Field(ge=0, le=2.5)] = 0.5
        """Colour distortion strength s: ColorJitter(0.8s, 0.8s, 0.8s, 0.2s); 0.5 for CIFAR, 1.0 for ImageNet."""
        jitter_p: Annotated[float, Field(ge=0, le=1)] = 0.8
        """Probability of applying the colour jitter to a sample."""
        grayscale_p: Annotated[float, Field(ge=0, le=1)] = 0.2
        """Probability of converting a sample to grayscale."""
        flip_p: Annotated[float, Field(ge=0, le=1)] = 0.5
        """Probability of a horizontal flip."""
        size: Annotated[int, Field(gt=0)] | None = None
        """Output side in pixels; None keeps the input height."""

    params: SimCLRAugmentation.Params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Two calls on one batch give two views. Shape: (B, 3, H, W) -> (B, 3, S, S), S = size or H."""
        p = self.params
        s = p.jitter_strength
        x = random_resized_crop(
            images, p.size or images.shape[-2], scale=(p.crop_scale_min, 1.0), generator=generator, flip_p=p.flip_p
        )
        x = color_jitter(x, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=p.jitter_p, generator=generator)
        return random_grayscale(x, p.grayscale_p, generator=generator)


@hookimpl
def bench_register_augmentations(register: Callable[[type], None]) -> None:
    register(SimCLRAugmentation)
