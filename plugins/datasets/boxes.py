"""What the detection datasets (shapes_detection, voc, coco) share: boxes resized with their images, one class
per image, the ImageSet with its targets, and the missing-files error.

A detection split is an :class:`~ssl_bench.harness.ImageSet` whose ``targets`` hold each image's objects
(:class:`~ssl_bench.harness.BoxTargets`: xyxy boxes in pixels of the stored image, class indices, ignore flags).
Its ``labels`` are one class per image, the class of its largest object that is not ignored (of its largest
object when all are), so the harness's stratified validation split and class-balanced subsets work on it as on
a classification set. An image without objects is labelled 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ssl_bench.harness import BoxTargets, DataError, ImageSet

MIN_SIDE_PX = 1.0
"""Boxes narrower or lower than this (in pixels of the stored image) after resizing are dropped."""


def image_label(objects: BoxTargets) -> int:
    """The class of the largest object not ignored (the largest of all when every one is); 0 without objects."""
    if len(objects) == 0:
        return 0
    b = objects.boxes
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if bool((~objects.ignore).any()):
        area = torch.where(objects.ignore, torch.full_like(area, -1.0), area)
    return int(objects.labels[int(area.argmax())])


def resized_targets(boxes: Tensor, labels: Tensor, ignore: Tensor, width: float, height: float,
                    size: int) -> BoxTargets:
    """Objects of an image ``width`` x ``height`` px that is stored squashed to ``size`` x ``size``.

    Args:
        boxes: float (K, 4) xyxy in pixels of the original image.
        labels: int64 (K,) class indices.
        ignore: bool (K,) objects scoring ignores.
        width: the original width in pixels.
        height: the original height in pixels.
        size: the side of the stored square image.

    Returns:
        the boxes scaled by ``size / width`` and ``size / height``, clipped to the image, those under
        :data:`MIN_SIDE_PX` on a side dropped.
    """
    scale = torch.tensor([size / width, size / height, size / width, size / height], dtype=torch.float32)
    b = (boxes.to(torch.float32).reshape(-1, 4) * scale).clamp(0, size)
    keep = ((b[:, 2] - b[:, 0]) >= MIN_SIDE_PX) & ((b[:, 3] - b[:, 1]) >= MIN_SIDE_PX)
    return BoxTargets(b[keep], labels.reshape(-1)[keep].long(), ignore.reshape(-1)[keep].bool())


def detection_set(images: Tensor, targets: Sequence[BoxTargets], classes: tuple[str, ...], key: str,
                  rows: Tensor | None = None) -> ImageSet:
    """The ImageSet of a detection split: ``images`` uint8 (N, 3, S, S), one BoxTargets per row, image labels."""
    labels = torch.tensor([image_label(t) for t in targets], dtype=torch.int64)
    return ImageSet(images, labels, classes, key, rows=rows, targets=tuple(targets))


def missing_layout(name: str, split: str, root: Path, expected: Sequence[Path], layout: str,
                   no_download: str | None) -> DataError:
    """The one error of a detection dataset whose files are not found, in the words of the named datasets'.

    Args:
        name: the dataset's registered name.
        split: the split asked for.
        root: the data root.
        expected: the paths looked for (the first missing ones).
        layout: what the layout is, e.g. "torchvision VOCDetection layout".
        no_download: why ``download = true`` cannot help, or None when it can.
    """
    where = ", ".join(str(p) for p in expected)
    fix = "set --data-root or BENCH_DATA_ROOT to the folder that holds it"
    fix += (", or set download = true in the dataset's params" if no_download is None
            else f"; {name} cannot be downloaded automatically ({no_download}), place its files there")
    return DataError(f"{name}: no data for split '{split}': expected the {layout} under {root}: {where}; {fix}")
