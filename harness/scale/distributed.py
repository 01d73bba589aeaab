"""Collectives that degrade to the identity in a single process.

Methods take negatives and batch statistics through these helpers, so one code path serves a
laptop and ``torchrun``. The runner agrees on decisions (is this encoder already trained?) through
:func:`agree`, so every process takes the same branch and enters the same collectives.
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


def is_main() -> bool:
    """True in the process that writes files (rank 0), and in a single process."""
    return rank() == 0


def _device() -> torch.device:
    """Where collective tensors live: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` in every process, so all take the same branch (identity in a single process)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], device=_device())
    dist.broadcast(t, src=0)
    return bool(t.item())


def mean_over_processes(value: float) -> float:
    """The mean of a float over every process (itself in a single process)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return float(t.item()) / world_size()


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
