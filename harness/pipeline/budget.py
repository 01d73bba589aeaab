"""Will a pretraining job fit in memory? A rough estimate, checked before its first step.

A job that cannot fit should fail in a second with the numbers, not after hours with the kernel's
OOM killer (which leaves no message and, under a scheduler, no clue). The estimate is deliberately
rough and errs low, so that a job is refused only when it clearly cannot fit:

- data: the decoded split, uint8 (N, C, H, W) bytes; 0 for a memory-mapped set (``stream = true``),
  which is read batch by batch. On a GPU the whole in-memory split is copied to the device
  (:func:`~ssl_bench.harness.pipeline.train.pretrain`); on the CPU it is already held, so the memory
  it uses counts as available.
- activations: per step, ``batch (per process) x views x C x H x W`` float32 inputs times
  :data:`ACTIVATION_FACTOR` (what the backward pass keeps per input element, a low figure for small
  convnets; ResNet-50 keeps far more).
- state: weights, gradients and two optimizer moments, float32: 16 bytes per parameter.

Available memory is the GPU's free memory (``torch.cuda.mem_get_info``) for a CUDA device, else the
host's: psutil's ``available`` when installed, else ``MemAvailable`` of ``/proc/meminfo``, else
``SC_AVPHYS_PAGES`` x ``SC_PAGE_SIZE``, capped by a cgroup v2 memory limit. ``BENCH_MEMORY_CHECK=0``
turns the check off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ssl_bench.harness.data import ImageSet
from ssl_bench.harness.scale.machine import available_host_memory, memory_check_on

ACTIVATION_FACTOR = 32
"""Float activations kept for the backward pass per float input element (rough, on the low side)."""

STATE_BYTES_PER_PARAM = 16
"""Weights, gradients and two optimizer moments, float32."""

GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    """What a pretraining job needs, in bytes, on the device that trains it.

    Attributes:
        data_bytes: the decoded split on that device (0 for a memory-mapped one).
        activation_bytes: activations of one step.
        state_bytes: weights, gradients and optimizer moments.
        resident_bytes: the part of ``data_bytes`` already held there (the split loaded on the host).
        shape: one view's batch, (B, C, H, W), and the number of views, for the message.
    """

    data_bytes: int
    activation_bytes: int
    state_bytes: int
    resident_bytes: int
    shape: tuple[int, int, int, int, int]

    @property
    def total_bytes(self) -> int:
        return self.data_bytes + self.activation_bytes + self.state_bytes

    def describe(self) -> str:
        b, c, h, w, views = self.shape
        held = " (held already)" if self.resident_bytes else ""
        return (f"about {self.total_bytes / GB:.1f} GB: decoded split {self.data_bytes / GB:.2f} GB{held}, "
                f"activations ~{self.activation_bytes / GB:.1f} GB (batch {b} x {views} view(s) of {c}x{h}x{w}), "
                f"weights and optimizer {self.state_bytes / GB:.2f} GB")


def estimate_pretrain_memory(data: ImageSet, batch_size: int, views: int, method: nn.Module,
                             device: torch.device) -> MemoryEstimate:
    """The memory a pretraining job needs on ``device`` (see the module docstring).

    Args:
        data: the pretraining split, uint8 (N, C, H, W) (a mapped set's rows are read batch by batch).
        batch_size: images per step in this process.
        views: augmented views per image (``len(method.views)``, at least 1).
        method: the built method (its parameters count).
        device: where it trains.
    """
    c, h, w = (int(n) for n in data.images.shape[1:])
    data_bytes = 0 if data.mapped else len(data) * c * h * w
    b = min(batch_size, len(data))
    views = max(views, 1)
    activation_bytes = b * views * c * h * w * 4 * ACTIVATION_FACTOR
    state_bytes = sum(p.numel() for p in method.parameters()) * STATE_BYTES_PER_PARAM
    resident = data_bytes if device.type == "cpu" else 0
    return MemoryEstimate(data_bytes, activation_bytes, state_bytes, resident, (b, c, h, w, views))


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: the GPU's free memory, or the host's available memory; None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return available_host_memory()


def memory_problem(estimate: MemoryEstimate, available: int | None, device: torch.device, desc: str) -> str | None:
    """Why a job of ``estimate`` cannot fit in ``available`` bytes on ``device``, or None when it can (or
    ``available`` is unknown). Memory the split already holds counts as available."""
    if available is None:
        return None
    room = available + estimate.resident_bytes
    if estimate.total_bytes <= room:
        return None
    where = f"GPU {device}" if device.type == "cuda" else "this machine"
    return (f"{desc}: pretraining needs {estimate.describe()}; {where} has {available / GB:.1f} GB available"
            f"{f' (+{estimate.resident_bytes / GB:.2f} GB the split holds)' if estimate.resident_bytes else ''}. "
            "Lower batch_size or image_size, stream the dataset (params.stream = true), or set "
            "BENCH_MEMORY_CHECK=0 if the estimate is wrong")


def pretrain_memory_problem(data: ImageSet, batch_size: int, views: int, method: nn.Module, device: torch.device,
                            desc: str) -> str | None:
    """Why a pretraining job cannot fit in memory (the estimate and the available memory), or None.

    Arguments as :func:`estimate_pretrain_memory`, plus ``desc``, the job named in the message. None as
    well when the available memory is unknown, or the check is off (``BENCH_MEMORY_CHECK=0``).
    """
    if not memory_check_on():
        return None
    estimate = estimate_pretrain_memory(data, batch_size, views, method, device)
    return memory_problem(estimate, available_memory(device), device, desc)
