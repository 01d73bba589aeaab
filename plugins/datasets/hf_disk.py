"""`hf_disk`: a Hugging Face ``datasets`` dataset saved with ``save_to_disk``, decoded once and cached.

``path`` holds what ``save_to_disk`` wrote: a DatasetDict (``dataset_dict.json`` and one folder per split,
each with ``state.json``, ``dataset_info.json`` and ``data-*.arrow``) or a single Dataset (those files
directly), which is one split, ``train``. It is opened with ``datasets.load_from_disk`` (the ``hf`` extra:
``pip install "ssl-bench[hf]"``). Our ``train`` and ``test`` are the DatasetDict's splits of those names,
or others through ``split_names`` (``{ test = "validation" }``); no test split is carved.

The image column (default: the first ``Image`` feature) holds encoded files (``{bytes, path}``, read
from ``path`` when only it is stored); they are decoded by the Parquet dataset's decoder
(:func:`~ssl_bench.plugins.datasets.decode.decode_images`, resized to ``image_size`` squares when given) into
uint8 (N, 3, H, W) and cached in the context's cache folder. Labels come from ``label_column``: a
``ClassLabel`` feature gives the class names; plain integers are their own classes ("0".."K-1", K over
every split); strings are classes in sorted order over every split. Without that column (the default
"label" absent, or ``label_column`` set to "") the set is unlabelled: every label 0 of the class
"unlabelled", pretraining data only. :meth:`HfDisk.fingerprint` covers the split's files (its folder's
state, info and arrow files, and ``dataset_dict.json``) from a listing, without opening them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import torch
from pydantic import Field
from torch import Tensor

from ssl_bench.harness import DataContext, DataError, Dataset, ImageSet, cached, file_fingerprint, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.plugins.datasets import decode
from ssl_bench.plugins.datasets.sources import UNLABELLED, data_path, require, unlabelled

ROWS_PER_DECODE = 512
"""Rows decoded (then resized) at a time, so memory holds few full-size images."""


def split_files(what: str, folder: Path, split: str, hf_split: str) -> list[Path]:
    """The files ``save_to_disk`` wrote for ``hf_split`` (our ``split``), found from a listing.

    Raises:
        DataError: ``folder`` is not a saved dataset, or has no such split.
    """
    index = folder / "dataset_dict.json"
    if index.is_file():
        try:
            names = [str(n) for n in json.loads(index.read_text())["splits"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{what}: {index}: not a readable dataset_dict.json ({exc})") from None
        if hf_split not in names:
            raise DataError(f"{what}: no split '{hf_split}' (our '{split}') in {folder}; it has {', '.join(names)}: "
                            f"map ours with params.split_names, e.g. {{ {split} = \"{names[-1]}\" }}")
        source, extra = folder / hf_split, [index]
    elif (folder / "state.json").is_file():
        if split != "train":
            raise DataError(f"{what}: {folder} holds a single Dataset, our 'train' split only (no '{split}'); "
                            "save a DatasetDict with both splits (e.g. Dataset.train_test_split) to evaluate on it")
        source, extra = folder, []
    else:
        raise DataError(f"{what}: {folder} is not a dataset saved with save_to_disk (expected dataset_dict.json "
                        "or state.json in it)")
    return extra + sorted(p for p in source.iterdir() if p.is_file())


def class_table(what: str, features: Any, column: str, parts: list[Any]) -> tuple[str, ...]:
    """Class names of ``column``: a ClassLabel's names, "0".."K-1" for integers, sorted strings (over ``parts``,
    every split's Dataset)."""
    names = getattr(features[column], "names", None)
    if names:
        return tuple(str(n) for n in names)
    values = [part.with_format("arrow")[:].column(column) for part in parts]
    kind = values[0].type
    if pa.types.is_integer(kind):
        top = max((pc.max(v).as_py() or 0) for v in values)
        return tuple(str(i) for i in range(int(top) + 1))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return tuple(sorted({x for v in values for x in pc.unique(v).to_pylist() if x is not None}))
    raise DataError(f"{what}: label column '{column}' holds {kind}; expected a ClassLabel, integers or strings")


def image_blobs(column: pa.ChunkedArray) -> tuple[list[bytes | None], list[str | None]]:
    """Encoded images of an ``Image`` column (``{bytes, path}``; a file read where only ``path`` is stored)."""
    if not pa.types.is_struct(column.type):
        return column.to_pylist(), [None] * len(column)
    blobs = pc.struct_field(column, "bytes").to_pylist()
    paths = pc.struct_field(column, "path").to_pylist() if column.type.get_field_index("path") >= 0 else []
    paths = paths or [None] * len(blobs)
    for i, (blob, path) in enumerate(zip(blobs, paths)):
        if blob is None and path and Path(path).is_file():
            blobs[i] = Path(path).read_bytes()
    return blobs, paths


