"""CIE L*a*b* colour space (D65) and the L / ab channel split of colorization and CMC.

- [0] Zhang et al., Colorful Image Colorization, 2016, arXiv:1603.08511 (predict ab from L)
- [1] Tian et al., Contrastive Multiview Coding, 2019, arXiv:1906.05849 (L and ab as two views)

Images are sRGB in [0, 1]. The conversion linearises sRGB (IEC 61966-2-1), maps it to CIE XYZ
with the sRGB primaries, and to L*a*b* relative to the D65 white of the same matrix, so pure
white maps to L = 100, a = b = 0 exactly (up to float rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor

SRGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
"""Linear sRGB -> CIE XYZ (D65), rows X, Y, Z."""

AB_SCALE = 110.0
"""a* and b* of sRGB colours lie within about [-87, 99] and [-108, 95]; dividing by this maps them into [-1, 1]."""

_DELTA = 6 / 29


def _matrix(device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.tensor(SRGB_TO_XYZ, dtype=torch.float64).to(device=device, dtype=dtype)


def _apply(matrix: Tensor, x: Tensor) -> Tensor:
    """Multiply every pixel's 3-vector by ``matrix``: (3, 3) x (B, 3, H, W) -> (B, 3, H, W)."""
    return torch.einsum("ij,bjhw->bihw", matrix, x)


def _white(device: torch.device, dtype: torch.dtype) -> Tensor:
    """XYZ of sRGB white (the row sums of the matrix: 0.95047, 1.0, 1.08883), shape (1, 3, 1, 1)."""
    return torch.tensor(SRGB_TO_XYZ, dtype=torch.float64).sum(dim=1).to(device=device, dtype=dtype).view(1, 3, 1, 1)


def rgb_to_lab(images: Tensor) -> Tensor:
    """sRGB -> CIE L*a*b* (D65).

    Args:
        images: float (B, 3, H, W) in [0, 1].

    Returns:
        float tensor of shape (B, 3, H, W): L* in [0, 100], a* and b* roughly in [-110, 110].
    """
    x = images.clamp(0, 1)
    linear = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).pow(2.4))
    t = _apply(_matrix(x.device, x.dtype), linear) / _white(x.device, x.dtype)
    f = torch.where(t > _DELTA**3, t.clamp(min=_DELTA**3).pow(1 / 3), t / (3 * _DELTA**2) + 4 / 29)
    fx, fy, fz = f.unbind(dim=1)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=1)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """CIE L*a*b* (D65) -> sRGB, the inverse of :func:`rgb_to_lab`; colours outside sRGB are clipped.

    Args:
        lab: float (B, 3, H, W): L*, a*, b*.

    Returns:
        float tensor of shape (B, 3, H, W) in [0, 1].
    """
    light, a, b = lab.unbind(dim=1)
    fy = (light + 16) / 116
    f = torch.stack((fy + a / 500, fy, fy - b / 200), dim=1)
    t = torch.where(f > _DELTA, f.pow(3), 3 * _DELTA**2 * (f - 4 / 29))
    xyz = t * _white(lab.device, lab.dtype)
    linear = _apply(torch.linalg.inv(_matrix(lab.device, torch.float64)).to(lab.dtype), xyz).clamp(0, 1)
    srgb = torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear.clamp(min=0.0031308).pow(1 / 2.4) - 0.055)
    return srgb.clamp(0, 1)


def split_lab(lab: Tensor, *, scaled: bool = True) -> tuple[Tensor, Tensor]:
    """Split L*a*b* images into the lightness and the colour channels.

    Args:
        lab: float (B, 3, H, W) from :func:`rgb_to_lab`.
        scaled: map L* from [0, 100] to [-1, 1] (``L / 50 - 1``) and a*, b* into about [-1, 1]
            (divided by :data:`AB_SCALE`), the ranges networks expect; False keeps CIE units.

    Returns:
        L of shape (B, 1, H, W) and ab of shape (B, 2, H, W).
    """
    light, ab = lab[:, :1], lab[:, 1:]
    if scaled:
        return light / 50 - 1, ab / AB_SCALE
    return light.clone(), ab.clone()


def merge_lab(light: Tensor, ab: Tensor, *, scaled: bool = True) -> Tensor:
    """Inverse of :func:`split_lab`: L (B, 1, H, W) and ab (B, 2, H, W) -> L*a*b* (B, 3, H, W) in CIE units."""
    if scaled:
        light, ab = (light + 1) * 50, ab * AB_SCALE
    return torch.cat((light, ab), dim=1)


def rgb_to_l_ab(images: Tensor, *, scaled: bool = True) -> tuple[Tensor, Tensor]:
    """sRGB images -> (L (B, 1, H, W), ab (B, 2, H, W)); see :func:`split_lab` for ``scaled``."""
    return split_lab(rgb_to_lab(images), scaled=scaled)
