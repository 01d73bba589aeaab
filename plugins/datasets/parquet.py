"""`parquet`: images from a Hugging Face-style Parquet export, decoded once and cached as tensors.

A folder holds one file per split (``train.parquet``, ``test.parquet``) or shards of it
(``train-00000-of-00004.parquet``). The image column is a struct ``{bytes, path}`` holding an
encoded JPEG/PNG/WebP file (a plain binary column works too); the label column holds int64 labels.
Decoding uses torchvision's native decoders; the decoded uint8 tensors are cached in the context's
cache folder, keyed by the file's fingerprint, so a second load reads one tensor file. A corrupt row
fails naming the file and row, or is left out with ``on_corrupt = "skip"`` (the count is logged).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pydantic import Field
from torch import Tensor

from ssl_bench.harness import (
    DataContext,
    DataError,
    Dataset,
    ImageSet,
    cached,
    file_fingerprint,
    hookimpl,
)
from ssl_bench.harness import (
    Params as BaseParams,
)
from ssl_bench.plugins.datasets.decode import OnCorrupt, decode_images, max_pixels, report_skipped
from ssl_bench.plugins.datasets.sources import data_path

__all__ = ["ParquetImages", "class_names", "decode_images", "find_shards", "load_parquet_split", "load_shards"]

CACHE_VERSION = 3
"""Part of every cache key; bump when decoding changes (2: corrupt rows may be skipped; 3: 16-bit images refused)."""


def _read_split(file: Path, image_column: str, label_column: str, image_size: int | None,
                on_corrupt: OnCorrupt = "error") -> dict[str, Tensor]:
    try:
        names = pq.read_schema(file).names
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{file}: not a readable Parquet file: {exc}") from None
    missing = [c for c in (image_column, label_column) if c not in names]
    if missing:
        raise DataError(f"{file}: no column {', '.join(map(repr, missing))}; columns: {', '.join(names)}")
    table = pq.read_table(file, columns=[image_column, label_column])
    column = table.column(image_column)
    paths: list[str | None] | None = None
    if pa.types.is_struct(column.type):
        if column.type.get_field_index("path") >= 0:
            paths = pc.struct_field(column, "path").to_pylist()
        column = pc.struct_field(column, "bytes")
    if table.column(label_column).null_count or (column.null_count and on_corrupt == "error"):
        raise DataError(f"{file}: null values in column '{image_column}' or '{label_column}'")
    label_type = table.column(label_column).type
    if not pa.types.is_integer(label_type):  # a float label would be truncated, a string one cannot be cast
        first = table.column(label_column)[0].as_py() if table.num_rows else None
        example = f" (row 0: {first!r})" if table.num_rows else ""
        raise DataError(f"{file}: column '{label_column}' holds {label_type} values{example}; class labels must be "
                        "integer class indices 0..K-1")

    def where(i: int) -> str:
        return f"{file}: row {i}" + (f" (path {paths[i]})" if paths and paths[i] else "")

    skipped: list[int] | None = [] if on_corrupt == "skip" else None
    images = decode_images(column.to_pylist(), where, image_size, skipped=skipped)
    labels = torch.from_numpy(table.column(label_column).to_numpy().astype("int64"))
    gone = torch.tensor(skipped or [], dtype=torch.int64)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[gone] = False
    return {"images": images, "labels": labels[keep], "skipped": gone}


def load_parquet_split(
    file: Path, image_column: str = "img", label_column: str = "label", cache_dir: Path | None = None,
    *, image_size: int | None = None, on_corrupt: OnCorrupt = "error",
) -> tuple[Tensor, Tensor]:
    """Decode one Parquet file to images uint8 (N, 3, H, W) and labels int64 (N,), cached on disk.

    The cache file in ``cache_dir`` is keyed by the file's fingerprint (path, size, mtime), the
    column names, ``image_size`` and ``on_corrupt``; ``cache_dir=None`` disables caching. Rows
    skipped as corrupt (``on_corrupt="skip"``) are logged on every load.
    """
    if not file.is_file():
        raise DataError(f"{file}: file not found")

    def build() -> dict[str, Tensor]:
        return _read_split(file, image_column, label_column, image_size, on_corrupt)

    if cache_dir is None:
        data = build()
    else:
        spec = (f"{file_fingerprint([file])}:{image_column}:{label_column}:{image_size}:{on_corrupt}:{max_pixels()}"
                f":v{CACHE_VERSION}")
        digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
        data = cached(Path(cache_dir) / f"parquet-{file.stem}-{digest}.pt", build)
    skipped = data["skipped"].tolist()
    report_skipped(str(file), [f"row {i}" for i in skipped], len(data["labels"]) + len(skipped))
    return data["images"], data["labels"]


def find_shards(folder: Path) -> dict[str, list[Path]]:
    """Split name -> its Parquet files in ``folder`` (``train.parquet`` or ``train-00000-of-00004.parquet``)."""
    shards: dict[str, list[Path]] = {}
    for f in sorted(folder.glob("*.parquet")):
        shards.setdefault(f.stem.split("-")[0], []).append(f)
    return shards


def load_shards(files: Sequence[Path], image_column: str, label_column: str, cache_dir: Path | None,
                image_size: int | None, on_corrupt: OnCorrupt = "error") -> tuple[Tensor, Tensor]:
    """Decode and concatenate the shards of one split: images uint8 (N, 3, H, W), labels int64 (N,)."""
    parts = [load_parquet_split(f, image_column, label_column, cache_dir, image_size=image_size,
                                on_corrupt=on_corrupt) for f in files]
    for f, (im, _) in zip(files, parts):
        if im.shape[1:] != parts[0][0].shape[1:]:
            raise DataError(f"{f}: images are {tuple(im.shape[1:])}, unlike {files[0].name}; "
                            "set params.image_size to resize every image")
    return torch.cat([im for im, _ in parts]), torch.cat([lb for _, lb in parts])


def class_names(shards: dict[str, list[Path]], label_column: str) -> tuple[str, ...]:
    """Class names from Hugging Face metadata (a ClassLabel feature), else "0".."K-1" over every split."""
    first = next(iter(shards.values()))[0]
    try:
        info = json.loads((pq.read_schema(first).metadata or {})[b"huggingface"])
        return tuple(info["info"]["features"][label_column]["names"])
    except (KeyError, TypeError, ValueError):
        pass
    top = max(pc.max(pq.read_table(f, columns=[label_column]).column(0)).as_py() or 0
              for files in shards.values() for f in files)
    return tuple(str(i) for i in range(top + 1))


class ParquetImages(Dataset):
    """Any labelled image dataset exported to Parquet in the Hugging Face layout."""

    name: ClassVar[str] = "parquet"

    class Params(BaseParams):
        path: str
        """Folder holding ``{split}.parquet`` (or ``{split}-*.parquet`` shards); relative to the data root."""
        image_column: str = "img"
        """Column of encoded images: a struct with ``bytes`` (and ``path``), or binary."""
        label_column: str = "label"
        """Column of int64 class labels."""
        classes: tuple[str, ...] | None = None
        """Class names in label order; None reads Hugging Face metadata or uses "0", "1", ..."""
        image_size: Annotated[int, Field(gt=0)] | None = None
        """Resize every image to this square side in pixels; None keeps the stored size."""
        on_corrupt: OnCorrupt = "error"
        """"error": a corrupt row fails naming file and row; "skip": it is left out and counted in the log."""

    params: Params

    def folder(self, ctx: DataContext) -> Path:
        """The dataset folder, with a relative ``path`` resolved against the data root."""
        path = Path(self.params.path).expanduser()
        return path if path.is_absolute() else ctx.root / path

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``split``: uint8 images (N, 3, H, W), int64 labels (N,)."""
        p, folder = self.params, data_path(self.name, self.params.path, ctx)
        shards = find_shards(folder)
        if split not in shards:
            raise DataError(f"parquet: no split '{split}' in {folder} (expected {split}.parquet); "
                            f"available: {', '.join(sorted(shards)) or '(no .parquet files)'}")
        images, labels = load_shards(shards[split], p.image_column, p.label_column, ctx.cache_dir, p.image_size,
                                     p.on_corrupt)
        classes = p.classes or class_names(shards, p.label_column)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(f"parquet: labels of {folder}/{split} span {labels.min()}..{labels.max()} "
                            f"but there are {len(classes)} classes")
        digest = hashlib.sha256(p.model_dump_json().encode()).hexdigest()[:12]
        return ImageSet(images, labels, classes, f"parquet:{digest}:{file_fingerprint(shards[split])}:{split}")

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """The split's Parquet files' fingerprint (paths, sizes, mtimes); '' when there are none yet."""
        folder = self.folder(ctx)
        files = find_shards(folder).get(split, []) if folder.is_dir() else []
        return file_fingerprint(files) if files else ""


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(ParquetImages)
