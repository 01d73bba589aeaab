"""Counting: learn features whose "counts" of a whole image equal the sum over its four tiles.

- [0] Noroozi, Pirsiavash, Favaro. Representation Learning by Learning to Count. ICCV 2017,
  arXiv:1708.06734.
- [1] Macar, Liu. Self-Supervised Learning for Computer Vision (the pretext-tasks study): the
  contrastive term's weight had to be tuned (too small: all-zero features; too large: poor features).

A view x (B, C, S, S) gives four tiles T_1..T_4 x (quadrants, :func:`ssl_bench.harness.kit.augment.split_tiles`,
no gaps) and a downsampled image D x of the tiles' size. The counting vector
phi = ReLU(head(backbone(.))) of the whole image must equal the sum over its tiles (the equivariance
relation of [0]); a second image y (the batch rolled by one) must stay at least a squared distance
M away, which excludes the trivial phi = 0 (Eq. 4 of [0])::

    l(x, y) = |phi(D x) - sum_j phi(T_j x)|^2 + w * max(0, M - |phi(D y) - sum_j phi(T_j x)|^2)

D x and the 4 tiles have one size, so the 5B images go through the backbone as one batch (one set
of batch-norm statistics for both sides of the relation); phi(D y) is a row of phi(D x), so y costs
no forward pass. Counting vectors are gathered across processes before the batch is rolled.

Defaults and why:
    - ``resolution = "half"``, [0]'s sizes: the tiles are the view's quadrants at native resolution
      and D x the view downsampled to their size (16 px inputs for 32 px views). ``"view"`` takes the
      view as D of its 2x upsampling (D x = the view, tiles = its quadrants upsampled 2x), so the
      backbone trains at the resolution it is evaluated at; it learned no better, at several times
      the cost.
    - ``count_norm = True``: the counts are batch-normalised (no affine) before the final ReLU.
      With [0]'s plain ReLU output short runs fall into phi = 0: the ReLUs die and the hinge has no
      gradient left (the pretext-tasks study [1] reports days of tuning the contrast weight against
      the same collapse). Normalised counts cannot all vanish.
    - ``margin = 1000`` (M = 10 in [0]). [0]'s counts are a plain ReLU output whose scale the network
      sets, so M = 10 is a distance it can reach. Normalised counts have a fixed scale: at init the
      counts of two different images are already ~400 apart (median squared distance, 128 counts,
      convnet_small on CIFAR-10), so with M = 10 the hinge never acts and only the equivariance
      term trains, which a few bits of content satisfy. M must exceed the typical distance for the
      contrast to act. Scale M with ``count_dim``.
    - Contrast weight 1 as [0]; 128 counts (1000 in [0]) after a Linear-BN-ReLU-Linear head with
      512 hidden units (fc6-fc8 in [0]); a narrower head keeps CPU steps cheap.
    - The resampling filter (D, or the tiles' upsampling) is drawn per image among area, bilinear
      and bicubic, so that no single filter's signature tells D x from a tile, the shortcut [0]
      avoids by drawing the downsampling method at random.
    - Independent colour jitter per input (``jitter_strength``) is off: it breaks colour-count
      solutions of the relation but made features worse in short CPU trials.
    - Views ``("crop_flip",)``, the crops and flips [0] trains on.

On 32 px images the relation is largely met by low-level statistics (colour, texture) rather than
objects; [0] trains at 114 px on ImageNet.

Deviations from [0]:
    - [0] crops 228 px and feeds 114 px images to AlexNet, and its counts are a plain ReLU output
      with M = 10; see ``count_norm`` and ``margin`` above.
    - Lanczos is not offered (no Lanczos resampling in torch).
    - The other image y is the previous image of the (gathered) batch, not an independent draw.
    - Random draws (filters, jitter) come from a generator seeded by a counter buffer, so a resumed
      run draws what the interrupted one would have; one stream per process.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, gather, hookimpl
from ssl_bench.harness.kit.augment import split_tiles
from ssl_bench.harness.kit.draws import new_draws, next_generator
from ssl_bench.harness.kit.heads import mlp_head
from ssl_bench.harness.kit.pixels import jitter_normalized

Filter = Literal["area", "bilinear", "bicubic"]
FILTERS: tuple[Filter, ...] = ("area", "bilinear", "bicubic")


def counting_loss(down: Tensor, tiles: Tensor, margin: float, contrast_weight: float = 1.0) -> Tensor:
    """The contrastive counting loss of [0], averaged over the batch.

    Args:
        down: counts of the downsampled images phi(D x), shape (B, K).
        tiles: counts of the tiles phi(T_j x), shape (B, 4, K).
        margin: M, the squared distance the counts of another image must keep from the tile sum.
        contrast_weight: w, the weight of the hinge term.

    Returns:
        Scalar mean over i of ``|d_i - t_i|^2 + w * max(0, M - |d_{i-1} - t_i|^2)`` with
        ``t_i = sum_j tiles[i, j]`` and ``d_{i-1}`` the counts of the previous image (y = roll by one).
    """
    total = tiles.sum(dim=1)
    positive = (down - total).pow(2).sum(dim=1)
    negative = (down.roll(1, dims=0) - total).pow(2).sum(dim=1)
    return (positive + contrast_weight * F.relu(margin - negative)).mean()


def resample(images: Tensor, size: tuple[int, int], choice: Tensor) -> Tensor:
    """Resize each image to ``size`` with the filter ``FILTERS[choice[i]]`` (antialiased when shrinking).

    Args:
        images: (B, C, H, W).
        size: output (h, w).
        choice: int64 (B,), indices into :data:`FILTERS`.

    Returns:
        (B, C, h, w).
    """
    out = F.interpolate(images, size=size, mode="area")
    for k, mode in enumerate(FILTERS[1:], start=1):
        pick = choice == k
        if bool(pick.any()):
            out[pick] = F.interpolate(images[pick], size=size, mode=mode, align_corners=False, antialias=True)
    return out


class Counting(Method):
    """Counting [0]: phi(D x) = sum of phi over the 4 tiles of x, contrasted against another image."""

    name = "counting"

    class Params(MethodParams):
        views: tuple[str] = ("crop_flip",)
        """The pipeline of the images that are tiled and downsampled."""
        margin: Annotated[float, Field(gt=0)] = 1000.0
        """M: squared distance the counts of another image must keep from the tile sum (10 in [0], whose
        counts are not normalised; see the module docstring)."""
        contrast_weight: Annotated[float, Field(gt=0)] = 1.0
        """Weight of the hinge term against another image."""
        count_dim: Annotated[int, Field(gt=0)] = 128
        """Number of counted primitives, the head's output (1000 in [0])."""
        hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Hidden width of the counting head."""
        jitter_strength: Annotated[float, Field(ge=0, le=1)] = 0.0
        """Colour jitter drawn independently for D x and each tile (brightness, contrast, saturation; hue
        a quarter), so colour statistics cannot satisfy the relation; 0 = none."""
        jitter_p: Annotated[float, Field(ge=0, le=1)] = 0.8
        """Probability of jittering each of the 5 images."""
        count_norm: bool = True
        """Batch-normalise the counts (no affine) before the final ReLU; False = [0]'s plain ReLU output."""
        filters: tuple[Filter, ...] = FILTERS
        """Downsampling filters D draws from per image (one of them = a fixed filter)."""
        resolution: Literal["view", "half"] = "half"
        """'view': D x is the view and the tiles are upsampled to its side; 'half': [0]'s sizes (view / 2)."""

    params: Params
    draws: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        if not params.filters:
            raise ValueError("counting needs at least one downsampling filter")
        norm = [nn.BatchNorm1d(params.count_dim, affine=False)] if params.count_norm else []
        self.head = nn.Sequential(mlp_head(backbone.feature_dim, params.hidden_dim, params.count_dim), *norm, nn.ReLU())
        # (seed, number of batches drawn): the seed comes from the global RNG at build time.
        self.register_buffer("draws", new_draws())

    def counts(self, images: Tensor) -> Tensor:
        """phi: counting vectors of images (N, C, h, w) -> (N, count_dim), non-negative."""
        out: Tensor = self.head(self.backbone(images))
        return out

    def inputs(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Tiles (B, 4, C, s, s) and downsampled images D x (B, C, s, s) of views x (B, C, S, S).

        ``resolution = "half"``: s = S / 2, the quadrants of x and x downsampled by a random filter.
        ``"view"``: s = S; x is taken as D of its 2x upsampling u, and the tiles are u's quadrants
        (x's quadrants upsampled 2x with the random filter); D x = x exactly.
        """
        allowed = torch.tensor([FILTERS.index(f) for f in self.params.filters], device=x.device)
        pick = torch.randint(len(allowed), (x.shape[0],), generator=generator, device=generator.device)
        choice = allowed[pick.to(x.device)]
        if self.params.resolution == "view":
            h, w = x.shape[-2:]
            return split_tiles(resample(x, (2 * h, 2 * w), choice), 2), x
        tiles = split_tiles(x, 2)
        return tiles, resample(x, (tiles.shape[-2], tiles.shape[-1]), choice)

    def jitter(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Independent colour jitter of normalised images (N, 3, h, w); identity at strength 0."""
        s = self.params.jitter_strength
        if s == 0:
            return images
        return jitter_normalized(images, s, self.params.jitter_p, generator=generator)

    def loss(self, batch: Batch) -> Tensor:
        """Counting loss of the view (B, C, S, S): one forward of 5B half-size images."""
        x = batch.views[0]
        g = next_generator(self.draws, x.device)
        tiles, down = self.inputs(x, g)
        b = x.shape[0]
        phi = self.counts(self.jitter(torch.cat([down, tiles.flatten(0, 1)]), g))
        return counting_loss(gather(phi[:b]), gather(phi[b:].reshape(b, 4, -1)), self.params.margin,
                             self.params.contrast_weight)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(Counting)
