"""Helpers shared by the augmentation ops: sizes, per-sample factors and per-sample draws."""

from __future__ import annotations

import torch
from torch import Tensor


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _per_sample(factor: Tensor | float, images: Tensor) -> Tensor:
    """A factor as a (B, 1, 1, 1) tensor of the images' dtype and device."""
    f = torch.as_tensor(factor, dtype=images.dtype, device=images.device)
    return f.reshape(-1, 1, 1, 1) if f.ndim else f.expand(images.shape[0]).reshape(-1, 1, 1, 1)


def bernoulli_mask(batch_size: int, p: float, *, generator: torch.Generator) -> Tensor:
    """Per-sample coin flips: bool (B,) on the generator's device, True with probability ``p``."""
    return torch.rand(batch_size, generator=generator, device=generator.device) < p


def _uniform(batch_size: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return torch.rand(batch_size, generator=generator, device=generator.device).mul_(high - low).add_(low)


def random_permutations(batch_size: int, n: int, *, generator: torch.Generator) -> Tensor:
    """One uniformly random permutation of ``0..n-1`` per sample (argsort of uniform draws).

    Args:
        batch_size: B.
        n: length of each permutation.
        generator: source of randomness; the permutations live on its device.

    Returns:
        int64 tensor of shape (B, n); every row is a permutation of ``0..n-1``.
    """
    return torch.rand(batch_size, n, generator=generator, device=generator.device).argsort(dim=1)
