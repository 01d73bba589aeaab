"""SimMIM: masked patches become a learned mask token in the encoder's input; a linear head predicts their pixels.

- [0] Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu. SimMIM: A Simple Framework for Masked Image Modeling. CVPR
  2022, arXiv:2111.09886.

Each image's patch embeddings (before positions) are replaced by one learned mask token wherever the
random mask says so ([0]'s ViT: ``x * (1 - w) + mask_token * w``), positions and the class token are added
and the backbone's blocks and norm encode the whole sequence, so the encoder is the backbone itself, the
module the evaluators probe. A linear head (a 1x1 convolution in [0]) maps every patch token to that
patch's p x p x 3 pixels; the loss is the L1 error on the masked pixels only, divided by their count and
the 3 channels (sec. 3 and [0]'s code). Targets are the normalised view, as [0]'s code.

The mask is drawn on a grid of mask patches (``mask_patch_px``), each masking the model patches it
covers, a fixed ``ceil(cells * mask_ratio)`` of them per image ([0]'s mask generator).

Defaults and why (paper values scaled to CIFAR-size runs):
    mask ratio 0.6 as [0] for ViTs. Mask patch = the ViT's patch, 4 px (an 8 x 8 mask grid at 32 px):
    [0] masks 32 px patches of 192 px images (a 6 x 6 grid, each cell 2 x 2 ViT-B patches) and finds
    32 px best there (Table 1); at 32 px a 32 px cell is the whole image, and 8 px cells leave a 4 x 4
    grid of 16 cells, so the finest grid keeps the most distinct masks. Views ``("crop_flip",)``: [0]
    uses a random resized crop (scale 0.67-1) and flip only.

Deviations from [0]:
    - Masks come from a generator seeded by a counter buffer (resumable, one stream per process).
    - The optimizer and schedule are the benchmark file's ([0]: AdamW, lr 8e-4 x batch / 2048, wd 0.05,
      betas (0.9, 0.999), 10 warm-up epochs, gradient clipping at 5). The loss is computed in float32.
    - Nothing crosses processes: the count of masked pixels is the same in every process, so the
      DDP-averaged gradient of the per-process losses is the global batch's.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from ssl_bench.harness import Backbone, Batch, BenchError, Method, MethodParams, Register, hookimpl, rank
from ssl_bench.harness.kit.draws import new_draws, next_generator
from ssl_bench.harness.kit.patches import masked_count, patchify, random_patch_mask
from ssl_bench.plugins.backbones.vit import IncompatibleBackboneError, require_vit


def simmim_loss(pred: Tensor, target: Tensor, mask: Tensor, channels: int = 3) -> Tensor:
    """[0]'s loss: ``sum(|pred - target| * mask) / (masked pixels + 1e-5) / channels``.

    Args:
        pred: predicted patch pixels, p * p * channels per patch. Shape: (B, N, P).
        target: the patches' pixels (:func:`~ssl_bench.harness.kit.patches.patchify`). Shape: (B, N, P).
        mask: True where a patch was masked. Shape: (B, N).
        channels: image channels C (P = p * p * C).

    Returns:
        Scalar loss: mean absolute error over the masked pixels and channels.
    """
    m = mask.float().unsqueeze(-1)  # (B, N, 1)
    masked_pixels = m.sum() * (pred.shape[-1] // channels)
    return ((pred.float() - target.float()).abs() * m).sum() / (masked_pixels + 1e-5) / channels


class SimMIM(Method):
    """SimMIM [0]: mask tokens in the encoder's input, a linear pixel head, L1 on the masked pixels."""

    name = "simmim"

    class Params(MethodParams):
        views: tuple[str] = ("crop_flip",)
        """The pipeline of the images that are masked and reconstructed ([0]: crop and flip only)."""
        mask_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.6
        """Share of the mask patches masked per image ([0]: 0.6 for ViT-B)."""
        mask_patch_px: Annotated[int, Field(gt=0)] | None = None
        """Side of a mask patch in pixels, a multiple of the ViT's patch; None = the ViT's patch ([0]: 32)."""

    params: Params
    draws: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        vit = require_vit(self.name, backbone)
        p = vit.patch_px
        cell_px = params.mask_patch_px or p
        if cell_px % p:
            raise IncompatibleBackboneError(f"method 'simmim': mask_patch_px {cell_px} must be a multiple of the "
                                            f"backbone's patch ({p} px)")
        self.cell = cell_px // p
        self.mask_token = nn.Parameter(torch.zeros(1, 1, vit.feature_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.head = nn.Linear(vit.feature_dim, p * p * 3)
        # (seed, number of batches drawn): the seed comes from the global RNG at build time.
        self.register_buffer("draws", new_draws())

    def mask(self, batch: int, grid: tuple[int, int], device: torch.device) -> Tensor:
        """This step's masks over the patch grid: bool (batch, h * w), True where masked."""
        cells = (grid[0] // self.cell) * (grid[1] // self.cell)
        g = next_generator(self.draws, device, salt=104729 * rank())
        return random_patch_mask(batch, grid, masked_count(cells, self.params.mask_ratio), generator=g, cell=self.cell)

    def reconstruct(self, x: Tensor, mask: Tensor) -> Tensor:
        """Patch pixels predicted from images (B, 3, H, W) whose masked patches are mask tokens. Shape: (B, N, P)."""
        vit = require_vit(self.name, self.backbone)
        tokens, grid = vit.embed.patches(x)
        w = mask.unsqueeze(-1).to(tokens.dtype)
        tokens = tokens * (1 - w) + self.mask_token.to(tokens.dtype) * w
        seq = torch.cat([vit.embed.cls(x.shape[0]), tokens + vit.embed.positions(grid)], dim=1)
        out: Tensor = self.head(vit.encode(seq)[:, 1:])
        return out

    def loss(self, batch: Batch) -> Tensor:
        """[0]'s loss of the view (B, C, H, W): L1 on the masked pixels."""
        vit = require_vit(self.name, self.backbone)
        x = vit.embed.pad(batch.views[0])
        grid = (x.shape[-2] // vit.patch_px, x.shape[-1] // vit.patch_px)
        if grid[0] % self.cell or grid[1] % self.cell:
            raise BenchError(f"simmim: a {x.shape[-2]}x{x.shape[-1]} view is not a multiple of mask patches of "
                             f"{self.cell * vit.patch_px} px")
        mask = self.mask(x.shape[0], grid, x.device)
        return simmim_loss(self.reconstruct(x, mask), patchify(x, vit.patch_px), mask)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(SimMIM)
