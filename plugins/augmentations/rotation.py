"""Random quarter-turn rotation, the input of rotation prediction (RotNet)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ssl_bench.harness import Augmentation, Params, hookimpl
from ssl_bench.harness.kit.augment import random_rotation


class RotationAugmentation(Augmentation):
    """Rotate each sample by 0, 90, 180 or 270 degrees, drawn uniformly per sample.

    - [0] Gidaris et al., Unsupervised Representation Learning by Predicting Image Rotations,
      2018, arXiv:1803.07728

    A pipeline returns images only, so the rotation labels are dropped here. A method that
    predicts rotations calls :func:`ssl_bench.harness.kit.augment.random_rotation` (image and label) or
    :func:`ssl_bench.harness.kit.augment.all_rotations` (all four per image, as RotNet trains) itself.
    Needs square images.
    """

    name = "rotation"

    class Params(Params):
        """No options: the four rotations are equally likely."""

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, C, S, S) -> (B, C, S, S)."""
        return random_rotation(images, generator=generator)[0]


@hookimpl
def bench_register_augmentations(register: Callable[[type], None]) -> None:
    register(RotationAugmentation)
