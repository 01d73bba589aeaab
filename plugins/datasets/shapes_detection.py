"""`shapes_detection`: an embedded procedural detection dataset, several shapes per image with their boxes.

Each image holds 1 to ``max_objects`` filled shapes (classes from ``shapes``' membership tests, circle,
square and triangle by default) at random sizes, positions and rotations, in colours of ``shapes``' palette
over a striped, noisy background of another colour. Shapes never overlap (a placement that would is drawn
again, up to :data:`PLACEMENT_TRIES` times, then the shape is left out), so each box is the tight box of
its shape's visible pixels. The image's label (for stratified splits) is the class of its largest shape.
No files and no network: a split is a pure function of ``(params, split)``, drawn again on every load.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Annotated, ClassVar

import torch
from pydantic import Field, field_validator
from torch import Tensor

from ssl_bench.harness import BoxTargets, DataContext, DataError, Dataset, ImageSet, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.plugins.datasets.boxes import detection_set
from ssl_bench.plugins.datasets.shapes import NOISE_STD, PALETTE, SHAPES, STRIPE_AMPLITUDE, STRIPE_FREQUENCIES

VERSION = 1
"""Bump when the generator changes so that content keys change with it."""

RADIUS = (0.12, 0.25)
"""Range of a shape's radius as a fraction of the image side (at 64 px: boxes of about 12 to 32 px)."""
REACH = 1.15
"""A shape's pixels lie within REACH radii of its centre (the square's corners reach 1.06)."""
PLACEMENT_TRIES = 10
"""Draws of a position that overlaps no earlier shape before the shape is left out."""


def _seed(seed: int, split: str) -> int:
    digest = hashlib.sha256(f"shapes_detection:v{VERSION}:{seed}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _background(g: torch.Generator, size: int, axis: Tensor) -> tuple[Tensor, int]:
    """A striped background (3, size, size) in [0, 1] and the palette index of its colour."""
    bg = int(torch.randint(len(PALETTE), (1,), generator=g))
    freq = STRIPE_FREQUENCIES[int(torch.randint(len(STRIPE_FREQUENCIES), (1,), generator=g))]
    phi = int(torch.randint(4, (1,), generator=g)) * math.pi / 4
    phase, amp = float(torch.rand(1, generator=g)) * 2 * math.pi, float(torch.rand(1, generator=g)) * STRIPE_AMPLITUDE
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    stripes = amp * torch.sin(freq * math.pi * (gx * math.cos(phi) + gy * math.sin(phi)) / size * 2 + phase)
    return PALETTE[bg][:, None, None] + stripes[None], bg


def render_detection(n: int, image_size: int, classes: tuple[str, ...], max_objects: int,
                     seed: int) -> tuple[Tensor, list[BoxTargets]]:
    """Draw ``n`` images with 1..``max_objects`` shapes each, deterministically in ``seed``.

    Returns:
        images uint8 (n, 3, image_size, image_size) and, per image, its shapes' tight boxes (float (K, 4),
        xyxy pixels, K >= 1), class indices into ``classes`` (int64 (K,)) and ignore flags (all False).
    """
    g = torch.Generator().manual_seed(seed)
    tests = [SHAPES[c] for c in classes]
    axis = torch.arange(image_size, dtype=torch.float32) + 0.5  # pixel centres
    out = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    targets: list[BoxTargets] = []
    for i in range(n):
        img, bg = _background(g, image_size, axis)
        boxes: list[list[float]] = []
        labels: list[int] = []
        taken: list[tuple[float, float, float]] = []  # (cx, cy, reach) of the shapes placed
        for _ in range(int(torch.randint(1, max_objects + 1, (1,), generator=g))):
            c = int(torch.randint(len(tests), (1,), generator=g))
            r = float(RADIUS[0] + (RADIUS[1] - RADIUS[0]) * torch.rand(1, generator=g)) * image_size
            angle = float(torch.rand(1, generator=g)) * 2 * math.pi
            fg = (bg + int(torch.randint(1, len(PALETTE), (1,), generator=g))) % len(PALETTE)
            reach = REACH * r
            for _ in range(PLACEMENT_TRIES):
                cx, cy = (reach + (image_size - 2 * reach) * torch.rand(2, generator=g)).tolist()
                if all(max(abs(cx - x), abs(cy - y)) > reach + q + 1 for x, y, q in taken):
                    break
            else:
                continue
            dx, dy = axis[None, :] - cx, axis[:, None] - cy  # (1, W), (H, 1)
            u, v = (dx * math.cos(angle) + dy * math.sin(angle)) / r, (dy * math.cos(angle) - dx * math.sin(angle)) / r
            mask = tests[c](u, v)  # (H, W)
            if not bool(mask.any()):
                continue
            cols, rows = mask.any(0).nonzero().flatten(), mask.any(1).nonzero().flatten()
            boxes.append([float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)])
            labels.append(c)
            taken.append((cx, cy, reach))
            img = torch.where(mask[None], PALETTE[fg][:, None, None], img)
        img = img + float(torch.rand(1, generator=g)) * NOISE_STD * torch.randn(img.shape, generator=g)
        out[i] = img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
        k = len(labels)
        targets.append(BoxTargets(torch.tensor(boxes, dtype=torch.float32).reshape(k, 4),
                                  torch.tensor(labels, dtype=torch.int64), torch.zeros(k, dtype=torch.bool)))
    return out, targets


class ShapesDetection(Dataset):
    """Procedural detection: 1..``max_objects`` non-overlapping shapes per image, each with its tight box.

    Splits ``train`` and ``test`` come from seeds derived from ``seed`` and the split name. Images are uint8
    (N, 3, image_size, image_size); ``targets`` hold the boxes; ``labels`` the class of each image's largest
    shape (so the harness's stratified splits work).
    """

    name: ClassVar[str] = "shapes_detection"

    class Params(BaseParams):
        n_train: Annotated[int, Field(gt=0)] = 2000
        """Number of training images."""
        n_test: Annotated[int, Field(gt=0)] = 500
        """Number of test images."""
        image_size: Annotated[int, Field(ge=16)] = 64
        """Side of the square images in pixels."""
        max_objects: Annotated[int, Field(ge=1, le=6)] = 3
        """Most shapes per image (each image draws 1..max_objects; one that finds no free place is left out)."""
        classes: tuple[str, ...] = ("circle", "square", "triangle")
        """Shape classes, names of the ``shapes`` dataset's classes."""
        seed: Annotated[int, Field(ge=0)] = 0
        """Generation seed of the dataset itself (not the run's seed)."""

        @field_validator("classes")
        @classmethod
        def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
            unknown = [c for c in v if c not in SHAPES]
            if unknown or len(v) < 2 or len(set(v)) != len(v):
                raise ValueError(f"expected two or more distinct names of {', '.join(SHAPES)}; got {list(v)}")
            return v

    params: Params

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Render ``split``: uint8 images (N, 3, S, S), per-image labels (N,), targets with the boxes."""
        if split not in self.splits:
            raise DataError(f"shapes_detection: unknown split '{split}'; available: {', '.join(self.splits)}")
        p = self.params
        n = p.n_train if split == "train" else p.n_test
        images, targets = render_detection(n, p.image_size, p.classes, p.max_objects, _seed(p.seed, split))
        digest = hashlib.sha256(p.model_dump_json().encode()).hexdigest()[:16]
        return detection_set(images, targets, p.classes, f"shapes_detection:v{VERSION}:{digest}:{split}")

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """'': the images are generated from the params alone, whatever the data root."""
        return ""


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(ShapesDetection)
