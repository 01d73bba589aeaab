"""Images as uint8 tensors: the ImageSet (in memory or memory-mapped), splits, balanced subsets, decode caches."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness.errors import DataError
from ssl_bench.harness.record.atomic import atomic_torch_save, atomic_write, atomic_write_text

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)
class BoxTargets:
    """The objects of one image of a detection set: boxes in the image's pixels, their classes, ignore flags.

    Attributes:
        boxes: float32 (K, 4), ``(x1, y1, x2, y2)`` in pixels of the stored (resized) image, x2 > x1, y2 > y1.
        labels: int64 (K,), indices into the set's ``classes``.
        ignore: bool (K,): objects that scoring neither counts nor penalises (VOC's ``difficult``, COCO's
            ``iscrowd``); detectors may still train on them.
    """

    boxes: Tensor
    labels: Tensor
    ignore: Tensor

    def __post_init__(self) -> None:
        k = int(self.labels.shape[0]) if self.labels.ndim == 1 else -1
        if self.boxes.shape != (k, 4) or not self.boxes.is_floating_point():
            raise ValueError(f"boxes must be float (K, 4) with K = len(labels), got {self.boxes.dtype} "
                             f"{tuple(self.boxes.shape)} for labels {tuple(self.labels.shape)}")
        if self.labels.dtype != torch.int64 or self.ignore.dtype != torch.bool or self.ignore.shape != (k,):
            raise ValueError(f"labels must be int64 (K,) and ignore bool (K,), got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)} and {self.ignore.dtype} {tuple(self.ignore.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled split: uint8 images held in memory, or rows of a store read batch by batch.

    A store is typically a memory-mapped decode cache (a dataset's ``stream = true``) larger than
    memory: ``images`` is then the whole file, ``rows`` says which of its rows this set holds, and
    subsets only index ``rows``, so the file is never copied whole. Read images through :meth:`batch`
    and :meth:`chunks`, which work for both kinds; ``images`` alone is this set's images only when
    ``rows`` is None (every in-memory set, whose subsets copy their rows as always).

    Attributes:
        images: uint8 tensor of shape (N, C, H, W) when ``rows`` is None; else the store (M, C, H, W)
            that ``rows`` index.
        labels: int64 tensor of shape (N,).
        classes: class names; ``labels`` index into it.
        key: content identity of the source split (dataset, params, split); feature caches use it.
        indices: positions of these rows in the source split (int64 (N,)), None when all of it.
        rows: positions of these rows in ``images`` (int64 (N,)); None when ``images`` holds exactly them.
        targets: the objects of every row (one :class:`BoxTargets` each) in a detection set, carried by
            :meth:`subset`; None in a classification set. A detection set's ``labels`` then hold one class
            per image (its dataset says which, e.g. its largest object's), so stratified and class-balanced
            subsets work on it unchanged.
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    key: str
    indices: Tensor | None = None
    rows: Tensor | None = None
    targets: tuple[BoxTargets, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.rows is not None and self.rows.ndim != 1:
            raise ValueError(f"rows must be int64 (N,), got {tuple(self.rows.shape)}")
        n = int(self.images.shape[0] if self.rows is None else self.rows.shape[0])
        if self.labels.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {tuple(self.labels.shape)}")
        if self.targets is not None and len(self.targets) != n:
            raise ValueError(f"targets must hold one BoxTargets per row ({n}), got {len(self.targets)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def mapped(self) -> bool:
        """Whether the images are rows of a store (``rows`` given), read batch by batch, not held in memory."""
        return self.rows is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def source_indices(self) -> Tensor:
        """Positions in the source split (int64 (N,))."""
        return self.indices if self.indices is not None else torch.arange(len(self))

    def subset(self, idx: Tensor, key: str | None = None) -> ImageSet:
        """Rows ``idx`` (positions in this set) as a new ImageSet; a mapped set's store is shared, not copied.

        Args:
            idx: int64 (K,) positions in this set.
            key: None keeps this set's key and records the rows' source positions (``indices``);
                a key makes the subset a source split of its own (e.g. a class-balanced subset).
        """
        idx = idx.long()
        indices = self.source_indices[idx] if key is None else None
        targets = None if self.targets is None else tuple(self.targets[i] for i in idx.tolist())
        if self.rows is not None:
            return ImageSet(self.images, self.labels[idx], self.classes, key or self.key, indices, self.rows[idx],
                            targets)
        return ImageSet(self.images[idx], self.labels[idx], self.classes, key or self.key, indices, targets=targets)

    def batch(self, idx: Tensor, device: torch.device | None = None) -> Tensor:
        """The images of rows ``idx`` (int64 (B,), positions in this set), copied: uint8 (B, C, H, W).

        Only these rows are read. To a CUDA device they go through pinned memory, non-blocking;
        ``device`` None leaves them where ``images`` is.
        """
        rows = idx.long() if self.rows is None else self.rows[idx.to(self.rows.device)]
        rows = rows.to(self.images.device)
        if device is not None and device.type == "cuda" and self.images.device.type == "cpu":
            out = torch.empty((len(rows), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=True)
            return torch.index_select(self.images, 0, rows, out=out).to(device, non_blocking=True)
        out = self.images[rows]
        return out if device is None else out.to(device)

    def chunks(self, size: int, device: torch.device | None = None) -> Iterator[Tensor]:
        """This set's images in order, ``size`` rows at a time: uint8 (<= size, C, H, W) on ``device``.

        In memory: slices of ``images`` (views; moved to ``device`` when given). Mapped: each chunk is
        read from the store by :meth:`batch`, so at most one chunk is in memory at a time.
        """
        if self.rows is None:
            for chunk in torch.split(self.images, size):
                yield chunk if device is None else chunk.to(device, non_blocking=True)
            return
        for idx in torch.split(torch.arange(len(self)), size):
            yield self.batch(idx, device)


def check_labelled(data: ImageSet, where: str) -> None:
    """Raise DataError unless ``data`` can be scored: int64 labels within its classes, two classes or more.

    Args:
        data: a split an evaluator fits or scores.
        where: names the split in the message (e.g. ``"cifar10 test split"``).
    """
    labels = data.labels
    if labels.dtype != torch.int64:
        raise DataError(f"{where}: labels are {labels.dtype}, not int64 class indices")
    if len(labels) == 0:
        raise DataError(f"{where}: no rows")
    bad = ((labels < 0) | (labels >= data.num_classes)).nonzero()
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{where}: label {int(labels[row])} at row {row} is outside 0..{data.num_classes - 1} "
                        f"({data.num_classes} classes); {len(bad)} row(s) are out of range")
    present = torch.unique(labels)
    if len(present) < 2:
        name = data.classes[int(present[0])]
        raise DataError(f"{where}: every row is of one class ('{name}'); accuracy on it would mean nothing")


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
    check_decoded_fits(len(images), images.shape[1], size, size, f"resizing to image_size {size}")
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


def cached(path: Path, build: Callable[[], dict[str, Tensor]],
           check: Callable[[dict[str, Tensor]], str | None] | None = None) -> dict[str, Tensor]:
    """Load a dict of tensors from ``path``, or build it and save it there atomically.

    A cache is never trusted blindly: a file that cannot be read (truncated by a kill or a full disk,
    corrupt), that is not a dict of tensors, or that ``check`` rejects is discarded with a one-line
    warning on stderr and built again, so a bad cache costs one rebuild instead of failing every rerun.

    Args:
        path: the cache file (``torch.save`` format, read with ``weights_only=True``).
        build: makes the value when the cache is absent or discarded.
        check: returns why a loaded value is unfit (e.g. a row count that disagrees), or None.
    """
    if path.exists():
        problem: str | None
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
            problem = _not_tensor_dict(value)
        except MemoryError:
            raise  # a whole cache too big to load is not a broken one
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is discarded the same way
            value, problem = None, f"unreadable ({_first_line(exc)})"
        if problem is None and check is not None:
            problem = check(value)
        if problem is None:
            return value  # type: ignore[no-any-return]
        path.unlink(missing_ok=True)
        warn_discarded(path, problem)
    value = build()
    atomic_torch_save(value, path)
    return value


def warn_discarded(path: Path, problem: str) -> None:
    """Say in one line on stderr that the cache file ``path`` is discarded and rebuilt, and why."""
    print(f"warning: {path}: {problem}; cache discarded, recomputing it", file=sys.stderr, flush=True)


def _not_tensor_dict(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()):
        return f"not a cache of this harness (a {type(value).__name__}, not a dict of tensors)"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def map_uint8(path: Path, shape: Sequence[int]) -> Tensor:
    """The raw uint8 file ``path`` as a tensor of ``shape``, memory-mapped (never read whole).

    Pages are read from the file when touched and may be dropped again under memory pressure; the
    mapping is private, so an in-place write changes this process's copy of a page, never the file.
    """
    numel = math.prod(shape)
    if path.stat().st_size != numel:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, expected {numel} for shape {tuple(shape)}")
    if numel == 0:
        return torch.empty(tuple(shape), dtype=torch.uint8)
    return torch.from_file(str(path), shared=False, size=numel, dtype=torch.uint8).view(*shape)


def cached_mapped(path: Path, row_shape: Sequence[int],
                  build: Callable[[Callable[[Tensor], None]], dict[str, Any]]) -> tuple[Tensor, dict[str, Any]]:
    """Rows stored raw in ``path`` and memory-mapped, built once by ``build`` chunk by chunk.

    ``build(write)`` calls ``write(rows)`` with uint8 (K, *row_shape) chunks in order and returns JSON
    metadata. The rows go to a temporary file renamed to ``path`` when complete, then the sidecar
    ``path.with_suffix(".json")`` (the shape and the metadata) is written atomically; a cache missing
    its sidecar, with an unreadable sidecar, or whose size disagrees with its shape (truncated) is
    built again, with a one-line warning on stderr. Memory holds one chunk at a time.

    Returns:
        the mapped uint8 tensor (N, *row_shape) (see :func:`map_uint8`) and the metadata.
    """
    sidecar = path.with_suffix(".json")
    if path.exists():
        problem = _mapped_problem(path, sidecar)
        if problem is None:
            stored: dict[str, Any] = json.loads(sidecar.read_text())
            return map_uint8(path, stored["shape"]), stored
        warn_discarded(path, problem)  # the rebuilt file replaces it (a process mapping it keeps its pages)
    meta: dict[str, Any] = {}
    written = [0]

    def write(rows: Tensor, f: BinaryIO) -> None:
        if rows.dtype != torch.uint8 or tuple(rows.shape[1:]) != tuple(row_shape):
            raise ValueError(f"rows must be uint8 (K, {', '.join(map(str, row_shape))}), got {rows.dtype} "
                             f"{tuple(rows.shape)}")
        f.write(rows.contiguous().numpy().reshape(-1).data)
        written[0] += len(rows)

    def write_file(tmp: Path) -> None:
        with tmp.open("wb") as f:
            meta.update(build(lambda rows: write(rows, f)))

    atomic_write(path, write_file)
    meta["shape"] = [written[0], *row_shape]
    atomic_write_text(sidecar, json.dumps(meta))
    return map_uint8(path, meta["shape"]), meta


def _mapped_problem(path: Path, sidecar: Path) -> str | None:
    """Why the raw cache ``path`` and its sidecar cannot be used (missing, unreadable, wrong size), or None."""
    try:
        stored = json.loads(sidecar.read_text())
        shape = [int(n) for n in stored["shape"]]
    except FileNotFoundError:
        return f"no sidecar {sidecar.name} (the build was interrupted)"
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign sidecar is discarded the same way
        return f"sidecar {sidecar.name} unreadable ({_first_line(exc)})"
    size = path.stat().st_size
    if size != math.prod(shape):
        return f"{size} bytes, but its sidecar says shape {tuple(shape)} ({math.prod(shape)} bytes): truncated"
    return None


def file_fingerprint(paths: Sequence[Path]) -> str:
    """A short hash of files' paths, sizes and modification times (cache keys of decoded data)."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def check_decoded_fits(rows: int, channels: int, height: int, width: int, where: str) -> None:
    """Refuse, before decoding or generating it, a split whose uint8 (rows, C, H, W) tensor cannot fit in memory.

    The pretraining memory estimate runs once a split is loaded; a split too large to hold at all
    (``image_size = 4096`` on 500 images, ``n_train = 1e8``) would exhaust memory before it, so datasets
    call this first. ``BENCH_MEMORY_CHECK=0`` turns it off.

    Raises:
        DataError: naming ``where``, the bytes needed and the bytes available.
    """
    from ssl_bench.harness.scale.machine import available_host_memory, memory_check_on

    need = rows * channels * height * width
    available = available_host_memory() if memory_check_on() else None
    if available is None or need <= available:
        return
    raise DataError(f"{where}: {rows} images of {channels} x {height} x {width} pixels need {need / 1e9:.1f} GB as "
                    f"uint8; this machine has {available / 1e9:.1f} GB available. Lower image_size or the number of "
                    "images, stream the dataset (params.stream = true), or set BENCH_MEMORY_CHECK=0 if this is wrong")
