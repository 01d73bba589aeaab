"""`parquet`: images from a Hugging Face-style Parquet export, decoded once and cached as tensors.

A folder holds one file per split (``train.parquet``, ``test.parquet``) or shards of it
(``train-00000-of-00004.parquet``). The image column is a struct ``{bytes, path}`` holding an
encoded JPEG/PNG/WebP file (a plain binary column works too); the label column holds int64 labels.
Decoding uses torchvision's native decoders; the decoded uint8 tensors are cached in the context's
cache folder, keyed by the file's fingerprint, so a second load reads one tensor file.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pydantic import Field
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from harness import hookimpl
from harness.components import DataContext, Dataset
from harness.components import Params as BaseParams
from harness.data import ImageSet, cached, file_fingerprint, resize_uint8
from harness.errors import DataError

CACHE_VERSION = 1
"""Part of every cache key; bump when decoding changes."""


def decode_images(blobs: Sequence[bytes | None], where: Callable[[int], str], image_size: int | None = None) -> Tensor:
    """Decode encoded image files to one RGB uint8 tensor.

    Args:
        blobs: encoded files (JPEG, PNG, WebP, GIF), one per row.
        where: row index -> description for error messages (file, row, stored path).
        image_size: resize every image to this square side; None requires equal sizes.

    Returns:
        uint8 tensor of shape (N, 3, H, W).

    Raises:
        DataError: a row is empty or corrupt, or sizes differ without ``image_size``.
    """
    with warnings.catch_warnings():  # torchvision 0.29 deprecates torchvision.io in favour of torchcodec
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        out = [img for start in range(0, len(blobs), 1024) for img in _decode_chunk(blobs, start, 1024, where)]
    if not out:
        return torch.empty(0, 3, image_size or 0, image_size or 0, dtype=torch.uint8)
    if image_size is not None:
        return torch.cat([resize_uint8(img[None], image_size) for img in out])
    for i, img in enumerate(out):
        if img.shape != out[0].shape:
            raise DataError(f"{where(i)}: image is {tuple(img.shape[1:])} but row 0 is {tuple(out[0].shape[1:])}; "
                            "set params.image_size to resize every image")
    return torch.stack(out)


def _decode_chunk(blobs: Sequence[bytes | None], start: int, size: int, where: Callable[[int], str]) -> list[Tensor]:
    """Decode rows ``start:start + size``: all-JPEG chunks in one native call, else image by image."""
    datas = []
    for i, blob in enumerate(blobs[start : start + size], start):
        if not blob:
            raise DataError(f"{where(i)}: no image bytes")
        datas.append(torch.frombuffer(bytearray(blob), dtype=torch.uint8))
    if all(d[:2].tolist() == [0xFF, 0xD8] for d in datas):
        try:
            return decode_jpeg(datas, mode=ImageReadMode.RGB)  # type: ignore[no-any-return]
        except RuntimeError:
            pass  # find the bad row below
    images = []
    for i, d in enumerate(datas, start):
        try:
            images.append(decode_image(d, mode=ImageReadMode.RGB))
        except RuntimeError as exc:
            raise DataError(f"{where(i)}: corrupt image: {str(exc).splitlines()[0]}") from None
    return images


def _read_split(file: Path, image_column: str, label_column: str, image_size: int | None) -> dict[str, Tensor]:
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
    if column.null_count or table.column(label_column).null_count:
        raise DataError(f"{file}: null values in column '{image_column}' or '{label_column}'")

    def where(i: int) -> str:
        return f"{file}: row {i}" + (f" (path {paths[i]})" if paths and paths[i] else "")

    images = decode_images(column.to_pylist(), where, image_size)
    labels = torch.from_numpy(table.column(label_column).to_numpy().astype("int64"))
    return {"images": images, "labels": labels}


def load_parquet_split(
    file: Path, image_column: str = "img", label_column: str = "label", cache_dir: Path | None = None,
    *, image_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Decode one Parquet file to images uint8 (N, 3, H, W) and labels int64 (N,), cached on disk.

    The cache file in ``cache_dir`` is keyed by the file's fingerprint (path, size, mtime), the
    column names and ``image_size``; ``cache_dir=None`` disables caching.
    """
    if not file.is_file():
        raise DataError(f"{file}: file not found")
    if cache_dir is None:
        data = _read_split(file, image_column, label_column, image_size)
    else:
        spec = f"{file_fingerprint([file])}:{image_column}:{label_column}:{image_size}:v{CACHE_VERSION}"
        digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
        data = cached(Path(cache_dir) / f"parquet-{file.stem}-{digest}.pt",
                      lambda: _read_split(file, image_column, label_column, image_size))
    return data["images"], data["labels"]


def _hf_class_names(file: Path, label_column: str) -> tuple[str, ...] | None:
    """Class names stored by the `datasets` library (a ClassLabel feature), if any."""
    try:
        info = json.loads((pq.read_schema(file).metadata or {})[b"huggingface"])
        return tuple(info["info"]["features"][label_column]["names"])
    except (KeyError, TypeError, ValueError):
        return None


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

    params: Params

    def folder(self, ctx: DataContext) -> Path:
        """The dataset folder, with a relative ``path`` resolved against the data root."""
        path = Path(self.params.path).expanduser()
        return path if path.is_absolute() else ctx.root / path

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``split``: uint8 images (N, 3, H, W), int64 labels (N,)."""
        p, folder = self.params, self.folder(ctx)
        if not folder.is_dir():
            raise DataError(f"parquet: folder {folder} not found (params.path = '{p.path}', data root {ctx.root}); "
                            "set --data-root or BENCH_DATA_ROOT, or give an absolute path")
        shards: dict[str, list[Path]] = {}
        for f in sorted(folder.glob("*.parquet")):
            shards.setdefault(f.stem.split("-")[0], []).append(f)
        if split not in shards:
            raise DataError(f"parquet: no split '{split}' in {folder} (expected {split}.parquet); "
                            f"available: {', '.join(sorted(shards)) or '(no .parquet files)'}")
        parts = [load_parquet_split(f, p.image_column, p.label_column, ctx.cache_dir, image_size=p.image_size)
                 for f in shards[split]]
        for f, (im, _) in zip(shards[split], parts):
            if im.shape[1:] != parts[0][0].shape[1:]:
                raise DataError(f"{f}: images are {tuple(im.shape[1:])}, unlike {shards[split][0].name}; "
                                "set params.image_size to resize every image")
        images, labels = torch.cat([im for im, _ in parts]), torch.cat([lb for _, lb in parts])
        classes = p.classes or _hf_class_names(shards[split][0], p.label_column)
        if classes is None:  # the largest label over every split, so all splits agree
            top = max(pc.max(pq.read_table(f, columns=[p.label_column]).column(0)).as_py() or 0
                      for files in shards.values() for f in files)
            classes = tuple(str(i) for i in range(top + 1))
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(f"parquet: labels of {folder}/{split} span {labels.min()}..{labels.max()} "
                            f"but there are {len(classes)} classes")
        digest = hashlib.sha256(p.model_dump_json().encode()).hexdigest()[:12]
        return ImageSet(images, labels, classes, f"parquet:{digest}:{file_fingerprint(shards[split])}:{split}")


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(ParquetImages)
