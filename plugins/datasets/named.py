"""What every named dataset shares: its Params, the Parquet copy under the data root, the missing-data error.

Resolution order of a named dataset ``name``'s split ``s`` under the data root ``R``:

1. HF-style Parquet ``R/name/s.parquet`` (or shards ``R/name/s-00000-of-00004.parquet``), decoded by
   :mod:`ssl_bench.plugins.datasets.parquet` and cached. A ``validation`` file serves as ``val`` (or as ``test``
   for datasets without a val split, e.g. ImageNet). With ``train`` but no ``test`` file, both
   ``train`` and ``test`` are carved from it (seeded, stratified, ``test_fraction`` of every class).
2. The dataset's own layout under ``R`` (torchvision's, or class folders), see each dataset.
3. Otherwise one :class:`~ssl_bench.harness.errors.DataError` (:func:`missing_data`) naming the paths looked at
   and the fixes: ``--data-root`` / ``BENCH_DATA_ROOT``, or ``download = true`` where the source allows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Protocol

import pyarrow.parquet as pq
from pydantic import Field, create_model

from ssl_bench.harness import (
    DataContext,
    DataError,
    Dataset,
    ImageSet,
    file_fingerprint,
    stratified_split,
)
from ssl_bench.harness import (
    Params as BaseParams,
)
from ssl_bench.plugins.datasets.decode import OnCorrupt
from ssl_bench.plugins.datasets.parquet import class_names, find_shards, load_shards

IMAGE_COLUMNS = ("image", "img")
"""Image columns looked for in a Parquet copy, first present wins."""
LABEL_COLUMNS = ("label", "labels", "fine_label")
"""Label columns looked for in a Parquet copy, first present wins."""


class NamedParams(BaseParams):
    """Parameters of every named dataset (subclasses change the ``image_size`` default)."""

    download: bool = False
    """Download the source files into the data root when no local copy is found (never otherwise)."""
    image_size: Annotated[int, Field(ge=8)] = 64
    """Side of the square images in pixels; every image is resized (squashed) to it once, then cached."""
    on_corrupt: OnCorrupt = "error"
    """"error": an unreadable image fails naming its file; "skip": it is left out and counted in the log."""
    stream: bool = Field(default=False, exclude=True)
    """Decode image files once into a memory-mapped uint8 file in the cache folder and read batches from it,
    for splits larger than memory (image-file layouts only: Parquet copies and the STL-10 / SVHN arrays are
    held in memory). The images are the same either way, so it is left out of job keys."""
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    """Share of every class held out as ``test`` where the source has no test split."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of that held-out split (not the run's seed)."""


def params_with_size(base: type[BaseParams], name: str, image_size: int) -> type[BaseParams]:
    """A subclass of ``base`` named ``name`` whose ``image_size`` defaults to ``image_size``."""
    field = Field(default=image_size, ge=8, description=f"Side of the square images in pixels (default "
                  f"{image_size}); every image is resized (squashed) to it once, then cached.")
    model: type[BaseParams] = create_model(name, __base__=base, image_size=(int, field))
    return model


def check_split(name: str, split: str, splits: Sequence[str]) -> None:
    """Raise a DataError for a split ``name`` does not have."""
    if split not in splits:
        raise DataError(f"{name}: unknown split '{split}'; available: {', '.join(splits)}")


def content_key(name: str, source: str, fingerprint: str, params: SplitOptions | BaseParams, split: str) -> str:
    """The ImageSet key: dataset, source kind, a digest of the source files and params, split."""
    spec = f"{fingerprint}:{params.model_dump_json(exclude={'download'})}"
    return f"{name}:{source}:{hashlib.sha256(spec.encode()).hexdigest()[:16]}:{split}"


def carve(data: ImageSet, split: str, test_fraction: float, seed: int) -> ImageSet:
    """The ``train`` or ``test`` part of a set without a test split (a mapped set's rows stay in its file)."""
    train_idx, test_idx = stratified_split(data.labels, test_fraction, seed)
    return data.subset(train_idx if split == "train" else test_idx, key=data.key)


class SplitOptions(Protocol):
    """What :func:`parquet_under_root` reads of a dataset's params (NamedParams and FolderSetParams have it)."""

    @property
    def image_size(self) -> int | None: ...
    @property
    def on_corrupt(self) -> OnCorrupt: ...
    @property
    def test_fraction(self) -> float: ...
    @property
    def seed(self) -> int: ...

    def model_dump_json(self, *, exclude: set[str]) -> str: ...


def _first(candidates: Sequence[str], present: Sequence[str] | Mapping[str, object]) -> str | None:
    return next((c for c in candidates if c in present), None)


