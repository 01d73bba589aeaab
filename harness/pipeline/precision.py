"""Numeric precision and memory layout of a pretraining step.

``[pretrain] precision`` is ``auto`` (default), ``fp32`` or ``bf16``. ``bf16`` runs the step under
``torch.autocast`` with bfloat16: matrix products and convolutions in bf16, reductions, norms and
losses that autocast keeps in float32 (the weights and the optimizer stay float32: mixed precision,
Micikevicius et al. 2018, with bf16's float32 range instead of loss scaling). ``auto`` is bf16 where
the hardware computes it natively (CUDA; a CPU with AVX512-BF16 or AMX, which oneDNN uses) and fp32
elsewhere, where emulated bf16 would be slower than float32.

Every step's images and weights are channels-last (NHWC): oneDNN's and cuDNN's fast convolutions
use that layout, so PyTorch need not reorder each activation. Results are the same up to float
rounding; the precision a run resolved to is recorded with its timings (``pretrain_precision``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cache
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]
"""What ``[pretrain] precision`` accepts (PretrainSpec.precision)."""
Resolved = Literal["fp32", "bf16"]
"""What a run computes in."""


@cache
def cpu_has_native_bf16() -> bool:
    """This CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN's check
        return False


def resolve_precision(requested: Precision, device: torch.device) -> Resolved:
    """The precision a step on ``device`` computes in: ``auto`` -> bf16 where native, else fp32."""
    if requested != "auto":
        return requested
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()) else "fp32"


def autocast(precision: Resolved, device: torch.device) -> AbstractContextManager[object]:
    """The autocast context of a step in ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def channels_last(views: list[torch.Tensor]) -> list[torch.Tensor]:
    """4-d image batches (B, C, H, W) in channels-last memory; other tensors unchanged."""
    return [v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for v in views]
