"""`imagefolder`: labelled images stored one folder per class, decoded once and cached as tensors.

Two layouts are understood (``F`` is the dataset folder, the class of an image is the name of the
class folder holding it, at any depth below it):

- split layout: ``F/train/<class>/*.jpg`` and ``F/test/<class>/*.jpg`` (and ``F/val/<class>/`` when
  present). Classes are the union of the class folders of every split, sorted, so labels agree
  across splits. With ``train/`` but no ``test/``, the test split is carved from ``train/``.
- single layout: ``F/<class>/*.jpg``. ``train`` and ``test`` are carved from it: a seeded split
  holding ``test_fraction`` of every class out as ``test`` (:func:`ssl_bench.harness.data.stratified_split`).

A class folder of the split that holds no image is an error naming it (it would be a class without
examples). :meth:`ImageFolder.fingerprint`, the data's identity in job keys, lists the same files
(:func:`list_split`) without decoding them.

Images are decoded by :mod:`ssl_bench.plugins.datasets.decode` (resized, squashed, to ``image_size`` squares),
cached in the context's cache folder and never decoded twice; with ``stream = true`` the cache is a
memory-mapped file and the ImageSet reads batches from it (splits larger than memory).
:func:`load_image_folder` is also the loader of the folder-shaped named datasets
(:mod:`ssl_bench.plugins.datasets.folder_sets`).
"""

from __future__ import annotations

import collections
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from ssl_bench.harness import (
    DataContext,
    DataError,
    Dataset,
    ImageSet,
    file_fingerprint,
    hookimpl,
    stratified_split,
)
from ssl_bench.harness import (
    Params as BaseParams,
)
from ssl_bench.plugins.datasets.decode import OnCorrupt, load_files_cached
from ssl_bench.plugins.datasets.sources import data_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
"""File name endings taken as images by default (compared case-insensitively)."""

SPLIT_DIRS: Mapping[str, tuple[str, ...]] = {"train": ("train",), "val": ("val",), "test": ("test",)}
"""Split -> names of the subfolder holding it, first present wins."""


class FolderOptions(BaseParams):
    """Options of every dataset read from class folders (``imagefolder`` and the folder-shaped sets)."""

    image_size: Annotated[int, Field(ge=8)] | None = None
    """Side of the square images in pixels (every image is resized to it); None keeps a common stored size."""
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    """File name endings taken as images, case-insensitive (e.g. [".jpg", ".png"])."""
    classes: tuple[str, ...] | None = None
    """Only these class folders, in this label order (e.g. an ImageNet subset); None takes every folder."""
    max_per_class: Annotated[int, Field(gt=0)] | None = None
    """Keep the first N files of every class (sorted by path) before decoding; None keeps all."""
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    """Share of every class held out as ``test`` when the folder has no test split of its own."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of that held-out split (not the run's seed)."""
    on_corrupt: OnCorrupt = "error"
    """"error": an unreadable image fails naming its file; "skip": it is left out and counted in the log."""
    stream: bool = Field(default=False, exclude=True)
    """Decode once into a memory-mapped uint8 file in the cache folder and read batches from it, for splits
    larger than memory (needs ``image_size``; image files only: a named dataset's Parquet copy is still read
    into memory). The images are the same either way, so it is left out of job keys."""


def class_folders(roots: Iterable[Path]) -> tuple[str, ...]:
    """Sorted names of the (non-hidden) subfolders of any of ``roots``."""
    return tuple(sorted({d.name for r in roots for d in r.iterdir() if d.is_dir() and not d.name.startswith(".")}))


def list_images(root: Path, classes: Sequence[str], extensions: Sequence[str],
                max_per_class: int | None = None) -> tuple[list[Path], list[int]]:
    """Image files below ``root/<class>/`` (sorted per class) and their labels (positions in ``classes``)."""
    ends = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        found = sorted(p for p in folder.rglob("*") if p.name.lower().endswith(ends) and p.is_file())
        found = found[:max_per_class] if max_per_class is not None else found
        files += found
        labels += [label] * len(found)
    return files, labels


@dataclass(frozen=True)
class FolderSplit:
    """The files of one split of a class-folder dataset, listed but not decoded.

    Attributes:
        source: the folder holding the split's class folders.
        classes: class names in label order (shared by every split).
        files: image files in row order (sorted per class).
        labels: the class of each file (positions in ``classes``).
        carve: whether ``train`` and ``test`` are carved from ``source`` (no test folder of its own).
    """

    source: Path
    classes: tuple[str, ...]
    files: list[Path]
    labels: list[int]
    carve: bool