class HfDisk(Dataset):
    """A Hugging Face `datasets` dataset saved with save_to_disk (DatasetDict splits, or one Dataset as train)."""

    name: ClassVar[str] = "hf_disk"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    class Params(BaseParams):
        path: str
        """The folder ``save_to_disk`` wrote; a relative path is resolved against the data root."""
        image_column: str | None = None
        """Column of encoded images; None: the first ``Image`` feature."""
        label_column: str = "label"
        """Column of class labels (ClassLabel, integers or strings); the default "label" when absent, or "",
        means unlabelled (pretraining only)."""
        split_names: dict[Literal["train", "test"], str] = {}
        """Our split -> the saved split serving as it, e.g. { test = "validation" }; unnamed ones keep their name."""
        image_size: Annotated[int, Field(gt=0)] | None = None
        """Resize every image to this square side in pixels; None keeps the stored size (all equal)."""
        on_corrupt: decode.OnCorrupt = "error"
        """"error": a corrupt row fails naming the split and row; "skip": it is left out and counted in the log."""

    params: Params

    @property
    def labelled(self) -> bool:
        """False when ``label_column`` is "" (pretraining data only: the plan refuses evaluations on it)."""
        return bool(self.params.label_column)

    def saved_split(self, split: str) -> str:
        """The saved split that serves as our ``split`` (``split_names``, else the same name)."""
        names: dict[str, str] = dict(self.params.split_names)
        return names.get(split, split)

    def _files(self, split: str, ctx: DataContext) -> tuple[Path, list[Path]]:
        folder = data_path(self.name, self.params.path, ctx)
        return folder, split_files(self.name, folder, split, self.saved_split(split))

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``split``: uint8 images (N, 3, H, W), int64 labels (N,) (zeros when unlabelled)."""
        p = self.params
        folder, files = self._files(split, ctx)
        datasets = require("datasets", "hf", self.name)
        try:
            loaded = datasets.load_from_disk(str(folder))
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{self.name}: {folder}: datasets.load_from_disk cannot read it: {first}") from None
        parts = list(loaded.values()) if isinstance(loaded, datasets.DatasetDict) else [loaded]
        ds = loaded[self.saved_split(split)] if isinstance(loaded, datasets.DatasetDict) else loaded
        features, columns = ds.features, list(ds.column_names)
        image = p.image_column or next((c for c in columns if isinstance(features[c], datasets.Image)), None)
        if image is None or image not in columns:
            raise DataError(f"{self.name}: {folder}: no image column {image or '(no Image feature)'}; columns: "
                            f"{', '.join(columns)}: set params.image_column")
        label = p.label_column if p.label_column in columns else None
        if p.label_column and label is None and "label_column" in p.model_fields_set:
            raise DataError(f"{self.name}: {folder}: no label column '{p.label_column}'; columns: {', '.join(columns)}"
                            " (set params.label_column = \"\" for unlabelled images)")
        classes = class_table(self.name, features, label, parts) if label else UNLABELLED
        fingerprint = file_fingerprint(files)
        spec = (f"{fingerprint}:{image}:{label}:{classes}:{p.image_size}:{p.on_corrupt}:{decode.max_pixels()}"
                f":v{decode.CACHE_VERSION}")
        digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
        where = str(files[-1].parent)  # the saved split's folder
        data = cached(ctx.cache_dir / f"{self.name}-{folder.name}-{split}-{digest}.pt",
                      lambda: decode_table(ds.with_format("arrow")[:], image, label, classes, p.image_size,
                                           p.on_corrupt, where))
        skipped = data["skipped"].tolist()
        decode.report_skipped(where, [f"row {i}" for i in skipped], len(data["labels"]) + len(skipped))
        key = hashlib.sha256(p.model_dump_json().encode()).hexdigest()[:12]
        return ImageSet(data["images"], data["labels"], classes, f"{self.name}:{key}:{fingerprint}:{split}")

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """The split's saved files' fingerprint (paths, sizes, mtimes), from a listing; nothing is opened."""
        return file_fingerprint(self._files(split, ctx)[1])


def decode_table(table: pa.Table, image: str, label: str | None, classes: tuple[str, ...], image_size: int | None,
                 on_corrupt: decode.OnCorrupt, where_split: str) -> dict[str, Tensor]:
    """Decode a split's rows, :data:`ROWS_PER_DECODE` at a time.

    Returns:
        ``images`` uint8 (K, 3, H, W), ``labels`` int64 (K,) (indices into ``classes``; zeros without ``label``)
        and ``skipped`` int64 (N - K,): the row numbers left out as corrupt (``on_corrupt = "skip"``).
    """
    blobs, paths = image_blobs(table.column(image))
    if label is None:
        labels = unlabelled(len(blobs))
    else:
        values = table.column(label).to_pylist()
        if None in values:
            raise DataError(f"{where_split}: row {values.index(None)} has no '{label}' value")
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[v] if isinstance(v, str) else int(v) for v in values], dtype=torch.int64)

    def where(i: int) -> str:
        return f"{where_split}: row {i}" + (f" (path {paths[i]})" if paths[i] else "")

    chunks: list[Tensor] = []
    skipped: list[int] = []
    for start in range(0, len(blobs), ROWS_PER_DECODE):
        local: list[int] | None = [] if on_corrupt == "skip" else None
        chunk = decode.decode_images(blobs[start:start + ROWS_PER_DECODE], lambda i, s=start: where(s + i),
                                     image_size, skipped=local)
        if chunks and len(chunk) and chunk.shape[1:] != chunks[0].shape[1:]:
            raise DataError(f"{where(start)}: images are {tuple(chunk.shape[1:])} but row 0 is "
                            f"{tuple(chunks[0].shape[1:])}; set params.image_size to resize every image")
        if len(chunk):
            chunks.append(chunk)
        skipped += [start + i for i in local or []]
    keep = torch.ones(len(blobs), dtype=torch.bool)
    keep[torch.tensor(skipped, dtype=torch.int64)] = False
    side = image_size or 0
    images = torch.cat(chunks) if chunks else torch.empty(0, 3, side, side, dtype=torch.uint8)
    return {"images": images, "labels": labels[keep], "skipped": torch.tensor(skipped, dtype=torch.int64)}


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(HfDisk)
