"""Batched, on-device augmentation ops with random parameters drawn per sample.

Every op takes float images in [0, 1] of shape (B, C, H, W) on any device and returns a new tensor
on the same device (inputs are never modified). Random ops draw all their parameters from an
explicit ``generator`` that must live on the images' device; the number of draws depends only on
the batch size, so the same seed gives the same output whatever the image content.

The ``adjust_*`` functions take per-sample factors of shape (B,) and match the per-image
``torchvision.transforms.v2.functional`` op with the same factor (float32, up to rounding);
``crop_resize`` matches ``resized_crop(..., antialias=False)`` on the same integer box.

Pipelines (``plugins/augmentations/``) compose these ops; there is no composition class, a
pipeline's ``__call__`` is the composition.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G, B, as in ``torchvision``'s ``rgb_to_grayscale``."""

_CROP_ATTEMPTS = 10


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _per_sample(factor: Tensor | float, images: Tensor) -> Tensor:
    """A factor as a (B, 1, 1, 1) tensor of the images' dtype and device."""
    f = torch.as_tensor(factor, dtype=images.dtype, device=images.device)
    return f.reshape(-1, 1, 1, 1) if f.ndim else f.expand(images.shape[0]).reshape(-1, 1, 1, 1)


def bernoulli_mask(batch_size: int, p: float, *, generator: torch.Generator) -> Tensor:
    """Per-sample coin flips: bool (B,) on the generator's device, True with probability ``p``."""
    return torch.rand(batch_size, generator=generator, device=generator.device) < p


# ----------------------------------------------------------------------------------- geometry


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


# ----------------------------------------------------------------------------------- colour


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma of RGB images with ITU-R 601-2 weights.

    Args:
        images: float (B, 3, H, W).

    Returns:
        float tensor of shape (B, 1, H, W).
    """
    r, g, b = images.unbind(dim=-3)
    return r.mul(LUMA_WEIGHTS[0]).add_(g, alpha=LUMA_WEIGHTS[1]).add_(b, alpha=LUMA_WEIGHTS[2]).unsqueeze_(-3)


def _check_channels(images: Tensor) -> int:
    c = images.shape[-3]
    if c not in (1, 3):
        raise ValueError(f"colour ops need 1 or 3 channels, got images of shape {tuple(images.shape)}")
    return int(c)


def _blend_(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """In place: ``x = clamp(factor * x + (1 - factor) * other, 0, 1)``; factor (B, 1, 1, 1)."""
    return x.mul_(factor).add_(other * (1 - factor)).clamp_(0, 1)


def _brightness_(x: Tensor, factor: Tensor) -> Tensor:
    return x.mul_(factor).clamp_(0, 1)


def _contrast_(x: Tensor, factor: Tensor) -> Tensor:
    gray = rgb_to_grayscale(x) if x.shape[-3] == 3 else x
    return _blend_(x, gray.mean(dim=(-3, -2, -1), keepdim=True), factor)


def _saturation_(x: Tensor, factor: Tensor) -> Tensor:
    if x.shape[-3] == 1:  # grey images have no saturation (as torchvision)
        return x
    return _blend_(x, rgb_to_grayscale(x), factor)


def adjust_brightness(images: Tensor, factor: Tensor | float) -> Tensor:
    """Scale intensities: ``clamp(factor * x, 0, 1)``.

    Args:
        images: float (B, C, H, W) in [0, 1].
        factor: per-sample factors (B,) >= 0 (or one float); 1 leaves the image unchanged.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    return _brightness_(images.clone(), _per_sample(factor, images))


def adjust_contrast(images: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each image with the mean of its grayscale version.

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}.
        factor: per-sample factors (B,) >= 0; 0 gives a flat grey image, 1 the original.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    _check_channels(images)
    return _contrast_(images.clone(), _per_sample(factor, images))


def adjust_saturation(images: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each image with its grayscale version (identity on 1-channel images).

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}.
        factor: per-sample factors (B,) >= 0; 0 gives the grayscale image, 1 the original.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    _check_channels(images)
    return _saturation_(images.clone(), _per_sample(factor, images))


