"""The 2 x 2 jigsaw shuffle of the transfer study, alone and after the SimCLR pipeline.

SimCLR "v2.1" pairs a ``simclr`` view with a ``jigsaw_2x2`` view; "v2.2" pairs ``simclr+jigsaw_2x2``
with ``jigsaw_2x2``. Both are method ``views`` lists, not new methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from ssl_bench.harness import Augmentation, Params, hookimpl
from ssl_bench.harness.kit.augment import jigsaw_2x2
from ssl_bench.plugins.augmentations.simclr import SimCLRAugmentation


class Jigsaw2x2(Augmentation):
    """Cut each image into its four quadrants and put them back in a random order.

    - [0] Dandu & Daru, Self-Supervised Contrastive Learning with In-Domain and Out-of-Domain
      Image Classification (the transfer study): "Jigsaw" breaks a 32 px image into four 16 px
      patches through its centre and shuffles them.

    Deviations: the study does not say whether the identity order may be drawn; here the order
    is uniform over all 24 permutations (1 in 24 images keeps its layout).
    """

    name = "jigsaw_2x2"

    class Params(Params):
        p: Annotated[float, Field(ge=0, le=1)] = 1.0
        """Probability of shuffling a sample's tiles."""

    params: Jigsaw2x2.Params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, C, H, W) -> (B, C, H, W); each output is a rearrangement of its input's quadrants."""
        return jigsaw_2x2(images, self.params.p, generator=generator)


class SimCLRJigsaw2x2(Augmentation):
    """The ``simclr`` pipeline, then the ``jigsaw_2x2`` shuffle of its output (the transfer study, "v2.2").

    Composes a :class:`~ssl_bench.plugins.augmentations.simclr.SimCLRAugmentation` built from ``simclr``;
    the random stream is the simclr pipeline's draws followed by the shuffle's.
    """

    name = "simclr+jigsaw_2x2"

    class Params(Params):
        simclr: SimCLRAugmentation.Params = SimCLRAugmentation.Params()
        """Parameters of the SimCLR pipeline that runs first (crop, flip, jitter, grayscale)."""
        jigsaw_p: Annotated[float, Field(ge=0, le=1)] = 1.0
        """Probability of shuffling a sample's quadrants after the SimCLR ops."""

    params: SimCLRJigsaw2x2.Params

    def __init__(self, params: SimCLRJigsaw2x2.Params) -> None:
        super().__init__(params)
        self.simclr = SimCLRAugmentation(params.simclr)

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 3, S, S), S = simclr.size or H."""
        return jigsaw_2x2(self.simclr(images, generator=generator), self.params.jigsaw_p, generator=generator)


@hookimpl
def bench_register_augmentations(register: Callable[[type], None]) -> None:
    register(Jigsaw2x2)
    register(SimCLRJigsaw2x2)
