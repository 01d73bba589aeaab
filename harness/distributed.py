"""Collectives that degrade to the identity in a single process.

Methods take negatives and batch statistics through these helpers, so one code path serves a
laptop and ``torchrun``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0, keeping gradients.

    Returns ``x`` itself in a single process. Shape: (world_size * B, ...).
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)  # type: ignore[no-any-return]
