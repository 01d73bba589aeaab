"""Tiny inputs for a method's unit tests: two random views of a batch, and the Batch that holds them."""

from __future__ import annotations

import torch

from ssl_bench.harness import Batch


def views(n: int = 8, seed: int = 1) -> list[torch.Tensor]:
    """Two views of ``n`` random 8x8 images. Shape: 2 x (n, 3, 8, 8)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 8, 8, generator=g) for _ in range(2)]


def batch(vs: list[torch.Tensor]) -> Batch:
    """The Batch of views ``vs`` (labels all 0: self-supervised methods never read them)."""
    return Batch(views=vs, labels=torch.zeros(len(vs[0]), dtype=torch.long))
