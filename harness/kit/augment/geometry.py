"""Geometric ops: random resized crops, flips, quarter-turn rotations and multi-crop views."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness.kit.augment._common import _size2, bernoulli_mask

_CROP_ATTEMPTS = 10



def sample_crop_boxes(
    batch_size: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator,
) -> Tensor:
    """Sample one random-resized-crop box per sample, as ``RandomResizedCrop.get_params`` does.

    Each sample tries ``10`` candidate boxes at once (area fraction uniform in ``scale``, aspect
    ratio log-uniform in ``ratio``, sides rounded to whole pixels) and keeps the first that fits
    in the image; when none fits it falls back to the largest central crop with a ratio in range.
    The position of the chosen box is uniform over the positions that keep it inside the image.

    Args:
        batch_size: B.
        height: image height H in pixels.
        width: image width W in pixels.
        scale: range of the crop's area as a fraction of the image area.
        ratio: range of the crop's aspect ratio (width / height).
        generator: source of randomness; the boxes live on its device.

    Returns:
        float32 tensor of shape (B, 4): ``top, left, height, width`` in whole pixels.
    """
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}")
    device = generator.device
    shape = (batch_size, _CROP_ATTEMPTS)
    area = torch.rand(shape, generator=generator, device=device).mul_(scale[1] - scale[0]).add_(scale[0])
    area.mul_(height * width)
    log_r = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.rand(shape, generator=generator, device=device).mul_(log_r[1] - log_r[0]).add_(log_r[0]).exp_()
    w = (area * aspect).sqrt_().round_()
    h = (area / aspect).sqrt_().round_()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first valid candidate
    found = valid.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    # Fallback: central crop, as large as possible with its ratio clamped into ``ratio``.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(height * ratio[1])), float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))

    offsets = torch.rand((batch_size, 2), generator=generator, device=device)
    top = (offsets[:, 0] * (height - h + 1)).floor_().clamp_(max=height - h)
    left = (offsets[:, 1] * (width - w + 1)).floor_().clamp_(max=width - w)
    top = torch.where(found, top, ((height - h) / 2).floor())
    left = torch.where(found, left, ((width - w) / 2).floor())
    return torch.stack((top, left, h, w), dim=1)


def crop_resize(
    images: Tensor, boxes: Tensor, size: int | tuple[int, int], flip: Tensor | None = None
) -> Tensor:
    """Crop one box per sample and resize it bilinearly, optionally mirrored, in one ``grid_sample``.

    The sampling grid is the affine map of each box (``align_corners=False`` semantics, as
    ``F.interpolate``) with the x axis reversed for flipped samples. Boxes are axis-aligned, so
    the grid is built from one x and one y coordinate vector per sample (what ``F.affine_grid``
    would give, without its per-pixel matrix product). Source coordinates are clamped to the box's
    outermost pixel centres, so edge pixels are replicated when upsampling, as ``resized_crop``
    does on the cropped image.

    Deviation: no antialiasing; a box larger than the output aliases, as
    ``resized_crop(..., antialias=False)``. At the usual CIFAR sizes crops are upsampled.

    Args:
        images: float (B, C, H, W).
        boxes: (B, 4) ``top, left, height, width`` in pixels (whole pixels match torchvision).
        size: output side, or (height, width).
        flip: optional bool (B,); True mirrors that sample horizontally after cropping.

    Returns:
        float tensor of shape (B, C, size_h, size_w).
    """
    b, _, height, width = images.shape
    out_h, out_w = _size2(size)
    top, left, box_h, box_w = boxes.to(device=images.device, dtype=torch.float32).unbind(dim=1)

    def axis(start: Tensor, extent: Tensor, n_out: int, n_in: int, reverse: Tensor | None) -> Tensor:
        # Output pixel centres in [-1, 1] -> source pixel centres of the box, in normalised units.
        base = torch.arange(n_out, device=images.device, dtype=torch.float32).mul_(2).add_(1).div_(n_out).sub_(1)
        base = base.expand(b, n_out)
        if reverse is not None:
            base = base * (1 - 2 * reverse.to(device=images.device, dtype=torch.float32)).unsqueeze(1)
        coord = base * (extent / n_in).unsqueeze(1) + ((2 * start + extent) / n_in - 1).unsqueeze(1)
        lo = ((2 * start + 1) / n_in - 1).unsqueeze(1)
        hi = ((2 * (start + extent) - 1) / n_in - 1).unsqueeze(1)
        return torch.clamp(coord, lo, hi)

    gx = axis(left, box_w, out_w, width, flip)  # (B, out_w)
    gy = axis(top, box_h, out_h, height, None)  # (B, out_h)
    grid = torch.stack((gx.unsqueeze(1).expand(b, out_h, out_w), gy.unsqueeze(2).expand(b, out_h, out_w)), dim=-1)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    images: Tensor,
    size: int | tuple[int, int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator,
    flip_p: float = 0.0,
) -> Tensor:
    """Random resized crop per sample (``RandomResizedCrop`` with integer boxes), with an optional flip.

    Draws boxes with :func:`sample_crop_boxes`, then a flip mask (always drawn, so ``flip_p``
    does not change the stream of random numbers), and resamples once with :func:`crop_resize`.

    Args:
        images: float (B, C, H, W).
        size: output side, or (height, width).
        scale: range of the crop's area as a fraction of the image area.
        ratio: range of the crop's aspect ratio (width / height).
        generator: source of randomness, on the images' device.
        flip_p: probability of mirroring each sample horizontally.

    Returns:
        float tensor of shape (B, C, size, size).
    """
    b, _, height, width = images.shape
    boxes = sample_crop_boxes(b, height, width, scale, ratio, generator=generator)
    flip = bernoulli_mask(b, flip_p, generator=generator)
    return crop_resize(images, boxes, size, flip=flip)


def horizontal_flip(images: Tensor, p: float = 0.5, *, generator: torch.Generator) -> Tensor:
    """Mirror each sample left-right with probability ``p``.

    Args:
        images: (B, C, H, W).
        p: probability of flipping a sample.
        generator: source of randomness, on the images' device.

    Returns:
        tensor of shape (B, C, H, W).
    """
    flip = bernoulli_mask(images.shape[0], p, generator=generator).view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(-1), images)


def rotate90(images: Tensor, k: Tensor | int) -> Tensor:
    """Rotate each sample counter-clockwise by ``k`` quarter turns, as ``torch.rot90(x, k, (-2, -1))``.

    A quarter turn is a transpose and a flip; each sample picks its transpose and flips with
    ``torch.where``, so one call serves the whole batch without a loop.

    Args:
        images: (B, C, S, S); square, so that every rotation has the input's shape.
        k: quarter turns per sample, int (B,) (any integer; taken mod 4), or one int for all.

    Returns:
        tensor of shape (B, C, S, S).
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotate90 needs square images, got shape {tuple(images.shape)}")
    k = torch.as_tensor(k, device=images.device).remainder(4).expand(images.shape[0]).view(-1, 1, 1, 1)
    # rot90 by 1: transpose then flip rows; by 2: flip rows and columns; by 3: transpose then flip columns.
    x = torch.where(k % 2 == 1, images.transpose(-2, -1), images)
    x = torch.where((k == 1) | (k == 2), x.flip(-2), x)
    return torch.where(k >= 2, x.flip(-1), x)


