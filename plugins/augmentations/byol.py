"""BYOL's asymmetric pair of pipelines: ``byol`` (T) and ``byol_prime`` (T')."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ssl_bench.harness import Augmentation, hookimpl
from ssl_bench.plugins.augmentations.recipe import Unit, ViewRecipeParams, view_recipe


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
    Params = ViewRecipeParams
    params: ViewRecipeParams

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 3, S, S), S = size or H."""
        return view_recipe(images, self.params, generator)


class BYOLPrimeAugmentation(Augmentation):
    """BYOL's second view T': blurred with probability 0.1, solarized with probability 0.2.

    Otherwise as :class:`BYOLAugmentation` ([0] there, table 6), with the same deviations.
    """

    name = "byol_prime"

    class Params(ViewRecipeParams):
        blur_p: Unit = 0.1
        """Probability of blurring a sample (0.1 in T')."""
        solarize_p: Unit = 0.2
        """Probability of solarizing a sample at threshold 0.5 (0.2 in T')."""

    params: BYOLPrimeAugmentation.Params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 3, S, S), S = size or H."""
        return view_recipe(images, self.params, generator)


@hookimpl
def bench_register_augmentations(register: Callable[[type], None]) -> None:
    register(BYOLAugmentation)
    register(BYOLPrimeAugmentation)
