"""Tile ops: split an image into a grid of tiles, shuffle them, crop jittered tiles, mask a region.

Tiles are numbered row-major: tile ``r * grid + c`` comes from grid row ``r`` and column ``c``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ssl_bench.harness.kit.augment._common import bernoulli_mask, random_permutations

NOROOZI_TILE_FRACTION = 64 / 75
"""Tile side over cell side in the jigsaw puzzle of [0] of :func:`tile_grid` (64 px tiles in 75 px cells)."""


def split_tiles(images: Tensor, grid: int) -> Tensor:
    """Cut each image into ``grid x grid`` equal tiles, without gaps.

    Tiles have side ``H // grid`` by ``W // grid``; when a side is not a multiple of ``grid`` the
    last rows or columns are left out.

    Args:
        images: (B, C, H, W).
        grid: tiles per side.

    Returns:
        tensor of shape (B, grid * grid, C, H // grid, W // grid), tiles in row-major order.
    """
    b, c, height, width = images.shape
    th, tw = height // grid, width // grid
    if th == 0 or tw == 0:
        raise ValueError(f"cannot cut {height}x{width} images into a {grid}x{grid} grid")
    x = images[..., : grid * th, : grid * tw].reshape(b, c, grid, th, grid, tw)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, th, tw)


def merge_tiles(tiles: Tensor, grid: int) -> Tensor:
    """Inverse of :func:`split_tiles`: (B, grid * grid, C, h, w) -> (B, C, grid * h, grid * w)."""
    b, n, c, th, tw = tiles.shape
    if n != grid * grid:
        raise ValueError(f"{n} tiles do not make a {grid}x{grid} grid")
    return tiles.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * th, grid * tw)


def permute_tiles(tiles: Tensor, perms: Tensor) -> Tensor:
    """Reorder each sample's tiles by its own permutation: ``out[i, j] = tiles[i, perms[i, j]]``.

    Args:
        tiles: (B, N, ...).
        perms: int (B, N), each row a permutation of ``0..N-1``.

    Returns:
        tensor of the shape of ``tiles``.
    """
    b, n = tiles.shape[:2]
    if perms.shape != (b, n):
        raise ValueError(f"perms must have shape {(b, n)}, got {tuple(perms.shape)}")
    rows = torch.arange(b, device=tiles.device).unsqueeze(1)
    return tiles[rows, perms.to(tiles.device)]


def jigsaw_2x2(images: Tensor, p: float = 1.0, *, generator: torch.Generator) -> Tensor:
    """Shuffle the four quadrants of each image with its own random permutation.

    The jigsaw augmentation of seed study 000: each image is cut horizontally and vertically
    through its centre and the four tiles are put back in a random order (uniform over the 24
    permutations, the identity included). Pixels within a tile keep their neighbours.

    When a side is odd, its last row or column stays in place (the four tiles must have one
    shape to be exchanged).

    Args:
        images: (B, C, H, W), H and W >= 2.
        p: probability of shuffling a sample (the permutations are drawn whatever ``p``).
        generator: source of randomness, on the images' device.

    Returns:
        tensor of shape (B, C, H, W): for every sample, a rearrangement of the input tiles.
    """
    b, _, height, width = images.shape
    apply = bernoulli_mask(b, p, generator=generator)
    perms = random_permutations(b, 4, generator=generator).to(images.device)
    identity = torch.arange(4, device=images.device).expand(b, 4)
    perms = torch.where(apply.to(images.device).unsqueeze(1), perms, identity)
    th, tw = height // 2, width // 2
    out = images.clone()
    out[..., : 2 * th, : 2 * tw] = merge_tiles(permute_tiles(split_tiles(images, 2), perms), 2)
    return out


def tile_grid(
    images: Tensor,
    grid: int = 3,
    tile_size: int | None = None,
    gap: int | None = None,
    *,
    generator: torch.Generator,
    jitter: bool = True,
) -> Tensor:
    """Crop a ``grid x grid`` puzzle of square tiles, each at a random place inside its cell.

    - [0] Noroozi & Favaro, Unsupervised Learning of Visual Representations by Solving Jigsaw
      Puzzles, 2016, arXiv:1603.09246 (a 225 px crop cut into 3 x 3 cells of 75 px, a random
      64 px tile in each, so neighbouring tiles are 0..22 px apart)
    - [1] Noroozi et al., Representation Learning by Learning to Count, 2017, arXiv:1708.06734
      (2 x 2 tiles; ``gap=0, jitter=False`` gives the exact quadrants)

    The grid is a square of ``grid`` cells of side ``cell`` per side, centred in the image. A tile
    of side ``tile_size`` sits in each cell at an offset drawn per sample and per tile, uniform
    in ``0..gap`` on each axis (``gap = cell - tile_size``), or at the centre of the cell
    (offset ``gap // 2``) without jitter. Sizes:

    - ``tile_size`` and ``gap`` given: ``cell = tile_size + gap``; the grid must fit in the image;
    - one given: ``cell = min(H, W) // grid`` and the other is ``cell`` minus it;
    - neither: ``cell = min(H, W) // grid`` and ``tile_size = floor(cell * 64 / 75)`` as in [0]
      (8 px tiles in 10 px cells at 32 px).

    Args:
        images: (B, C, H, W).
        grid: cells per side.
        tile_size: tile side in pixels.
        gap: room in pixels a tile can move inside its cell, per axis.
        generator: source of randomness, on the images' device (drawn from even without jitter).
        jitter: draw each tile's offset; False centres every tile in its cell.

    Returns:
        tensor of shape (B, grid * grid, C, tile_size, tile_size), tiles in row-major cell order.
    """
    b, _, height, width = images.shape
    side = min(height, width)
    if tile_size is not None and gap is not None:
        cell = tile_size + gap
    else:
        cell = side // grid
        if tile_size is None:
            tile_size = cell - gap if gap is not None else int(cell * NOROOZI_TILE_FRACTION)
        gap = cell - tile_size
    if tile_size < 1 or gap < 0 or grid * cell > side:
        raise ValueError(f"a {grid}x{grid} grid of {tile_size} px tiles with gap {gap} does not fit {height}x{width}")
    n = grid * grid
    u = torch.rand(b, n, 2, generator=generator, device=generator.device).to(images.device)
    offsets = (u * (gap + 1)).floor_().clamp_(max=gap).long() if jitter else torch.full_like(u, gap // 2).long()
    cells = torch.arange(n, device=images.device)
    origin = torch.stack((cells // grid, cells % grid), dim=1) * cell  # (n, 2) cell corners in the grid
    origin += torch.tensor([(height - grid * cell) // 2, (width - grid * cell) // 2], device=images.device)
    start = origin + offsets  # (B, n, 2) top-left corner of every tile
    ramp = torch.arange(tile_size, device=images.device)
    rows = (start[..., 0:1] + ramp).view(b, n, tile_size, 1)
    cols = (start[..., 1:2] + ramp).view(b, n, 1, tile_size)
    batch = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 1, 4, 2, 3)  # (B, n, C, t, t)


def mask_region(
    images: Tensor,
    *,
    generator: torch.Generator,
    size_fraction: float = 0.5,
    mode: Literal["center", "random"] = "center",
    fill: float | Sequence[float] = 0.5,
) -> tuple[Tensor, Tensor]:
    """Blank out a rectangle of each image, the input of a context encoder.

    - [0] Pathak et al., Context Encoders: Feature Learning by Inpainting, 2016, arXiv:1604.07379
      (the central 64 x 64 block of a 128 x 128 image: ``size_fraction=0.5, mode="center"``; or
      a block at a random place: ``mode="random"``)

    The region has sides ``round(size_fraction * H)`` by ``round(size_fraction * W)``. Its place is
    drawn per sample (uniform over the positions inside the image) in both modes, so ``mode``
    does not change the random stream; ``"center"`` ignores the draw.

    Args:
        images: float (B, C, H, W).
        generator: source of randomness, on the images' device.
        size_fraction: side of the region as a fraction of the image side, in (0, 1].
        mode: ``"center"`` or ``"random"``.
        fill: value written into the region, one float or one per channel (Pathak et al. use
            the dataset mean; 0.5 is mid-grey).

    Returns:
        the masked images (B, C, H, W) and the mask, bool (B, 1, H, W), True inside the region.
    """
    if not 0 < size_fraction <= 1 or mode not in ("center", "random"):
        raise ValueError(f"need 0 < size_fraction <= 1 and mode 'center' or 'random', got {size_fraction}, {mode!r}")
    b, c, height, width = images.shape
    rh, rw = max(1, round(size_fraction * height)), max(1, round(size_fraction * width))
    u = torch.rand(b, 2, generator=generator, device=generator.device).to(images.device)
    if mode == "random":
        top = (u[:, 0] * (height - rh + 1)).floor_().clamp_(max=height - rh).long()
        left = (u[:, 1] * (width - rw + 1)).floor_().clamp_(max=width - rw).long()
    else:
        top = torch.full((b,), (height - rh) // 2, device=images.device)
        left = torch.full((b,), (width - rw) // 2, device=images.device)
    ys = torch.arange(height, device=images.device)
    xs = torch.arange(width, device=images.device)
    in_rows = (ys >= top.unsqueeze(1)) & (ys < (top + rh).unsqueeze(1))  # (B, H)
    in_cols = (xs >= left.unsqueeze(1)) & (xs < (left + rw).unsqueeze(1))  # (B, W)
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1)
    value = torch.as_tensor(fill, dtype=images.dtype, device=images.device).reshape(1, -1, 1, 1).expand(b, c, 1, 1)
    return torch.where(mask, value, images), mask
