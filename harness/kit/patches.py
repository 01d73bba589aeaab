"""Patches of masked image modelling: images as rows of patch pixels, and random patch masks.

- [0] He, Chen, Xie, Li, Dollar, Girshick. Masked Autoencoders Are Scalable Vision Learners. CVPR 2022,
  arXiv:2111.06377 (patch targets, per-sample random masking by sorting uniform noise).
- [1] Xie et al. SimMIM: A Simple Framework for Masked Image Modeling. CVPR 2022, arXiv:2111.09886
  (random masks of a fixed count per image, on a grid of mask patches).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def patchify(images: Tensor, patch_px: int) -> Tensor:
    """Cut images into non-overlapping square patches, row-major, each flattened as (row, column, channel).

    Args:
        images: Shape: (B, C, H, W), H and W multiples of ``patch_px``.
        patch_px: side p of a patch.

    Returns:
        Shape: (B, H/p * W/p, p * p * C).

    Raises:
        ValueError: H or W is not a multiple of ``patch_px``.
    """
    b, c, h, w = images.shape
    if h % patch_px or w % patch_px:
        raise ValueError(f"patchify: image {h}x{w} is not a multiple of the patch side {patch_px}")
    x = images.reshape(b, c, h // patch_px, patch_px, w // patch_px, patch_px)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch_px) * (w // patch_px), patch_px * patch_px * c)


def masked_count(tokens: int, ratio: float) -> int:
    """Patches masked out of ``tokens`` at ``ratio``: ``ceil(tokens * ratio)`` ([1]'s count), at most ``tokens - 1``.

    [0] keeps ``int(tokens * (1 - ratio))`` visible, the same count wherever ``tokens * ratio`` is an integer
    (48 of 64 at 0.75). At least one patch stays visible, so an encoder always has an input.
    """
    return min(tokens - 1, math.ceil(tokens * ratio - 1e-9))


def random_patch_mask(batch: int, grid: tuple[int, int], masked: int, *, generator: torch.Generator,
                      cell: int = 1) -> Tensor:
    """Per-sample random masks with exactly ``masked`` cells masked, each cell ``cell x cell`` patches.

    Each sample draws uniform noise per cell; its ``masked`` cells of highest noise are masked ([0]'s
    argsort of noise, a uniformly random subset). With ``cell > 1`` the mask is drawn on the coarser grid
    and every cell covers ``cell x cell`` patches ([1]'s mask patch larger than the model's patch).

    Args:
        batch: number of samples B.
        grid: patches (rows, columns) of an image, multiples of ``cell``.
        masked: cells masked per sample, in [0, cells].
        generator: the source of the noise; its device is the mask's.
        cell: side of a mask cell in patches.

    Returns:
        bool, True where masked, row-major over the patch grid. Shape: (B, rows * columns).
    """
    rows, cols = grid
    if rows % cell or cols % cell:
        raise ValueError(f"random_patch_mask: a {rows}x{cols} patch grid is not a multiple of mask cells of {cell}")
    cr, cc = rows // cell, cols // cell
    if not 0 <= masked <= cr * cc:
        raise ValueError(f"random_patch_mask: cannot mask {masked} of {cr * cc} cells")
    noise = torch.rand(batch, cr * cc, generator=generator, device=generator.device)
    order = noise.argsort(dim=1, descending=True)
    mask = torch.zeros(batch, cr * cc, dtype=torch.bool, device=noise.device)
    mask.scatter_(1, order[:, :masked], True)
    if cell > 1:
        mask = mask.view(batch, cr, 1, cc, 1).expand(batch, cr, cell, cc, cell).reshape(batch, rows * cols)
    return mask


def visible_indices(mask: Tensor) -> Tensor:
    """Indices of the unmasked patches of each sample, ascending; every row must have the same count.

    Args:
        mask: bool, True where masked. Shape: (B, N).

    Returns:
        int64. Shape: (B, N - masked per row).
    """
    visible = int((~mask[0]).sum()) if mask.shape[0] else 0
    return mask.to(torch.uint8).argsort(dim=1, stable=True)[:, :visible]
