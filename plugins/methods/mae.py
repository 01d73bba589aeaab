"""MAE: a ViT encodes a random quarter of the patches; a light decoder reconstructs the masked ones.

- [0] He, Chen, Xie, Li, Dollar, Girshick. Masked Autoencoders Are Scalable Vision Learners. CVPR 2022,
  arXiv:2111.06377.

Each image's patches (4 px on ``vit_tiny_cifar``) get their position embeddings; a random ``mask_ratio``
of them is dropped per sample (exactly ``ceil(N * ratio)``: 48 of 64 at 0.75), and the backbone's blocks
and norm encode the class token and the visible patches only (sec. 3, "MAE encoder"): the encoder is the
backbone itself, the module the evaluators probe. A Linear maps the latent to the decoder width; a shared,
learned mask token fills every masked place, fixed 2-D sine-cosine positions are added to the full set, and
a few transformer blocks and a Linear predict every patch's pixels. The loss is the mean squared error on
the masked patches only, the targets each patch's pixels normalised by that patch's mean and variance
(``norm_pix_loss``, [0]'s better target, Table 1c): eq. in sec. 3 and [0]'s code, variance unbiased,
eps 1e-6. Targets are the normalised view, as in [0]'s code.

Defaults and why (paper values scaled to CIFAR-size runs):
    mask ratio 0.75 and norm_pix_loss as [0]. Decoder 2 blocks of width 128, 4 heads ([0]: 8 blocks of 512,
    16 heads, and Table 1a-b finds 1 block of 512 nearly as good for fine-tuning): a decoder a fraction of
    the 192-wide encoder keeps the CPU cost with the encoder, which sees 17 of 65 tokens. Views
    ``("crop_flip",)``: random resized crop and flip only, as [0] (its crop scale is 0.2-1, crop_flip's
    0.35-1; the benchmark's ``[pretrain.augmentations]`` can set it).

Deviations from [0]:
    - Masks come from a generator seeded by a counter buffer (resumable, one stream per process), not
      from the global RNG; the visible tokens enter the encoder in patch order, not in noise order (the
      same set; attention with position embeddings does not see the order).
    - The encoder's positions are the backbone's (learned by default; ``pos_embed = "sincos"`` on the
      backbone gives [0]'s fixed table).
    - The optimizer and schedule are the benchmark file's ([0]: AdamW, lr 1.5e-4 x batch / 256, betas
      (0.9, 0.95), wd 0.05, 40 warm-up epochs). The loss is computed in float32.
    - Nothing crosses processes: the loss is a mean over this process's masked patches, the same count in
      every process, so the DDP-averaged gradient is the global batch's.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, hookimpl, rank
from ssl_bench.harness.kit.draws import new_draws, next_generator
from ssl_bench.harness.kit.patches import masked_count, patchify, random_patch_mask, visible_indices
from ssl_bench.plugins.backbones.vit import Block, require_vit, sincos_table


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, *, norm_pix: bool = True) -> Tensor:
    """[0]'s loss: mean squared error per patch, averaged over the masked patches only.

    Args:
        pred: predicted patch pixels. Shape: (B, N, P).
        target: the patches' pixels (:func:`~ssl_bench.harness.kit.patches.patchify`). Shape: (B, N, P).
        mask: True where a patch was masked. Shape: (B, N).
        norm_pix: normalise each target patch by its mean and unbiased variance (+ 1e-6) first.

    Returns:
        Scalar loss.
    """
    target = target.float()
    if norm_pix:
        target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # (B, N)
    m = mask.float()
    return (per_patch * m).sum() / m.sum()


class MAE(Method):
    """MAE [0]: encode the visible patches, decode all of them, score the masked ones."""

    name = "mae"

    class Params(MethodParams):
        views: tuple[str] = ("crop_flip",)
        """The pipeline of the images that are masked and reconstructed ([0]: crop and flip only)."""
        mask_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.75
        """Share of the patches masked per image ([0]: 0.75)."""
        norm_pix_loss: bool = True
        """Targets normalised per patch ([0]: true, its better setting)."""
        decoder_width: Annotated[int, Field(gt=0, multiple_of=4)] = 128
        """Decoder token width ([0]: 512)."""
        decoder_depth: Annotated[int, Field(gt=0)] = 2
        """Decoder blocks ([0]: 8)."""
        decoder_heads: Annotated[int, Field(gt=0)] = 4
        """Decoder attention heads ([0]: 16)."""

        @model_validator(mode="after")
        def _heads_divide_width(self) -> MAE.Params:
            if self.decoder_width % self.decoder_heads:
                raise ValueError(f"decoder_width {self.decoder_width} must be a multiple of decoder_heads "
                                 f"{self.decoder_heads}")
            return self

    params: Params
    draws: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        vit = require_vit(self.name, backbone)
        d, p = params.decoder_width, vit.patch_px
        self.decoder_embed = nn.Linear(vit.feature_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_blocks = nn.ModuleList([Block(d, params.decoder_heads) for _ in range(params.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, p * p * 3)
        for part in (self.decoder_embed, self.decoder_blocks, self.decoder_pred):  # [0]'s init: Xavier uniform
            for m in part.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)
        # (seed, number of batches drawn): the seed comes from the global RNG at build time.
        self.register_buffer("draws", new_draws())

    def mask(self, batch: int, grid: tuple[int, int], device: torch.device) -> Tensor:
        """This step's masks: bool (batch, h * w), True where masked, ``ceil(h * w * mask_ratio)`` per row."""
        g = next_generator(self.draws, device, salt=104729 * rank())
        return random_patch_mask(batch, grid, masked_count(grid[0] * grid[1], self.params.mask_ratio), generator=g)

    def encode_visible(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The backbone on the class token and the visible patches of images (B, 3, H, W).

        Returns:
            The latent (B, 1 + V, D), class token first, and the visible patches' indices (B, V).
        """
        vit = require_vit(self.name, self.backbone)
        tokens, grid = vit.embed.patches(x)
        tokens = tokens + vit.embed.positions(grid)
        keep = visible_indices(mask)
        visible = tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return vit.encode(torch.cat([vit.embed.cls(x.shape[0]), visible], dim=1)), keep

    def decode(self, latent: Tensor, keep: Tensor, grid: tuple[int, int]) -> Tensor:
        """Pixels of every patch from the latent (B, 1 + V, D) of the visible ones. Shape: (B, h * w, p * p * 3)."""
        h = self.decoder_embed(latent)
        b, n, d = h.shape[0], grid[0] * grid[1], h.shape[-1]
        full = self.mask_token.to(h.dtype).expand(b, n, d).scatter(1, keep.unsqueeze(-1).expand(-1, -1, d), h[:, 1:])
        pos = torch.cat([h.new_zeros(1, d), sincos_table(d, *grid).to(h)]).unsqueeze(0)
        seq = torch.cat([h[:, :1], full], dim=1) + pos
        for block in self.decoder_blocks:
            seq = block(seq)
        out: Tensor = self.decoder_pred(self.decoder_norm(seq))[:, 1:]
        return out

    def loss(self, batch: Batch) -> Tensor:
        """[0]'s loss of the view (B, C, H, W): masked patches only, per-patch normalised targets."""
        vit = require_vit(self.name, self.backbone)
        x = vit.embed.pad(batch.views[0])
        grid = (x.shape[-2] // vit.patch_px, x.shape[-1] // vit.patch_px)
        mask = self.mask(x.shape[0], grid, x.device)
        latent, keep = self.encode_visible(x, mask)
        pred = self.decode(latent, keep, grid)
        return mae_loss(pred, patchify(x, vit.patch_px), mask, norm_pix=self.params.norm_pix_loss)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(MAE)
