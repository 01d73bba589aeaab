"""`unlabelled_folder`: a folder of images without class folders, as pretraining data only.

Self-supervised pretraining needs no labels, and a user's own images rarely come sorted into classes
(a camera's export, a crawl, microscope tiles). Every image below ``path``, at any depth (hidden folders
skipped, files sorted by path), is one row of the single split ``train``; every label is 0, of the one
class ``"unlabelled"``. No test split is carved: nothing could be scored on it. The dataset says
``labelled = False``, so a benchmark that evaluates on it (an ``[[evaluations]]`` naming it, or one naming
no datasets while it is the pretraining set) or sweeps pretraining on it is refused when planned, with one
line naming the key (``bench validate`` finds it).

The name says what the data is, not how it is stored (``imagefolder`` is the labelled one-folder-per-class
layout). Images are decoded like ``imagefolder``'s (:func:`~ssl_bench.plugins.datasets.decode.load_files_cached`:
resized, squashed, to ``image_size`` squares, cached once; ``stream = true`` memory-maps the decoded file
for folders larger than memory). :meth:`UnlabelledFolder.fingerprint` lists the same files without decoding.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from ssl_bench.harness import DataContext, DataError, Dataset, ImageSet, file_fingerprint, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.plugins.datasets.decode import OnCorrupt, load_files_cached
from ssl_bench.plugins.datasets.imagefolder import IMAGE_EXTENSIONS
from ssl_bench.plugins.datasets.sources import UNLABELLED, data_path, unlabelled


def list_unlabelled(folder: Path, extensions: tuple[str, ...], limit: int | None) -> list[Path]:
    """Image files anywhere below ``folder``, sorted by path, none under a hidden folder; the first ``limit``."""
    ends = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    files = sorted(p for p in folder.rglob("*") if p.name.lower().endswith(ends) and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return files[:limit] if limit is not None else files


class UnlabelledFolder(Dataset):
    """Images in a folder without class folders (any depth), pretraining data only: one class, no test split."""

    name: ClassVar[str] = "unlabelled_folder"
    splits: ClassVar[tuple[str, ...]] = ("train",)
    labelled: ClassVar[bool] = False
    """No labels: the plan refuses evaluations and pretraining sweeps on it."""

    class Params(BaseParams):
        path: str
        """The image folder; a relative path is resolved against the data root."""
        image_size: Annotated[int, Field(ge=8)] | None = None
        """Side of the square images in pixels (every image is resized to it); None keeps a common stored size."""
        limit: Annotated[int, Field(gt=0)] | None = None
        """Keep the first N images (sorted by path) before decoding; None keeps all."""
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS
        """File name endings taken as images, case-insensitive (e.g. [".jpg", ".png"])."""
        on_corrupt: OnCorrupt = "error"
        """"error": an unreadable image fails naming its file; "skip": it is left out and counted in the log."""
        stream: bool = Field(default=False, exclude=True)
        """Decode once into a memory-mapped uint8 file in the cache folder and read batches from it, for folders
        larger than memory (needs ``image_size``). The images are the same either way: left out of job keys."""

    params: Params

    def files(self, split: str, ctx: DataContext) -> list[Path]:
        """The image files of ``split`` (only ``train``), listed, not decoded.

        Raises:
            DataError: another split, the folder is absent, or it holds no image.
        """
        if split != "train":
            raise DataError(f"{self.name}: no split '{split}'; unlabelled images are one split, 'train' "
                            "(pretraining data only: evaluate on a labelled dataset)")
        folder = data_path(self.name, self.params.path, ctx)
        files = list_unlabelled(folder, self.params.extensions, self.params.limit)
        if not files:
            raise DataError(f"{self.name}: no images ({', '.join(self.params.extensions)}) below {folder}")
        return files

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``train``: uint8 images (N, 3, S, S) (memory-mapped rows with ``stream``), int64 zeros (N,)."""
        p = self.params
        if p.stream and p.image_size is None:
            raise DataError(f"{self.name}: params.stream = true needs params.image_size (the decoded file holds "
                            "one size)")
        files = self.files(split, ctx)
        fingerprint = file_fingerprint(files)
        tag = re.sub(r"[^\w.-]", "_", f"{self.name}-{Path(p.path).name}-{p.image_size or 'native'}px")
        images, kept = load_files_cached(files, p.image_size, p.on_corrupt, ctx.cache_dir, tag, fingerprint,
                                         stream=p.stream)
        digest = hashlib.sha256(f"{fingerprint}:{p.model_dump_json()}".encode()).hexdigest()[:16]
        rows = torch.arange(len(kept)) if p.stream else None
        return ImageSet(images, unlabelled(len(kept)), UNLABELLED, f"{self.name}:{digest}:{split}", rows=rows)

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """The image files' fingerprint (paths, sizes, mtimes), from a listing; nothing is decoded."""
        return file_fingerprint(self.files(split, ctx))


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(UnlabelledFolder)
