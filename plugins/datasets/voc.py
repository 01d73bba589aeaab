"""`voc`: PASCAL VOC detection from torchvision's VOCDetection layout, boxes resized with the images.

- [0] Everingham et al., The PASCAL Visual Object Classes (VOC) Challenge, IJCV 2010
- [1] He et al., Momentum Contrast for Unsupervised Visual Representation Learning, 2020, arXiv:1911.05722
  (detection transfer: train on VOC07+12 trainval, test on VOC07 test)

Layout under the data root ``R`` (what torchvision's ``VOCDetection`` downloads and reads), per year ``Y``::

    R/VOCdevkit/VOCY/ImageSets/Main/<set>.txt   image ids, one per line
    R/VOCdevkit/VOCY/Annotations/<id>.xml       size and objects (name, difficult, bndbox)
    R/VOCdevkit/VOCY/JPEGImages/<id>.jpg

``train`` concatenates ``train_sets`` (default ``2007/trainval`` + ``2012/trainval``, [1]) and ``test`` is
``test_sets`` (default ``2007/test``). The annotations are parsed here; VOC's 1-based inclusive pixel boxes
become 0-based ``(x1, y1, x2, y2)`` as detectron2 reads them, then are scaled with the image, which is decoded
once and squashed to ``image_size`` x ``image_size`` (then cached). ``difficult`` objects are kept and flagged
``ignore``: the detector trains on them (as detectron2 does) and scoring neither counts nor penalises them,
VOC's rule. An image's label is the class of its largest object that is not difficult.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar

import torch
from pydantic import Field, field_validator

from ssl_bench.harness import BoxTargets, DataContext, DataError, Dataset, ImageSet, file_fingerprint, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.plugins.datasets.boxes import detection_set, missing_layout, resized_targets
from ssl_bench.plugins.datasets.decode import OnCorrupt, load_files_cached

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
"""VOC's 20 classes in the devkit's order."""
DOWNLOADABLE = {"2007": ("train", "val", "trainval", "test"), "2012": ("train", "val", "trainval")}
"""The (year, set) pairs torchvision's VOCDetection can download."""


