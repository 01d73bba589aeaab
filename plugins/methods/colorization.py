"""Colorization: learn features by predicting the colour (ab) of an image from its lightness (L).

- [0] Zhang, Isola, Efros. Colorful Image Colorization. ECCV 2016, arXiv:1603.08511.

The view is converted to CIE L*a*b* (:mod:`ssl_bench.harness.kit.augment.lab`). The backbone sees only L and a
decoder predicts ab at a quarter of the input resolution (as [0]), scored against the ab of the view
average-pooled to that resolution. Two targets:

- ``"classification"`` ([0], Sec. 2.1): ab space is cut into square bins of side ``grid_size`` (10);
  the bins that sRGB colours reach are kept (Q of them). Each target pixel is soft-encoded over its 5
  nearest bins with Gaussian weights (sigma 5), and the loss is the cross-entropy of the predicted
  distribution against it, each pixel weighted by the class-rebalancing weight of its nearest bin
  (Eq. 2-4): ``w ∝ ((1 - lambda) p~ + lambda / Q)^-1`` normalised so that ``E_p~[w] = 1``, with
  ``p~`` the empirical bin distribution smoothed by a Gaussian (sigma 5) in ab space, lambda 0.5.
- ``"regression"`` ([0]'s L2 baseline, Eq. 1): ``1/2 ||ab - ab_hat||^2`` per pixel on ab divided by
  :data:`~ssl_bench.harness.kit.augment.lab.AB_SCALE` (so in about [-1, 1]), averaged over pixels.

Defaults follow [0] (grid 10, 5 neighbours, sigma 5, lambda 0.5); views ``("crop_flip",)``, the
random crop and flip used by the other pretext tasks here; decoder 64 channels from a 4 x 4 seed.

Deviations from [0]:
    - The in-gamut bins are those hit by the L*a*b* conversion of a 64-level sRGB cube (261 bins at
      grid 10; [0] keeps 313, from its own gamut hull). Computed once, a buffer.
    - The empirical distribution is a running estimate: a buffer of nearest-bin counts accumulated
      over the training batches seen so far (this batch included, gathered across processes), not
      [0]'s fixed ImageNet statistics. The weights are normalised under the smoothed ``p~``.
    - The backbone keeps 3 input channels, since it is saved and evaluated on RGB images: L enters
      as the grey sRGB image of the same lightness (a = b = 0), repeated in 3 channels and
      normalised like evaluation input. At evaluation the backbone sees colour images ([0] feeds L).
      Grey inputs train only part of the first convolution's weights: the colour-opponent part
      stays random and turns colour images into noise at evaluation. So by default (``grey_stem``)
      the backbone's first 3-channel convolution is kept colour-blind: after building and after
      every optimizer step each of its filters is projected onto ``w[:, c] ∝ std_c`` (ImageNet std
      of channel c), which makes it respond to R + G + B of the unnormalised image only. The saved
      backbone is then a grey-level network, as [0]'s, that sees the intensity of colour images at
      evaluation.
    - [0] predicts ab with a fully convolutional network; only the backbone's pooled feature vector
      (B, D) is available here, so the decoder is Linear -> (C, 4, 4) -> BN-ReLU -> bilinear upsample
      to (H/4, W/4) -> conv3x3-BN-ReLU -> conv1x1 to Q logits (or 2 values). The bottleneck forces
      the colours of the whole image through the evaluated features.
    - Targets are the ab channels average-pooled by 4 ([0] subsamples them); the loss is a mean over
      pixels, not a sum. No annealed-mean decoding: only the features are used.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import (
    IMAGENET_STD,
    Backbone,
    Batch,
    BenchError,
    Method,
    MethodParams,
    Register,
    gather,
    hookimpl,
    normalize,
)
from ssl_bench.harness.kit.augment import AB_SCALE, lab_to_rgb, rgb_to_lab
from ssl_bench.harness.kit.pixels import denormalize as to_rgb

Target = Literal["classification", "regression"]


@lru_cache(maxsize=4)
def _gamut_bins(grid_size: float, levels: int) -> Tensor:
    v = torch.linspace(0, 1, levels, dtype=torch.float64)
    cube = torch.stack(torch.meshgrid(v, v, v, indexing="ij")).reshape(1, 3, levels * levels, levels)
    ab = rgb_to_lab(cube)[0, 1:].reshape(2, -1).T
    cells: Tensor = torch.unique(torch.round(ab / grid_size), dim=0)  # sorted rows: deterministic order
    return (cells * grid_size).float()


def gamut_bins(grid_size: float = 10.0, levels: int = 64) -> Tensor:
    """Centres (Q, 2) in CIE a*b* units of the bins of side ``grid_size`` hit by a ``levels``^3 sRGB cube."""
    return _gamut_bins(grid_size, levels).clone()


def soft_encode(ab: Tensor, bins: Tensor, neighbours: int = 5, sigma: float = 5.0) -> tuple[Tensor, Tensor]:
    """Soft-encode ab values over their nearest bins with Gaussian weights ([0], Sec. 2.1).

    Args:
        ab: (N, 2) in the units of ``bins``.
        bins: (Q, 2) bin centres.
        neighbours: bins sharing each value's mass.
        sigma: Gaussian width, in ab units.

    Returns:
        targets (N, Q), each row summing to 1 over its ``neighbours`` nearest bins, and the nearest
        bin of each value, int64 (N,).
    """
    d2 = torch.cdist(ab.float(), bins.float(), compute_mode="donot_use_mm_for_euclid_dist").square()
    near_d2, near = d2.topk(neighbours, dim=1, largest=False)  # ascending: near[:, 0] is the nearest
    weights = torch.softmax(-near_d2 / (2 * sigma**2), dim=1)
    return torch.zeros_like(d2).scatter_(1, near, weights), near[:, 0]


def rebalance_weights(counts: Tensor, bins: Tensor, lam: float = 0.5, sigma: float = 5.0) -> tuple[Tensor, Tensor]:
    """Class-rebalancing weights of [0] (Eq. 4) from bin counts.

    Args:
        counts: (Q,) non-negative, not all zero: how often each bin was the nearest.
        bins: (Q, 2) bin centres, for the Gaussian smoothing in ab space.
        lam: weight of the uniform distribution in the mix.
        sigma: width of the smoothing Gaussian, in ab units.

    Returns:
        weights (Q,) with ``(p_smooth * weights).sum() == 1``, and the smoothed distribution (Q,).
    """
    p = counts.float() / counts.sum()
    kernel = torch.exp(-torch.cdist(bins.float(), bins.float()).square() / (2 * sigma**2))
    p_smooth = kernel @ p
    p_smooth = p_smooth / p_smooth.sum()
    w = 1.0 / ((1 - lam) * p_smooth + lam / len(bins))
    return w / (p_smooth * w).sum(), p_smooth


def colour_decoder(in_dim: int, out_channels: int, channels: int, seed_size: int) -> nn.ModuleDict:
    """Layers of the ab decoder: (B, in_dim) -> (B, channels, s, s) seed, then conv layers at (H/4, W/4)."""
    return nn.ModuleDict({
        "seed": nn.Sequential(nn.Linear(in_dim, channels * seed_size**2, bias=False),
                              nn.Unflatten(1, (channels, seed_size, seed_size)),
                              nn.BatchNorm2d(channels), nn.ReLU(inplace=True)),
        "refine": nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                nn.ReLU(inplace=True), nn.Conv2d(channels, out_channels, 1)),
    })


def first_rgb_conv(backbone: nn.Module) -> nn.Conv2d | None:
    """The first ``nn.Conv2d`` with 3 input channels in ``backbone.modules()`` order (the stem), or None."""
    return next((m for m in backbone.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)


@torch.no_grad()
def make_colour_blind(conv: nn.Conv2d) -> None:
    """Project each filter's channel vector onto the ImageNet std vector s, in place.

    ``w[o, :, i, j] <- s (s . w[o, :, i, j]) / |s|^2``: on normalised input ``(x_c - mean_c) / s_c``
    the filter then sees ``sum_c x_c`` of the unnormalised image, never its colour. Weight (O, 3, k, k).
    """
    s = conv.weight.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    conv.weight.copy_(s * (conv.weight * s).sum(dim=1, keepdim=True) / s.square().sum())


def grey_input(light: Tensor) -> Tensor:
    """The normalised grey image of lightness ``light`` (B, 1, H, W) in CIE L*: (B, 3, H, W), a = b = 0."""
    return normalize(lab_to_rgb(torch.cat((light, torch.zeros_like(light).expand(-1, 2, -1, -1)), dim=1)))


class Colorization(Method):
    """Colorful Image Colorization [0]: predict the ab channels of a view from its L channel."""

    name = "colorization"

    class Params(MethodParams):
        views: tuple[str] = ("crop_flip",)
        """The augmentation pipeline of the images to colourise."""
        target: Target = "classification"
        """Soft-encoded classification over ab bins with rebalancing ([0]), or L2 ``regression`` on ab."""
        grid_size: Annotated[float, Field(gt=0)] = 10.0
        """Side of the ab bins in CIE units (10 in [0])."""
        neighbours: Annotated[int, Field(ge=1)] = 5
        """Nearest bins sharing a target pixel's mass (5 in [0])."""
        sigma: Annotated[float, Field(gt=0)] = 5.0
        """Gaussian width of the soft-encoding and of the smoothing of the prior, ab units (5 in [0])."""
        rebalance: bool = True
        """Weight each pixel by the rarity of its colour (Sec. 2.2 of [0])."""
        rebalance_lambda: Annotated[float, Field(gt=0, le=1)] = 0.5
        """Uniform share of the rebalancing mix (0.5 in [0]); 1 gives equal weights."""
        output_stride: Annotated[int, Field(ge=1)] = 4
        """Input side over prediction side (4 in [0])."""
        decoder_channels: Annotated[int, Field(gt=0)] = 64
        """Channels of the decoder."""
        decoder_seed_size: Annotated[int, Field(gt=0)] = 4
        """Side of the map the feature vector is projected to before upsampling."""
        grey_stem: bool = True
        """Keep the backbone's first 3-channel convolution colour-blind (see the deviations)."""

    params: Params
    bins: Tensor
    bin_counts: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        bins = gamut_bins(params.grid_size)
        if params.neighbours > len(bins):
            raise ValueError(f"neighbours = {params.neighbours} > {len(bins)} in-gamut bins")
        self.register_buffer("bins", bins)
        self.register_buffer("bin_counts", torch.zeros(len(bins), dtype=torch.float64))
        out = len(bins) if params.target == "classification" else 2
        if params.grey_stem:
            stem = first_rgb_conv(backbone)
            if stem is None:
                raise BenchError(f"colorization: grey_stem needs a Conv2d with 3 input channels in backbone "
                                 f"{backbone.name!r}; set grey_stem = false")
            make_colour_blind(stem)
        self.decoder = colour_decoder(backbone.feature_dim, out, params.decoder_channels, params.decoder_seed_size)

    def predict(self, images: Tensor, size: tuple[int, int]) -> Tensor:
        """Decoder output (B, Q or 2, h, w) for normalised input images (B, 3, H, W)."""
        seed = self.decoder["seed"](self.backbone(images))
        up = F.interpolate(seed, size=size, mode="bilinear", align_corners=False)
        out: Tensor = self.decoder["refine"](up)
        return out

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Project the stem back onto colour-blind filters after the optimizer step."""
        stem = first_rgb_conv(self.backbone) if self.params.grey_stem else None
        if stem is not None:
            make_colour_blind(stem)

    def loss(self, batch: Batch) -> Tensor:
        """Colorization loss of the view (B, 3, H, W), predicted at (H/s, W/s) with s = output_stride."""
        p = self.params
        lab = rgb_to_lab(to_rgb(batch.views[0]).float())
        s = p.output_stride
        size = (max(1, lab.shape[-2] // s), max(1, lab.shape[-1] // s))
        ab = F.adaptive_avg_pool2d(lab[:, 1:], size)  # (B, 2, h, w), CIE units
        out = self.predict(grey_input(lab[:, :1]), size).float()
        if p.target == "regression":
            return 0.5 * (out - ab / AB_SCALE).square().sum(dim=1).mean()
        flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
        targets, nearest = soft_encode(flat, self.bins, p.neighbours, p.sigma)
        logp = F.log_softmax(out.permute(0, 2, 3, 1).reshape(-1, len(self.bins)), dim=1)
        per_pixel = -(targets * logp).sum(dim=1)
        if not p.rebalance:
            return per_pixel.mean()
        if self.training:
            counts = torch.bincount(nearest, minlength=len(self.bins)).to(self.bin_counts.dtype)
            self.bin_counts += gather(counts[None]).sum(dim=0)
        counts = self.bin_counts if self.bin_counts.sum() > 0 else torch.ones_like(self.bin_counts)
        weights, _ = rebalance_weights(counts, self.bins, p.rebalance_lambda, p.sigma)
        return (weights.to(per_pixel.dtype)[nearest] * per_pixel).mean()


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(Colorization)

