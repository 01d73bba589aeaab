"""Context encoder: learn features by inpainting a masked region of the image from its context.

- [0] Pathak, Krähenbühl, Donahue, Darrell, Efros. Context Encoders: Feature Learning by Inpainting.
  CVPR 2016, arXiv:1604.07379.

A region of each view is filled with the dataset mean (0 after normalisation) by
:func:`ssl_bench.harness.kit.augment.mask_region`; the backbone encodes the masked image to its feature vector
(B, D); a decoder maps it back to an image (Linear to (C', 4, 4), transposed convs doubling the side
up to ``decoder_px``, a 3x3 conv to 3 channels, resized to the view's side when that differs).
The loss is the L2 error on the masked pixels only (Eq. 1 of [0], normalised by the number of
masked values); pixels outside the mask do not enter it, except an optional ring of ``overlap_px``
around the region weighted ``overlap_weight`` ([0] predicts 4 px of context around the hole with a
10x weight, for seamless inpaintings). An adversarial term (Eq. 2-3 of [0]) is optional.

Defaults: the central block of half the side (a quarter of the area, [0]'s central 64 of 128 px).
[0] found random masks better for features (the net latches onto the fixed boundary); on the CPU
CIFAR-10 benchmark the centre did better, and its row there uses lr 0.1 (what was measured:
leaderboard/findings.toml, ``[methods] context_encoder``). No overlap ring: at 32 px [0]'s 4 of
128 px is one pixel. Adversarial weight 0: in [0] the adversarial term is what makes inpaintings sharp (Fig. 1),
the reconstruction loss alone already trains the encoder, and a GAN game destabilises short CPU runs. Decoder
base width 64 at 4 x 4, halving per upsampling (64-32-16-8 channels to 32 px, about 6.5 MMACs per
image, 1.5x ``convnet_small``; width 256 costs 25x the backbone on a CPU). Views ``("crop_flip",)``.

Deviations from [0]:
    - The decoder hangs off the backbone's pooled feature vector (any backbone), not pool5's
      6 x 6 map through a channel-wise fully-connected layer; it predicts the whole image, scored
      on the region (and ring) only.
    - Random masks are one block at a random place, not [0]'s several blocks or random shapes.
    - With ``adversarial_weight = w > 0`` the loss is ``(1 - w) * L_rec + w * L_adv + L_D``: a
      discriminator (a small convnet) on the inpainted image learns real vs inpainted, and the
      generator term uses the discriminator with its weights detached, so one optimizer step
      updates both players (alternating steps in [0]).
    - Mask places come from a generator seeded by a counter buffer (resumable; one stream per process).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, hookimpl
from ssl_bench.harness.kit.augment import mask_region
from ssl_bench.harness.kit.draws import new_draws, next_generator

BASE_PX = 4


def region_weights(mask: Tensor, overlap_px: int = 0, overlap_weight: float = 10.0) -> Tensor:
    """Per-pixel loss weights: 1 in the region, ``overlap_weight`` on a ring of ``overlap_px`` around it.

    Args:
        mask: bool (B, 1, H, W), True inside the region.

    Returns:
        float (B, 1, H, W), 0 outside the region and its ring.
    """
    inside = mask.float()
    if overlap_px == 0:
        return inside
    grown = F.max_pool2d(inside, 2 * overlap_px + 1, stride=1, padding=overlap_px)
    return inside + overlap_weight * (grown - inside)


def inpainting_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean squared error: ``sum(w * (pred - target)^2) / (C * sum(w))``.

    Args:
        pred: reconstructions (B, C, H, W).
        target: original images (B, C, H, W).
        weights: (B, 1, H, W), e.g. from :func:`region_weights`; pixels with weight 0 do not count.
    """
    c = pred.shape[1]
    return (weights * (pred - target).pow(2)).sum() / (c * weights.sum()).clamp_min(1e-12)


