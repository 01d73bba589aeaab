"""`shapes`: an embedded procedural dataset of ten shape classes under nuisances.

Each image is one filled shape drawn by inequality tests on a coordinate grid. The label is the
shape; everything else is a nuisance drawn per image: background and foreground colour, position,
scale, rotation, background stripes (frequency, orientation, phase, amplitude) and pixel noise. A
linear probe on raw pixels therefore does poorly, while an encoder that has learnt invariance to
colour, placement and texture does well. Colours come from a small palette and stripes are faint,
so that telling two images apart takes their shapes: the instance-discrimination methods then learn
shape, and beat random init in a short CPU run. No files and no network: the split is a pure function
of ``(params, split)``, cheap enough to draw again on every load. Measured numbers:
leaderboard/findings.toml (``[datasets] shapes``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from ssl_bench.harness import DataContext, DataError, Dataset, ImageSet, check_decoded_fits, hookimpl
from ssl_bench.harness import Params as BaseParams

VERSION = 2
"""Bump when the generator changes so that content keys (and feature caches) change with it."""

CHUNK = 2048
"""Images rendered at once; bounds peak memory at about CHUNK * 3 * H * W floats."""

SCALE = (0.55, 0.85)
"""Range of the shape radius as a fraction of half the image side."""
STRIPE_AMPLITUDE = 0.08
"""Largest amplitude of the background stripes (colour values are in [0, 1]); kept faint for the
same reason as the palette is small: strong stripes identify an image without its shape."""
NOISE_STD = 0.08
"""Largest standard deviation of the per-pixel Gaussian noise."""
PALETTE = torch.tensor([[0.90, 0.10, 0.10], [0.15, 0.25, 0.90], [0.95, 0.95, 0.95], [0.08, 0.08, 0.08]])
"""Colours of backgrounds and shapes (red, blue, white, black; a shape never takes its background's).
A small palette, not the RGB cube: with a colour pair unique to each image, contrastive methods tell
images apart by colour alone and never look at the shape."""
STRIPE_FREQUENCIES = (3.0, 5.0, 8.0)
"""Stripe frequencies (periods per image side); orientations are multiples of 45 degrees."""


def _polar(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sqrt(u * u + v * v), torch.atan2(v, u)


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(3):  # three half-planes with outward normals 120 degrees apart
        a = -math.pi / 2 + 2 * math.pi * k / 3
        inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
    return inside


def _heart(u: Tensor, v: Tensor) -> Tensor:
    x, y = u * 1.25, -v * 1.25 + 0.15  # the classic implicit heart, point down
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


SHAPES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "circle": lambda u, v: u * u + v * v <= 0.85,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.75,
    "triangle": _triangle,
    "cross": lambda u, v: ((u.abs() <= 0.3) & (v.abs() <= 0.95)) | ((v.abs() <= 0.3) & (u.abs() <= 0.95)),
    "star": lambda u, v: _polar(u, v)[0] <= 0.6 + 0.38 * torch.cos(5 * _polar(u, v)[1]),
    "ring": lambda u, v: ((u * u + v * v) <= 0.95**2) & ((u * u + v * v) >= 0.55**2),
    "crescent": lambda u, v: (u * u + v * v <= 0.95**2) & ((u - 0.45) ** 2 + v * v > 0.75**2),
    "heart": _heart,
    "frame": lambda u, v: (torch.maximum(u.abs(), v.abs()) <= 0.9) & (torch.maximum(u.abs(), v.abs()) >= 0.55),
    "ellipse": lambda u, v: (u / 0.95) ** 2 + (v / 0.42) ** 2 <= 1,
}
"""Class name -> membership test on shape-local coordinates (u, v), shape radius about 1."""


def _seed(seed: int, split: str) -> int:
    digest = hashlib.sha256(f"shapes:v{VERSION}:{seed}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def render_shapes(n: int, image_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Draw ``n`` labelled shape images, deterministically in ``seed``.

    Args:
        n: number of images; classes are balanced (counts differ by at most one).
        image_size: side of the square images in pixels.
        seed: generator seed; the same seed gives identical tensors.

    Returns:
        images uint8 (n, 3, image_size, image_size) and labels int64 (n,) indexing ``SHAPES``.
    """
    check_decoded_fits(n, 3, image_size, image_size, f"shapes: generating {n} images")  # before drawing anything
    g = torch.Generator().manual_seed(seed)
    num_classes = len(SHAPES)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    scale = uniform(*SCALE)  # shape radius as a fraction of the half-side
    centre = uniform(-1.0, 1.0, 2) * (0.95 - scale)[:, None]  # keep the shape (mostly) inside
    angle = uniform(0.0, 2 * math.pi)
    bg_index = torch.randint(len(PALETTE), (n,), generator=g)
    fg_index = (bg_index + torch.randint(1, len(PALETTE), (n,), generator=g)) % len(PALETTE)  # never the same
    bg, fg = PALETTE[bg_index], PALETTE[fg_index]
    stripe_freq = torch.tensor(STRIPE_FREQUENCIES)[torch.randint(len(STRIPE_FREQUENCIES), (n,), generator=g)]
    stripe_angle = torch.randint(4, (n,), generator=g) * (math.pi / 4)
    stripe_phase, stripe_amp = uniform(0.0, 2 * math.pi), uniform(0.0, STRIPE_AMPLITUDE)
    noise_std = uniform(0.0, NOISE_STD)

    axis = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size * 2 - 1
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")  # (H, W) each, in [-1, 1]
    out = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        m = sl.stop - sl.start
        mask = torch.zeros(m, image_size, image_size, dtype=torch.bool)
        for c, test in enumerate(SHAPES.values()):
            idx = torch.nonzero(labels[sl] == c).flatten()
            j = idx + start
            dx = gx - centre[j, 0, None, None]  # (k, H, W)
            dy = gy - centre[j, 1, None, None]
            cos, sin, s = angle[j].cos()[:, None, None], angle[j].sin()[:, None, None], scale[j][:, None, None]
            mask[idx] = test((dx * cos + dy * sin) / s, (dy * cos - dx * sin) / s)  # in the shape's frame
        phi = stripe_angle[sl][:, None, None]
        t = stripe_freq[sl][:, None, None] * math.pi * (gx * phi.cos() + gy * phi.sin())
        stripes = stripe_amp[sl][:, None, None] * torch.sin(t + stripe_phase[sl][:, None, None])  # (m, H, W)
        back = bg[sl, :, None, None] + stripes[:, None]  # (m, 3, H, W)
        img = torch.where(mask[:, None], fg[sl, :, None, None], back)
        img += noise_std[sl][:, None, None, None] * torch.randn(m, 3, image_size, image_size, generator=g)
        out[sl] = img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return out, labels


class Shapes(Dataset):
    """Procedural shapes: ten classes under colour, texture, position, scale and rotation nuisances.

    Splits ``train`` and ``test`` are drawn from seeds derived from ``seed`` and the split name, so
    they never share an image but follow the same distribution.
    """

    name: ClassVar[str] = "shapes"

    class Params(BaseParams):
        n_train: Annotated[int, Field(gt=0)] = 10000
        """Number of training images."""
        n_test: Annotated[int, Field(gt=0)] = 2000
        """Number of test images."""
        image_size: Annotated[int, Field(ge=8)] = 32
        """Side of the square images in pixels."""
        seed: Annotated[int, Field(ge=0)] = 0
        """Generation seed of the dataset itself (not the run's seed)."""

    params: Params

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Render ``split``: uint8 images (N, 3, image_size, image_size), int64 labels (N,)."""
        if split not in self.splits:
            raise DataError(f"shapes: unknown split '{split}'; available: {', '.join(self.splits)}")
        n = self.params.n_train if split == "train" else self.params.n_test
        images, labels = render_shapes(n, self.params.image_size, _seed(self.params.seed, split))
        digest = hashlib.sha256(self.params.model_dump_json().encode()).hexdigest()[:16]
        return ImageSet(images, labels, tuple(SHAPES), f"shapes:v{VERSION}:{digest}:{split}")

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """'': the images are generated from the params alone, whatever the data root."""
        return ""


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(Shapes)