def list_split(what: str, folder: Path, split: str, p: FolderOptions,
               split_dirs: Mapping[str, tuple[str, ...]] = SPLIT_DIRS) -> FolderSplit:
    """List the files of ``split`` of the class-folder dataset in ``folder`` (no decoding; arguments as
    :func:`load_image_folder`).

    Raises:
        DataError: no such split, a requested class has no folder, no images at all, or a class folder
            of the split holds no image (it would be a class without examples).
    """
    dirs: dict[str, Path] = {}
    for name, subs in split_dirs.items():
        found = next((folder / s for s in subs if (folder / s).is_dir()), None)
        if found is not None:
            dirs[name] = found
    if "train" not in dirs:
        dirs = {"train": folder}  # single layout: the folder holds the class folders
    carve = "test" not in dirs
    available = sorted(set(dirs) | ({"test"} if carve else set()))
    if split not in available:
        expected = "/".join(split_dirs.get(split, (split,)))
        raise DataError(f"{what}: no split '{split}' in {folder} (expected a subfolder {expected}/); "
                        f"available: {', '.join(available)}")
    classes = p.classes or class_folders(dirs.values())
    if p.classes:
        present = set(class_folders(dirs.values()))
        absent = [c for c in p.classes if c not in present]
        if absent:
            raise DataError(f"{what}: no class folder {', '.join(absent[:5])} in {folder}")
    source = dirs["train"] if carve and split in ("train", "test") else dirs[split]
    files, labels = list_images(source, classes, p.extensions, p.max_per_class)
    if not files:
        raise DataError(f"{what}: no images ({', '.join(p.extensions)}) in class folders below {source}")
    counts = collections.Counter(labels)
    empty = [source / c for i, c in enumerate(classes) if (source / c).is_dir() and not counts[i]]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(f"{what}: class folder {empty[0]}{more} holds no images ({', '.join(p.extensions)}); "
                        "it would be a class without examples: remove it, add images, or list the other "
                        "classes in params.classes")
    return FolderSplit(source, tuple(classes), files, labels, carve)


def load_image_folder(what: str, folder: Path, split: str, p: FolderOptions, ctx: DataContext,
                      split_dirs: Mapping[str, tuple[str, ...]] = SPLIT_DIRS) -> ImageSet:
    """Load ``split`` of the class-folder dataset in ``folder`` (layouts in the module docstring).

    Args:
        what: the dataset's name, used in messages, cache files and the content key.
        folder: the dataset folder (must exist).
        split: "train", "test" or another key of ``split_dirs`` present in ``folder``.
        p: decoding and splitting options.
        ctx: cache folder (``ctx.cache_dir``).
        split_dirs: split -> subfolder names holding it (e.g. ImageNet's test split is ``val/``).

    Returns:
        uint8 images (N, 3, S, S) with S = ``p.image_size`` (rows of a memory-mapped file with ``p.stream``),
        int64 labels (N,).
    """
    if p.stream and p.image_size is None:
        raise DataError(f"{what}: params.stream = true needs params.image_size (the decoded file holds one size)")
    listed = list_split(what, folder, split, p, split_dirs)
    source, classes, files, labels, carve = listed.source, listed.classes, listed.files, listed.labels, listed.carve
    fingerprint = file_fingerprint(files)
    size = p.image_size or "native"
    tag = re.sub(r"[^\w.-]", "_", f"{what}-{source.name}-{size}px")
    images, kept = load_files_cached(files, p.image_size, p.on_corrupt, ctx.cache_dir, tag, fingerprint,
                                     stream=p.stream)
    targets = torch.tensor(labels, dtype=torch.int64)[kept]
    digest = hashlib.sha256(f"{fingerprint}:{p.model_dump_json(exclude={'download'})}".encode()).hexdigest()[:16]
    key = f"{what}:folder:{digest}:{split}"
    data = ImageSet(images, targets, tuple(classes), key, rows=torch.arange(len(targets)) if p.stream else None)
    if carve:
        train_idx, test_idx = stratified_split(targets, p.test_fraction, p.seed)
        data = data.subset(train_idx if split == "train" else test_idx, key=key)
    return data


class ImageFolder(Dataset):
    """Any labelled image dataset stored as one folder per class (layouts in the module docstring)."""

    name: ClassVar[str] = "imagefolder"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    class Params(FolderOptions):
        """``path`` plus the class-folder options (:class:`FolderOptions`)."""

        path: str
        """The dataset folder; a relative path is resolved against the data root."""

    params: Params

    def folder(self, ctx: DataContext) -> Path:
        """The dataset folder (``path``, relative to the data root unless absolute); a DataError if absent."""
        return data_path(self.name, self.params.path, ctx)

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``split``: uint8 images (N, 3, S, S), int64 labels (N,); ``val`` only where ``val/`` exists."""
        return load_image_folder(self.name, self.folder(ctx), split, self.params, ctx)

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """The split's image files' fingerprint (paths, sizes, mtimes), from a listing; nothing is decoded."""
        return file_fingerprint(list_split(self.name, self.folder(ctx), split, self.params).files)


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(ImageFolder)
