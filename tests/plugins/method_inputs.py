"""Tiny inputs for a method's unit tests: two random views of a batch, and the Batch that holds them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ssl_bench.harness import Batch


def views(n: int = 8, seed: int = 1) -> list[torch.Tensor]:
    """Two views of ``n`` random 8x8 images. Shape: 2 x (n, 3, 8, 8)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 8, 8, generator=g) for _ in range(2)]


def batch(vs: list[torch.Tensor]) -> Batch:
    """The Batch of views ``vs`` (labels all 0: self-supervised methods never read them)."""
    return Batch(views=vs, labels=torch.zeros(len(vs[0]), dtype=torch.long))


def check_cosine_momentum_step(method: nn.Module, online: Sequence[torch.Tensor], target: nn.Module) -> None:
    """After ``on_step_end(5, 20)`` with base momentum 0.9, each ``target`` weight is the EMA of its ``online`` twin
    at tau = 1 - (1 - 0.9) (cos(pi k / K) + 1) / 2 (BYOL's schedule, shared by MoCo v3 and DINO)."""
    before = [p.clone() for p in target.parameters()]
    method.on_step_end(5, 20)
    tau = 1 - 0.1 * (math.cos(math.pi * 5 / 20) + 1) / 2
    for t0, t1, o in zip(before, target.parameters(), online):
        assert torch.allclose(t1, tau * t0 + (1 - tau) * o, atol=1e-6)
