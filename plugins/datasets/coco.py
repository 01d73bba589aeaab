"""`coco`: COCO-style detection, an annotations JSON and its image folder, boxes resized with the images.

- [0] Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014, arXiv:1405.0312

Layout under the data root ``R`` (COCO's own, as its zips extract), for an image set ``S`` (``train2017``)::

    R/<folder>/annotations/instances_S.json   images (id, file_name, width, height), annotations
                                              (image_id, category_id, bbox [x, y, w, h], iscrowd), categories
    R/<folder>/S/<file_name>

Any dataset written in this format works (``folder`` names it). Classes are the categories in order of id;
boxes become ``(x1, y1, x2, y2)`` scaled with the image, which is decoded once and squashed to ``image_size``
x ``image_size`` (then cached). ``iscrowd`` objects are flagged ``ignore`` (scoring treats them as COCO does).
Training images without objects are left out (``drop_empty_train``, detectron2's default); test images
never are. An image's label is the class of its largest object that is not a crowd. COCO is not downloaded.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field

from ssl_bench.harness import DataContext, DataError, Dataset, ImageSet, file_fingerprint, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.plugins.datasets.boxes import detection_set, missing_layout, resized_targets
from ssl_bench.plugins.datasets.decode import OnCorrupt, load_files_cached

NO_DOWNLOAD = "download the images and annotations zips from cocodataset.org and extract them there"


class COCOParams(BaseParams):
    """Where the COCO-style files are and how they are decoded."""

    folder: str = "coco"
    """Folder under the data root holding ``annotations/`` and the image folders."""
    train_set: str = "train2017"
    """Image set of the ``train`` split (``annotations/instances_<set>.json`` and the folder ``<set>/``)."""
    test_set: str = "val2017"
    """Image set of the ``test`` split (COCO's test-dev has no public annotations)."""
    image_size: Annotated[int, Field(ge=16)] = 512
    """Side of the square images in pixels (images are squashed to it, boxes scaled with them)."""
    drop_empty_train: bool = True
    """Leave training images without objects out (detectron2's default); test images are always kept."""
    on_corrupt: OnCorrupt = "error"
    """"error": an unreadable image fails naming its file; "skip": it is left out with its boxes."""
    stream: bool = Field(default=False, exclude=True)
    """Decode into a memory-mapped file in the cache folder instead of memory (same images; not in job keys)."""


def _paths(root: Path, p: COCOParams, split: str) -> tuple[Path, Path]:
    """(annotations JSON, image folder) of ``split``; a DataError saying where they are expected when absent."""
    image_set = p.train_set if split == "train" else p.test_set
    notes, folder = root / p.folder / "annotations" / f"instances_{image_set}.json", root / p.folder / image_set
    if not notes.is_file() or not folder.is_dir():
        raise missing_layout("coco", split, root, [notes, folder], "COCO layout", NO_DOWNLOAD)
    return notes, folder


Annotations = dict[int, list[dict[str, Any]]]
"""Image id -> its annotation records."""


def parse_annotations(path: Path) -> tuple[dict[int, str], list[dict[str, Any]], Annotations]:
    """(category id -> name in order of id, image records, image id -> its annotations) of a COCO JSON file."""
    try:
        data = json.loads(path.read_text())
        categories = sorted(data["categories"], key=lambda c: c["id"])
        images = list(data["images"])
        by_image: Annotations = defaultdict(list)
        for ann in data.get("annotations", []):
            by_image[int(ann["image_id"])].append(ann)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a COCO annotations file ({type(exc).__name__}: {exc})") from None
    return {int(c["id"]): str(c["name"]) for c in categories}, images, by_image


class COCO(Dataset):
    """COCO-style detection from ``<folder>/annotations/instances_<set>.json``; boxes in ``targets``."""

    name: ClassVar[str] = "coco"
    Params: ClassVar[type[BaseParams]] = COCOParams
    params: COCOParams

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """``split``: uint8 images (N, 3, S, S), image labels (N,), one BoxTargets per image in ``targets``."""
        if split not in self.splits:
            raise DataError(f"coco: unknown split '{split}'; available: {', '.join(self.splits)}")
        p = self.params
        notes, folder = _paths(ctx.root, p, split)
        categories, images, by_image = parse_annotations(notes)
        if len(categories) < 2:
            raise DataError(f"{notes}: {len(categories)} categor{'y' if len(categories) == 1 else 'ies'}; "
                            "detection needs two or more")
        classes = tuple(categories.values())
        index = {cid: k for k, cid in enumerate(categories)}
        rows = []
        for img in images:
            anns = [a for a in by_image.get(int(img["id"]), []) if int(a["category_id"]) in index]
            if split == "train" and p.drop_empty_train and not any(not a.get("iscrowd", 0) for a in anns):
                continue
            rows.append((folder / str(img["file_name"]), float(img["width"]), float(img["height"]), anns))
        if not rows:
            raise DataError(f"{notes}: no images with objects for split '{split}'")
        missing = next((f for f, *_ in rows if not f.is_file()), None)
        if missing is not None:
            raise DataError(f"coco: {missing} is listed in {notes} but missing")
        files = [f for f, *_ in rows]
        images_t, kept = load_files_cached(files, p.image_size, p.on_corrupt, ctx.cache_dir,
                                           f"coco-{split}-{p.image_size}px", stream=p.stream)
        targets = []
        for i in kept.tolist():
            _, width, height, anns = rows[i]
            k = len(anns)
            xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(k, 4)
            targets.append(resized_targets(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                                           torch.tensor([index[int(a["category_id"])] for a in anns]),
                                           torch.tensor([bool(a.get("iscrowd", 0)) for a in anns]),
                                           width, height, p.image_size))
        fingerprint = file_fingerprint([notes, *files])
        digest = hashlib.sha256(f"{fingerprint}:{p.model_dump_json()}".encode()).hexdigest()[:16]
        return detection_set(images_t, targets, classes, f"coco:{digest}:{split}",
                             rows=torch.arange(len(targets)) if p.stream else None)

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """The identity of the annotations file and the image folder's files (stats only); '' when absent."""
        try:
            notes, folder = _paths(ctx.root, self.params, split)
        except DataError:
            return ""
        return file_fingerprint([notes, *sorted(f for f in folder.iterdir() if f.is_file())])


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(COCO)
