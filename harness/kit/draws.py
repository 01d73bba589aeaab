"""Resumable random draws of a method: a (seed, count) buffer saved with the model.

A method that draws random numbers of its own (tile places, masks, filters, negatives) registers
``new_draws()`` as a buffer; each loss call takes :func:`next_generator`, seeded by the seed and the
number of draws so far. The buffer is in the checkpoint, so a resumed run draws what the
interrupted one would have.
"""

from __future__ import annotations

import torch
from torch import Tensor


def new_draws() -> Tensor:
    """A fresh (seed, count) int64 buffer (2,); the seed comes from the global RNG (seeded per job)."""
    return torch.tensor([int(torch.randint(2**62, ())), 0])


def draw_seed(draws: Tensor, count: int, salt: int = 0) -> int:
    """Seed of draw number ``count`` (``salt`` separates streams, e.g. per process)."""
    return (int(draws[0]) + 7919 * count + salt) % 2**63


def next_generator(draws: Tensor, device: torch.device, salt: int = 0) -> torch.Generator:
    """The generator of the next draw on ``device``; advances the count in ``draws``."""
    count = int(draws[1])
    draws[1] += 1
    return torch.Generator(device=device).manual_seed(draw_seed(draws, count, salt))