class VOCParams(BaseParams):
    """Which VOC image sets make each split, and how they are decoded."""

    train_sets: tuple[str, ...] = ("2007/trainval", "2012/trainval")
    """``year/set`` image sets of the ``train`` split (VOC07+12 trainval, as [1])."""
    test_sets: tuple[str, ...] = ("2007/test",)
    """``year/set`` image sets of the ``test`` split (VOC07 test, as [1])."""
    image_size: Annotated[int, Field(ge=16)] = 512
    """Side of the square images in pixels (images are squashed to it, boxes scaled with them)."""
    on_corrupt: OnCorrupt = "error"
    """"error": an unreadable image fails naming its file; "skip": it is left out with its boxes."""
    download: bool = False
    """Download the missing image sets with torchvision (the 2007 and 2012 sets it knows)."""
    stream: bool = Field(default=False, exclude=True)
    """Decode into a memory-mapped file in the cache folder instead of memory (same images; not in job keys)."""

    @field_validator("train_sets", "test_sets")
    @classmethod
    def _year_set(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            year, _, name = item.partition("/")
            if not (len(year) == 4 and year.isdigit() and name):
                raise ValueError(f"'{item}': expected 'year/set', e.g. '2007/trainval'")
        if not v:
            raise ValueError("name at least one 'year/set'")
        return v


def _folder(root: Path, year: str) -> Path:
    return root / "VOCdevkit" / f"VOC{year}"


def _ids(root: Path, item: str, split: str, download: bool) -> tuple[Path, list[str]]:
    """The folder of ``item`` (``year/set``) and its image ids, downloading it first where asked and possible."""
    year, _, name = item.partition("/")
    folder = _folder(root, year)
    listing = folder / "ImageSets" / "Main" / f"{name}.txt"
    if not listing.is_file() and download and name in DOWNLOADABLE.get(year, ()):
        from torchvision.datasets import VOCDetection

        try:
            VOCDetection(str(root), year=year, image_set=name, download=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise DataError(f"voc: cannot download {item} into {root}: {exc}") from exc
    if not listing.is_file():
        why = None if name in DOWNLOADABLE.get(year, ()) else f"torchvision does not know the set {item}"
        raise missing_layout("voc", split, root, [listing, folder / "Annotations", folder / "JPEGImages"],
                             "torchvision VOCDetection layout", why)
    return folder, [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


def parse_annotation(path: Path) -> tuple[float, float, BoxTargets]:
    """One VOC XML file: (width, height, objects in 0-based xyxy pixels of the original image).

    Raises:
        DataError: the file is missing, not XML, lacks its size, or names a class VOC does not have.
    """
    try:
        tree = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"{path}: unreadable VOC annotation: {exc}") from None
    try:
        width, height = float(tree.findtext("size/width", "")), float(tree.findtext("size/height", ""))
    except ValueError:
        raise DataError(f"{path}: no <size><width>/<height>: not a VOC annotation") from None
    boxes, labels, difficult = [], [], []
    for obj in tree.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in CLASSES:
            raise DataError(f"{path}: object class '{name}' is not one of VOC's 20 classes")
        try:
            box = [float(obj.findtext(f"bndbox/{k}", "")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise DataError(f"{path}: an object '{name}' without a numeric <bndbox>") from None
        boxes.append([box[0] - 1, box[1] - 1, box[2], box[3]])
        labels.append(CLASSES.index(name))
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    k = len(labels)
    return width, height, BoxTargets(torch.tensor(boxes, dtype=torch.float32).reshape(k, 4),
                                     torch.tensor(labels, dtype=torch.int64), torch.tensor(difficult, dtype=torch.bool))


class VOC(Dataset):
    """PASCAL VOC detection (20 classes): VOC07+12 trainval / VOC07 test by default, boxes in ``targets``."""

    name: ClassVar[str] = "voc"
    Params: ClassVar[type[BaseParams]] = VOCParams
    params: VOCParams

    def _files(self, split: str, root: Path, download: bool) -> tuple[list[Path], list[Path]]:
        """The image files and annotation files of ``split``, in row order."""
        if split not in self.splits:
            raise DataError(f"voc: unknown split '{split}'; available: {', '.join(self.splits)}")
        p = self.params
        images, notes = [], []
        for item in p.train_sets if split == "train" else p.test_sets:
            folder, ids = _ids(root, item, split, download)
            notes += [folder / "Annotations" / f"{i}.xml" for i in ids]
            images += [folder / "JPEGImages" / f"{i}.jpg" for i in ids]
        return images, notes

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """``split``: uint8 images (N, 3, S, S), image labels (N,), one BoxTargets per image in ``targets``."""
        p = self.params
        files, notes = self._files(split, ctx.root, p.download or ctx.download)
        missing = next((f for f in (*notes, *files) if not f.is_file()), None)
        if missing is not None:
            raise DataError(f"voc: {missing} is listed in the image sets of split '{split}' but missing")
        parsed = [parse_annotation(n) for n in notes]
        fingerprint = file_fingerprint([*files, *notes])
        images, kept = load_files_cached(files, p.image_size, p.on_corrupt, ctx.cache_dir,
                                         f"voc-{split}-{p.image_size}px", file_fingerprint(files), stream=p.stream)
        targets = [resized_targets(t.boxes, t.labels, t.ignore, w, h, p.image_size)
                   for w, h, t in (parsed[i] for i in kept.tolist())]
        digest = hashlib.sha256(f"{fingerprint}:{p.model_dump_json(exclude={'download'})}".encode()).hexdigest()[:16]
        return detection_set(images, targets, CLASSES, f"voc:{digest}:{split}",
                             rows=torch.arange(len(targets)) if p.stream else None)

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """The identity of the listed images and annotations (a stat per file; nothing decoded); '' if absent."""
        try:
            files, notes = self._files(split, ctx.root, download=False)
            return file_fingerprint([*files, *notes])
        except (DataError, OSError):
            return ""


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(VOC)