def image_decoder(in_dim: int, width: int, out_px: int, channels: int = 3) -> nn.Sequential:
    """Feature vector -> image. Shape: (B, in_dim) -> (B, channels, out_px, out_px).

    Linear to (width, 4, 4), then ``log2(out_px / 4)`` stages of a stride-2 4x4 transposed conv,
    BN and ReLU halving the channels (at least 8), then a 3x3 conv to ``channels``.
    """
    ups = math.log2(out_px / BASE_PX)
    if not ups.is_integer() or ups < 0:
        raise ValueError(f"decoder_px must be 4 times a power of two, got {out_px}")
    layers: list[nn.Module] = [nn.Linear(in_dim, width * BASE_PX * BASE_PX, bias=False),
                               nn.BatchNorm1d(width * BASE_PX * BASE_PX), nn.ReLU(inplace=True),
                               nn.Unflatten(1, (width, BASE_PX, BASE_PX))]
    c = width
    for _ in range(int(ups)):
        c_out = max(8, c // 2)
        layers += [nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
        c = c_out
    layers.append(nn.Conv2d(c, channels, 3, padding=1))
    return nn.Sequential(*layers)


def discriminator(width: int = 32) -> nn.Sequential:
    """Real vs inpainted images: (B, 3, H, W) -> logits (B, 1). No batch norm (one set of weights for both)."""
    return nn.Sequential(
        nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1),
    )


class ContextEncoder(Method):
    """Context encoder [0]: reconstruct a masked region from the backbone's features of the rest."""

    name = "context_encoder"

    class Params(MethodParams):
        views: tuple[str] = ("crop_flip",)
        """The pipeline of the images that are masked and reconstructed."""
        mask_mode: Literal["center", "random"] = "center"
        """Where the region is: the centre, or a random place per image."""
        mask_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
        """Side of the region as a fraction of the image side (0.5 in [0])."""
        overlap_px: Annotated[int, Field(ge=0)] = 0
        """Ring of context pixels around the region that is also reconstructed (4 of 128 px in [0])."""
        overlap_weight: Annotated[float, Field(ge=0)] = 10.0
        """Loss weight of the ring relative to the region (10 in [0])."""
        decoder_width: Annotated[int, Field(gt=0)] = 64
        """Channels of the decoder's 4 x 4 map; halved by each upsampling (at least 8)."""
        decoder_px: Annotated[int, Field(ge=4)] = 32
        """Side the decoder draws (4 times a power of two); resized to the view's side if they differ."""
        adversarial_weight: Annotated[float, Field(ge=0, lt=1)] = 0.0
        """lambda_adv of [0] (0.001 there for inpainting); 0 = reconstruction only, no discriminator."""

    params: Params
    draws: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        self.decoder = image_decoder(backbone.feature_dim, params.decoder_width, params.decoder_px)
        self.discriminator = discriminator() if params.adversarial_weight > 0 else None
        # (seed, number of batches drawn): the seed comes from the global RNG at build time.
        self.register_buffer("draws", new_draws())

    def reconstruct(self, masked: Tensor) -> Tensor:
        """Encode masked images (B, C, H, W) and decode them to (B, C, H, W)."""
        out: Tensor = self.decoder(self.backbone(masked))
        if out.shape[-2:] != masked.shape[-2:]:
            out = F.interpolate(out, size=masked.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def adversarial(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """Generator and discriminator losses (non-saturating GAN) of inpainted images ``fake``."""
        assert self.discriminator is not None
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        g_logits = functional_call(self.discriminator, frozen, (fake,))
        g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        return g_loss, d_loss

    def loss(self, batch: Batch) -> Tensor:
        """Masked L2 (plus the optional adversarial terms) of the view (B, C, H, W)."""
        p, x = self.params, batch.views[0]
        g = next_generator(self.draws, x.device)
        masked, mask = mask_region(x, generator=g, size_fraction=p.mask_fraction, mode=p.mask_mode, fill=0.0)
        pred = self.reconstruct(masked)
        rec = inpainting_loss(pred, x, region_weights(mask, p.overlap_px, p.overlap_weight))
        if self.discriminator is None:
            return rec
        g_loss, d_loss = self.adversarial(x, torch.where(mask, pred, x))
        w = p.adversarial_weight
        return (1 - w) * rec + w * g_loss + d_loss


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(ContextEncoder)