def parquet_under_root(name: str, split: str, p: SplitOptions, ctx: DataContext, *,
                       has_val: bool, test_stems: Sequence[str] | None = None) -> ImageSet | None:
    """Split ``split`` of the HF-style Parquet copy ``<root>/<name>/``, or None when there is none.

    Args:
        name: the dataset's registered name (the folder under the data root).
        split: the split asked for.
        p: the dataset's params (``image_size``, ``on_corrupt``, ``test_fraction``, ``seed``).
        ctx: data root and cache folder.
        has_val: whether the dataset has a val split; if not, a ``validation`` file serves as ``test``.
        test_stems: file names serving as ``test``, first present wins, when the default rule is wrong
            (ImageNet's HF ``test`` file is unlabelled: its test split is ``validation``).

    Returns:
        uint8 images (N, 3, S, S) and int64 labels (N,), or None to fall through to the next source.
    """
    found = parquet_files(name, split, ctx, has_val=has_val, test_stems=test_stems)
    if found is None:
        return None
    files, stem, carved = found
    folder = ctx.root / name
    shards = find_shards(folder)
    columns = pq.read_schema(files[0]).names
    image_column, label_column = _first(IMAGE_COLUMNS, columns), _first(LABEL_COLUMNS, columns)
    if image_column is None or label_column is None:
        raise DataError(f"{files[0]}: expected an image column ({' or '.join(IMAGE_COLUMNS)}) and a label column "
                        f"({' or '.join(LABEL_COLUMNS)}); columns: {', '.join(columns)}")
    images, labels = load_shards(files, image_column, label_column, ctx.cache_dir, p.image_size, p.on_corrupt)
    classes = class_names(shards, label_column)
    if len(labels) and labels.max() >= len(classes):
        raise DataError(f"{name}: labels of {folder}/{stem} reach {labels.max()} but there are {len(classes)} classes")
    data = ImageSet(images, labels, classes, content_key(name, "parquet", file_fingerprint(files), p, split))
    return carve(data, split, p.test_fraction, p.seed) if carved else data


def parquet_files(name: str, split: str, ctx: DataContext, *, has_val: bool,
                  test_stems: Sequence[str] | None = None) -> tuple[list[Path], str, bool] | None:
    """The Parquet files :func:`parquet_under_root` reads for ``split`` (same arguments), or None.

    Returns:
        the files, their split stem (``train``, ``validation``, ...), and whether ``split`` is carved
        from the ``train`` file (no test file); None when there is no Parquet copy of ``split``.
    """
    folder = ctx.root / name
    shards = find_shards(folder) if folder.is_dir() else {}
    if not shards:
        return None
    stems = {"val": ("val", "validation"),
             "test": tuple(test_stems or (("test",) if has_val else ("test", "validation", "val")))}
    test_stem = _first(stems["test"], shards)
    stem = _first(stems.get(split, (split,)), shards)
    carved = split in ("train", "test") and "train" in shards and test_stem is None
    if carved:
        stem = "train"
    if stem is None:
        return None
    return shards[stem], stem, carved


def tree_fingerprint(folder: Path) -> str:
    """:func:`file_fingerprint` of every file below ``folder`` (sorted, hidden ones skipped); '' if absent.

    The identity of a dataset whose files a torchvision class reads: a listing and a stat per file.
    """
    if not folder.is_dir():
        return ""
    return file_fingerprint(sorted(f for f in folder.rglob("*") if not f.name.startswith(".") and f.is_file()))


def missing_data(name: str, split: str, root: Path, expected: Sequence[str], layout: str,
                 no_download: str | None) -> DataError:
    """The one error of a named dataset found nowhere.

    Args:
        name: the dataset's registered name.
        split: the split asked for.
        root: the data root.
        expected: paths (relative to ``root``, glob patterns allowed) of the dataset's own layout.
        layout: what that layout is, e.g. "torchvision layout" or "class-folder layout".
        no_download: why ``download = true`` cannot help, or None when it can.
    """
    where = " or ".join(f"{root}/{e}" for e in expected)
    fix = "set --data-root or BENCH_DATA_ROOT to the folder that holds it"
    fix += (", or set download = true in the dataset's params" if no_download is None
            else f"; {name} cannot be downloaded automatically ({no_download}), place its files there")
    return DataError(f"{name}: no data for split '{split}': expected HF-style Parquet {root / name}/{split}.parquet "
                     f"or the {layout} {where}; {fix}")


def dataset_class(name: str, splits: Sequence[str], params: type[BaseParams], doc: str,
                  load: Callable[[str, BaseParams, DataContext], ImageSet],
                  fingerprint: Callable[[str, BaseParams, DataContext], str]) -> type[Dataset]:
    """A Dataset subclass registered as ``name`` whose ``load`` checks the split and calls ``load``.

    The table-driven modules (torchvision_sets, folder_sets) make one class per row with it;
    ``fingerprint(split, params, ctx)`` is its :meth:`Dataset.fingerprint` (the data's identity in job keys).
    """
    title = "".join(part.title() for part in name.split("_"))

    def load_split(self: Dataset, split: str, ctx: DataContext) -> ImageSet:
        check_split(name, split, self.splits)
        return load(split, self.params, ctx)

    def fingerprint_split(self: Dataset, split: str, ctx: DataContext) -> str:
        check_split(name, split, self.splits)
        return fingerprint(split, self.params, ctx)

    load_split.__doc__ = "Return ``split``: uint8 images (N, 3, S, S) with S = ``image_size``, int64 labels (N,)."
    fingerprint_split.__doc__ = "The identity of the files ``split`` is read from (a listing; nothing is decoded)."
    attrs = {"name": name, "splits": tuple(splits), "Params": params, "load": load_split,
             "fingerprint": fingerprint_split,
             "__doc__": doc, "__module__": params.__module__, "__qualname__": title}
    return type(title, (Dataset,), attrs)