def random_rotation(images: Tensor, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Rotate each sample by a random multiple of 90 degrees and return the multiple as its label.

    The rotation-prediction pretext task of RotNet.

    - [0] Gidaris et al., Unsupervised Representation Learning by Predicting Image Rotations, 2018,
      arXiv:1803.07728

    Args:
        images: (B, C, S, S), square.
        generator: source of randomness, on the images' device.

    Returns:
        rotated images (B, C, S, S) and labels int64 (B,) in {0, 1, 2, 3}: the number of
        counter-clockwise quarter turns (``torch.rot90`` convention).
    """
    labels = torch.randint(0, 4, (images.shape[0],), generator=generator, device=generator.device)
    return rotate90(images, labels), labels.to(images.device)


def all_rotations(images: Tensor) -> tuple[Tensor, Tensor]:
    """Every sample in each of its four rotations, as RotNet trains ([0] of :func:`random_rotation`).

    Args:
        images: (B, C, S, S), square.

    Returns:
        images (4B, C, S, S), rotation-major (rows ``r*B .. r*B + B - 1`` are the batch turned ``r``
        quarter turns counter-clockwise), and labels int64 (4B,) holding ``r``.
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"all_rotations needs square images, got shape {tuple(images.shape)}")
    out = torch.cat([torch.rot90(images, r, dims=(-2, -1)) for r in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return out, labels


def multi_crop(
    images: Tensor,
    *,
    generator: torch.Generator,
    n_global: int = 2,
    n_local: int = 6,
    global_size: int | None = None,
    local_size: int | None = None,
    global_scale: tuple[float, float] = (0.14, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.14),
    flip_p: float = 0.5,
) -> list[Tensor]:
    """Multi-crop views: a few large global crops and several small local ones, each with a flip.

    - [0] Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments
      (SwAV), 2020, arXiv:2006.09882: 2 x 224 px crops of scale (0.14, 1) and 6 x 96 px crops of
      scale (0.05, 0.14).

    Every view is an independent :func:`random_resized_crop` (boxes drawn per sample). Colour
    distortion is left to the caller, which applies its colour ops to each view.

    Args:
        images: float (B, C, H, W).
        generator: source of randomness, on the images' device.
        n_global: number of global views.
        n_local: number of local views.
        global_size: side of the global views; None keeps the input height.
        local_size: side of the local views; None scales the input height by 96/224 as SwAV does
            (14 px at 32 px).
        global_scale: crop area range of the global views, as a fraction of the image area.
        local_scale: crop area range of the local views.
        flip_p: probability of mirroring each view of each sample.

    Returns:
        ``n_global`` tensors (B, C, global_size, global_size) followed by ``n_local`` tensors
        (B, C, local_size, local_size).
    """
    height = images.shape[-2]
    g_size = global_size or height
    l_size = local_size or max(1, round(height * 96 / 224))
    sizes = [(g_size, global_scale)] * n_global + [(l_size, local_scale)] * n_local
    return [random_resized_crop(images, size, scale, generator=generator, flip_p=flip_p) for size, scale in sizes]
