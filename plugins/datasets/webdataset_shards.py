"""`webdataset`: WebDataset tar shards, decoded once into a memory-mapped file and read batch by batch.

A WebDataset (https://github.com/webdataset/webdataset) is a set of tar shards in which the files of one
sample share a name: ``000123.jpg`` and ``000123.cls`` (the class index as text). ``urls`` is a brace
pattern of local shards, ``"shards/train-{000000..000009}.tar"``, relative to the data root unless
absolute; ``test_urls`` the same for ``test`` (without it the set has ``train`` only). Shards are read in
order with the ``webdataset`` package (the ``webdataset`` extra: ``pip install "ssl-bench[webdataset]"``).

Streaming, as chosen here: the shards are decoded once, chunk by chunk, into a raw uint8 file of the
context's cache folder (:func:`~ssl_bench.harness.data.cached_mapped`, N x 3 x S x S bytes, S =
``image_size``), and the ImageSet maps it (``ImageSet.mapped``): a batch reads only its rows, so a set
larger than memory trains with the harness's own seeded sampling (a random permutation per epoch, as
for every other dataset) and gives the same numbers as the same images held in memory. Reading the
tars in order at every epoch instead would need a shuffle buffer (samples near each other in the shards
land in the same batches) and a decode of every image at every epoch; the price of the file is its disk
space. Memory holds one chunk of :data:`SAMPLES_PER_DECODE` images while the file is written.

Images (the first of ``image_keys`` a sample has) are decoded by the Parquet dataset's decoder
(:func:`~ssl_bench.plugins.datasets.decode.decode_images`) and resized, squashed, to ``image_size``
squares. Labels come from ``label_key`` (default ``cls``); when no sample has one (and ``label_key`` was
not set) the set is unlabelled, every label 0 of the class "unlabelled", pretraining data only;
``label_key = ""`` says so up front (the plan then refuses evaluations on it). Class names are
``classes``, else "0".."K-1" with K over ``train`` and ``test`` (both are decoded then).
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from ssl_bench.harness import DataContext, DataError, Dataset, ImageSet, cached_mapped, file_fingerprint, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.plugins.datasets import decode
from ssl_bench.plugins.datasets.sources import UNLABELLED, require

SAMPLES_PER_DECODE = 256
"""Samples decoded (then resized) and written at a time."""


def describe(shards: list[Path]) -> str:
    """The first shard and how many follow, for messages."""
    return f"{shards[0]}" + (f" (and {len(shards) - 1} more)" if len(shards) > 1 else "")


class ShardReader:
    """Decodes a split's shards in order (``cached_mapped``'s build): uint8 (K, 3, S, S) chunks to ``write``.

    A sample without an image entry is an error naming its shard and key (left out with ``on_corrupt =
    "skip"``, like an undecodable image); so is a sample without a label among samples with one.
    """

    def __init__(self, what: str, shards: list[Path], p: WebDatasetShards.Params) -> None:
        self.what, self.shards, self.p = what, shards, p
        self.labels: list[int] = []
        self.skipped: list[str] = []
        self.with_label = 0
        self.without_label: str | None = None
        self.blobs: list[bytes | None] = []
        self.names: list[str] = []
        self.pending: list[int] = []

    def __call__(self, write: Callable[[Tensor], None]) -> dict[str, Any]:
        """Read every sample; returns the metadata kept beside the decoded file (labels of the kept rows)."""
        wds = require("webdataset", "webdataset", self.what)
        pipeline = wds.DataPipeline(wds.SimpleShardList([str(s) for s in self.shards]), wds.tarfile_to_samples())
        try:
            for sample in pipeline:
                self.add(sample, write)
        except (OSError, ValueError, tarfile.TarError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{self.what}: cannot read the shards {describe(self.shards)}: {first}") from None
        self.flush(write)
        return {"labels": self.labels, "labelled": self.with_label > 0, "skipped": self.skipped,
                "samples": len(self.labels) + len(self.skipped)}

    def add(self, sample: dict[str, Any], write: Callable[[Tensor], None]) -> None:
        """Queue one sample (a dict of entry -> bytes, with ``__key__`` and ``__url__``), decoding a full chunk."""
        name = f"{sample.get('__url__', '?')}: sample {sample.get('__key__', '?')}"
        blob = next((sample[k] for k in self.p.image_keys if k in sample), None)
        if blob is None:
            if self.p.on_corrupt == "skip":
                self.skipped.append(name)
                return
            keys = ", ".join(f".{k}" for k in sample if not k.startswith("__"))
            raise DataError(f"{name}: no image entry ({', '.join('.' + k for k in self.p.image_keys)}); it has "
                            f"{keys or 'no entries'}: set params.image_keys")
        self.pending.append(self.label(sample, name))
        self.blobs.append(blob)
        self.names.append(name)
        if len(self.blobs) >= SAMPLES_PER_DECODE:
            self.flush(write)

    def label(self, sample: dict[str, Any], name: str) -> int:
        """The sample's class index from its ``label_key`` entry (ASCII digits); 0 without one."""
        key = self.p.label_key
        value = sample.get(key) if key else None
        if value is None:
            self.without_label = self.without_label or name
        else:
            self.with_label += 1
        if self.with_label and self.without_label:
            raise DataError(f"{self.without_label}: no .{key} entry, unlike other samples; give every sample a "
                            f"label, or set params.label_key = \"\" to read the images as unlabelled")
        if value is None:
            return 0
        text = value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value)
        if not re.fullmatch(r"\d+", text):
            raise DataError(f"{name}: .{key} is {text[:20]!r}, not a class index 0..K-1")
        return int(text)

    def flush(self, write: Callable[[Tensor], None]) -> None:
        """Decode the queued samples, write their images and keep the labels of those decoded."""
        if not self.blobs:
            return
        names, gone = self.names, [] if self.p.on_corrupt == "skip" else None
        images = decode.decode_images(self.blobs, lambda i: names[i], self.p.image_size, skipped=gone)
        dropped = set(gone or [])
        self.labels += [label for i, label in enumerate(self.pending) if i not in dropped]
        self.skipped += [names[i] for i in sorted(dropped)]
        if len(images):
            write(images)
        self.blobs, self.names, self.pending = [], [], []