def rgb_to_hcv(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """RGB -> hexcone hue, chroma and value (HSV with chroma ``= value * saturation``).

    Args:
        images: float (B, 3, H, W) in [0, 1].

    Returns:
        three float tensors of shape (B, H, W): hue in sixths of a turn in [0, 6) (0 for greys),
        chroma ``max - min`` and value ``max`` of the three channels.
    """
    r, g, b = images.unbind(dim=-3)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    inv = chroma.clamp(min=1e-12).reciprocal_()  # greys: every difference below is 0
    # Sector by the largest channel (ties: red, then green, then blue), as float masks (fast on CPU).
    is_r = (value == r).to(images.dtype)
    is_g = (value == g).to(images.dtype).mul_(1 - is_r)
    is_b = 1 - is_r - is_g
    hue = (is_r * (g - b) + is_g * (b - r) + is_b * (r - g)).mul_(inv) + 2 * is_g + 4 * is_b
    hue = hue.sub_(hue.div(6).floor_().mul_(6))  # wrap (-1, 5] into [0, 6)
    return hue, chroma, value


def hcv_to_rgb(hue: Tensor, chroma: Tensor, value: Tensor) -> Tensor:
    """Hexcone hue, chroma, value -> RGB, the inverse of :func:`rgb_to_hcv`.

    Channel ``n`` (5, 3, 1 for red, green, blue) is ``value - chroma * clamp(2 - |k - 2|, 0, 1)``
    with ``k = (n + hue) mod 6``.

    Args:
        hue: float (B, H, W) in sixths of a turn (any real; taken mod 6).
        chroma: float (B, H, W).
        value: float (B, H, W).

    Returns:
        float tensor of shape (B, 3, H, W) in [0, 1].
    """
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hue.dtype, device=hue.device).view(3, 1, 1)
    k = hue.unsqueeze(-3) + n
    k = k.sub_(k.div(6).floor_().mul_(6))
    ramp = k.sub_(2).abs_().neg_().add_(2).clamp_(0, 1)
    return ramp.mul_(chroma.unsqueeze(-3)).neg_().add_(value.unsqueeze(-3)).clamp_(0, 1)


def adjust_hue(images: Tensor, shift: Tensor | float) -> Tensor:
    """Rotate the hue of each image by ``shift`` turns (identity on 1-channel images).

    Saturation and value are kept; the hue rotation is done on the hexcone (HSV) hue.

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}.
        shift: per-sample hue shifts (B,) in [-0.5, 0.5] turns.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    if _check_channels(images) == 1:
        return images.clone()
    hue, chroma, value = rgb_to_hcv(images)
    hue.add_(_per_sample(shift, images).view(-1, 1, 1), alpha=6)
    return hcv_to_rgb(hue, chroma, value)


def _uniform(batch_size: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return torch.rand(batch_size, generator=generator, device=generator.device).mul_(high - low).add_(low)


def color_jitter(
    images: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float = 0.8,
    *,
    generator: torch.Generator,
) -> Tensor:
    """Random brightness, contrast, saturation and hue per sample, applied with probability ``p``.

    Factors are uniform as in ``torchvision`` ``ColorJitter``: brightness, contrast and saturation
    in ``[max(0, 1 - x), 1 + x]``, the hue shift in ``[-hue, hue]`` turns. A strength of 0 leaves
    that property alone. Samples not selected (probability ``1 - p``) are returned unchanged.

    Deviation: the four adjustments are applied in the fixed order brightness, contrast,
    saturation, hue; ``ColorJitter`` draws a random order per call.

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}.
        brightness: brightness strength >= 0.
        contrast: contrast strength >= 0.
        saturation: saturation strength >= 0.
        hue: hue strength in [0, 0.5].
        p: probability of jittering a sample.
        generator: source of randomness, on the images' device.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise ValueError(f"jitter strengths must be >= 0 and hue <= 0.5, got {brightness, contrast, saturation, hue}")
    _check_channels(images)
    b = images.shape[0]
    # Every factor is drawn whatever the strengths, so the random stream depends only on B.
    apply = bernoulli_mask(b, p, generator=generator)
    factors = [_uniform(b, max(0.0, 1 - s), 1 + s, generator) for s in (brightness, contrast, saturation)]
    shift = _uniform(b, -hue, hue, generator)
    x = images.clone()
    for strength, op, factor in zip((brightness, contrast, saturation), (_brightness_, _contrast_, _saturation_), factors):
        if strength > 0:
            op(x, _per_sample(factor, x))
    if hue > 0:
        x = adjust_hue(x, shift)
    return torch.where(apply.view(-1, 1, 1, 1), x, images)


def random_grayscale(images: Tensor, p: float = 0.2, *, generator: torch.Generator) -> Tensor:
    """Replace each RGB sample by its luma (ITU-R 601-2) with probability ``p``, keeping 3 channels.

    Args:
        images: float (B, C, H, W) in [0, 1], C in {1, 3}; 1-channel images are returned as they are.
        p: probability of converting a sample.
        generator: source of randomness, on the images' device.

    Returns:
        float tensor of shape (B, C, H, W).
    """
    gray = bernoulli_mask(images.shape[0], p, generator=generator).view(-1, 1, 1, 1)
    if _check_channels(images) == 1:
        return images.clone()
    return torch.where(gray, rgb_to_grayscale(images).expand_as(images), images)
