"""Images as uint8 tensors: the ImageSet, stratified splits, class-balanced subsets, decode cache."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from harness.atomic import atomic_torch_save

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled split held in memory.

    Attributes:
        images: uint8 tensor of shape (N, C, H, W).
        labels: int64 tensor of shape (N,).
        classes: class names; ``labels`` index into it.
        key: content identity of the source split (dataset, params, split); feature caches use it.
        indices: positions of these rows in the source split (int64 (N,)), None when all of it.
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    key: str
    indices: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def source_indices(self) -> Tensor:
        """Positions in the source split (int64 (N,))."""
        return self.indices if self.indices is not None else torch.arange(len(self))

    def subset(self, idx: Tensor) -> ImageSet:
        """Rows ``idx`` (positions in this set) as a new ImageSet sharing the source key."""
        idx = idx.long()
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.key, self.source_indices[idx])


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split positions into (rest, part) with ``part`` holding ``fraction`` of every class.

    Every class keeps at least one row on each side when it has two or more. Deterministic in ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    rest, part = [], []
    for c in torch.unique(labels).tolist():
        pos = torch.nonzero(labels == c).flatten()
        pos = pos[torch.randperm(len(pos), generator=g)]
        n = int(round(fraction * len(pos)))
        if len(pos) >= 2:
            n = min(max(n, 1), len(pos) - 1)
        part.append(pos[:n])
        rest.append(pos[n:])
    return torch.sort(torch.cat(rest)).values, torch.sort(torch.cat(part)).values


def balanced_subset(labels: Tensor, size: int, seed: int) -> Tensor:
    """Positions of ``size`` rows with classes as equal as the data allows; nested in ``size``.

    Rows are ranked per class in a seeded order and taken round-robin over classes, so the subset of
    a smaller size is always inside the subset of a larger one.
    """
    g = torch.Generator().manual_seed(seed)
    ranks = torch.empty_like(labels)
    for c in torch.unique(labels).tolist():
        pos = torch.nonzero(labels == c).flatten()
        ranks[pos[torch.randperm(len(pos), generator=g)]] = torch.arange(len(pos))
    tiebreak = torch.rand(len(labels), generator=g)
    order = torch.argsort(ranks.double() + tiebreak * 0.5)
    return torch.sort(order[: min(size, len(labels))]).values


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize uint8 (N, C, H, W) images so both sides equal ``size`` (antialiased bilinear)."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for chunk in images.split(1024):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def normalize(images: Tensor) -> Tensor:
    """Float images in [0, 1] (B, 3, H, W) -> standardised with ImageNet statistics."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def to_float(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255)


def cached(path: Path, build: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """Load a dict of tensors from ``path``, or build it and save it there atomically."""
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
    value = build()
    atomic_torch_save(value, path)
    return value


def file_fingerprint(paths: Sequence[Path]) -> str:
    """A short hash of files' paths, sizes and modification times (cache keys of decoded data)."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]