class WebDatasetShards(Dataset):
    """WebDataset tar shards (local, brace patterns), decoded once into a memory-mapped file, read batch by batch."""

    name: ClassVar[str] = "webdataset"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    class Params(BaseParams):
        urls: str
        """Brace pattern of the train shards, e.g. "shards/train-{000000..000009}.tar"; relative to the data root."""
        test_urls: str | None = None
        """The same for the test split; None: no test split (pretraining data)."""
        image_keys: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
        """Entry names (file extensions) holding a sample's image; the first one present is read."""
        label_key: str = "cls"
        """Entry holding the class index as text; the default absent from every sample, or "", means unlabelled."""
        classes: tuple[str, ...] | None = None
        """Class names in label order; None: "0".."K-1", K over the train and test labels."""
        image_size: Annotated[int, Field(ge=8)] = 64
        """Side of the square images in pixels; every image is resized (squashed) to it once, then cached."""
        on_corrupt: decode.OnCorrupt = "error"
        """"error": an unreadable sample fails naming shard and key; "skip": it is left out and counted in the log."""

    params: Params

    @property
    def labelled(self) -> bool:
        """False when ``label_key`` is "" (pretraining data only: the plan refuses evaluations on it)."""
        return bool(self.params.label_key)

    def shards(self, split: str, ctx: DataContext) -> list[Path]:
        """The local shard files of ``split``, expanded from its brace pattern and checked to exist.

        Raises:
            DataError: no such split, or a shard is absent (naming it and how many are).
        """
        pattern = self.params.urls if split == "train" else self.params.test_urls if split == "test" else None
        if pattern is None:
            raise DataError(f"{self.name}: no '{split}' split: set params.test_urls to the shards of the test split"
                            if split == "test" else f"{self.name}: unknown split '{split}'; available: train, test")
        param = "urls" if split == "train" else "test_urls"
        if "://" in pattern or pattern.startswith("pipe:"):
            raise DataError(f"{self.name}: params.{param} = '{pattern}' is not a local path; shards are read from "
                            "disk (download them first, then give their path relative to the data root)")
        braceexpand = require("braceexpand", "webdataset", self.name)
        files = [Path(u).expanduser() for u in braceexpand.braceexpand(pattern)]
        files = [f if f.is_absolute() else ctx.root / f for f in files]
        missing = [f for f in files if not f.is_file()]
        if missing:
            more = f" ({len(missing)} of {len(files)} shards missing)" if len(files) > 1 else ""
            raise DataError(f"{self.name}: shard {missing[0]} not found{more} (params.{param} = '{pattern}', data "
                            f"root {ctx.root}); set --data-root or BENCH_DATA_ROOT, or give an absolute path")
        return files

    def decoded(self, split: str, ctx: DataContext) -> tuple[Tensor, dict[str, Any], str]:
        """The split decoded once (cached): mapped uint8 (N, 3, S, S), its metadata and the shards' fingerprint."""
        p, shards = self.params, self.shards(split, ctx)
        fingerprint = file_fingerprint(shards)
        spec = (f"{fingerprint}:{p.image_keys}:{p.label_key}:{p.image_size}:{p.on_corrupt}:{decode.max_pixels()}"
                f":v{decode.CACHE_VERSION}")
        tag = re.sub(r"[^\w.-]", "_", f"{self.name}-{shards[0].stem}-{p.image_size}px")
        path = ctx.cache_dir / f"{tag}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}.u8"
        images, meta = cached_mapped(path, (3, p.image_size, p.image_size), ShardReader(self.name, shards, p))
        if not len(images):
            raise DataError(f"{self.name}: no images in the {split} shards {describe(shards)}")
        return images, meta, fingerprint

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``split``: uint8 images (N, 3, S, S), rows of a memory-mapped file; int64 labels (N,)."""
        p = self.params
        images, meta, fingerprint = self.decoded(split, ctx)
        decode.report_skipped(f"{self.name} {split}", meta["skipped"], meta["samples"])
        labels = torch.tensor(meta["labels"], dtype=torch.int64)
        if not meta["labelled"] and p.label_key and "label_key" in p.model_fields_set:
            raise DataError(f"{self.name}: no sample of the {split} shards {describe(self.shards(split, ctx))} has a "
                            f".{p.label_key} entry; set params.label_key = \"\" for unlabelled images")
        if not meta["labelled"]:
            classes = UNLABELLED
        elif p.classes is not None:
            classes = p.classes
        else:
            other = "test" if split == "train" else "train"
            top = [labels.max()] + ([torch.tensor(self.decoded(other, ctx)[1]["labels"] or [0]).max()]
                                    if p.test_urls is not None else [])
            classes = tuple(str(i) for i in range(int(max(top)) + 1))
        if int(labels.max()) >= len(classes):
            raise DataError(f"{self.name}: {split} labels span 0..{int(labels.max())} but params.classes names "
                            f"{len(classes)} classes")
        digest = hashlib.sha256(p.model_dump_json().encode()).hexdigest()[:12]
        return ImageSet(images, labels, classes, f"{self.name}:{digest}:{fingerprint}:{split}",
                        rows=torch.arange(len(labels)))

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """The split's shards' fingerprint (paths, sizes, mtimes), from a listing; nothing is read."""
        return file_fingerprint(self.shards(split, ctx))


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(WebDatasetShards)
