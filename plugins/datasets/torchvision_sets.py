"""The named datasets torchvision knows, one row of :data:`SPECS` each, one registered class per row.

Names: stl10, svhn, flowers102, oxford_pets, caltech101, dtd, food101, fgvc_aircraft, stanford_cars,
sun397, eurosat, imagenette. Each split is found (see :mod:`ssl_bench.plugins.datasets.named`) as HF-style
Parquet under ``<root>/<name>/``, else in the torchvision layout under the data root (the ``layouts``
column; downloaded there only with ``download = true``), else one DataError says where it is expected.

torchvision only indexes the files (paths and labels, read from its private attributes); the images
are decoded by :mod:`ssl_bench.plugins.datasets.decode` at ``image_size``, once, then cached. STL-10 and SVHN come
as arrays and are resized (and cached) only when ``image_size`` differs from their native size.
Default ``image_size``: the native side where images are small and square (svhn 32, stl10 96, eurosat 64),
else 64, sized for CPU runs; a benchmark sets ``params.image_size`` for more (e.g. 224).
Sources without a test split (caltech101, sun397, eurosat) get a seeded, stratified ``test`` split of
``test_fraction`` (0.2) of every class; val splits are exposed where the source defines them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_bench.harness import (
    DataContext,
    DataError,
    Dataset,
    ImageSet,
    cached,
    file_fingerprint,
    hookimpl,
    resize_uint8,
)
from ssl_bench.plugins.datasets.decode import load_files_cached
from ssl_bench.plugins.datasets.named import (
    NamedParams,
    carve,
    content_key,
    dataset_class,
    missing_data,
    params_with_size,
    parquet_files,
    parquet_under_root,
    tree_fingerprint,
)


@dataclass(frozen=True)
class Spec:
    """How to find one torchvision dataset.

    Attributes:
        name: the registered name.
        tv_class: the class in ``torchvision.datasets``.
        layouts: path under the data root (glob allowed) marking the layout -> extra constructor
            arguments; the first present wins, ``download`` fetches the first.
        splits: our split -> constructor arguments; empty when the source is one set (train/test carved).
        image_size: default side of the square images.
        doc: the class docstring (what, sizes, citation).
        root: subfolder of the data root passed to torchvision as its ``root`` ("" = the data root).
        no_download: why torchvision cannot download it, or None.
        classes: class names where torchvision has none.
    """

    name: str
    tv_class: str
    layouts: Mapping[str, Mapping[str, str]]
    splits: Mapping[str, Mapping[str, str]]
    image_size: int
    doc: str
    root: str = ""
    no_download: str | None = None
    classes: tuple[str, ...] | None = None


def _tt(train: str = "train", test: str = "test", **more: str) -> dict[str, dict[str, str]]:
    return {"train": {"split": train}, "test": {"split": test}, **{k: {"split": v} for k, v in more.items()}}


SPECS: tuple[Spec, ...] = (
    Spec("stl10", "STL10", {"stl10_binary": {}}, _tt(unlabeled="unlabeled"), 96,
         "STL-10: 5,000 train / 8,000 test 96x96 images of 10 classes, plus 100,000 `unlabeled` (label -1). "
         "Coates et al., AISTATS 2011."),
    Spec("svhn", "SVHN", {"svhn/*_32x32.mat": {}}, _tt(extra="extra"), 32,
         "SVHN: 73,257 train / 26,032 test (+531,131 `extra`) 32x32 house-number digits; label 0 is digit 0. "
         "Netzer et al., 2011.", root="svhn", classes=tuple("0123456789")),
    Spec("flowers102", "Flowers102", {"flowers-102": {}}, _tt(val="val"), 64,
         "Oxford Flowers-102: 1,020 train / 1,020 val / 6,149 test images of 102 flowers. Nilsback & Zisserman, 2008."),
    Spec("oxford_pets", "OxfordIIITPet", {"oxford-iiit-pet": {}}, _tt(train="trainval"), 64,
         "Oxford-IIIT Pets: 3,680 trainval (our `train`) / 3,669 test images of 37 breeds. Parkhi et al., CVPR 2012."),
    Spec("caltech101", "Caltech101", {"caltech101/101_ObjectCategories": {}}, {}, 64,
         "Caltech-101: 8,677 images of 101 categories (no background class); no official split, test carved. "
         "Fei-Fei et al., 2004."),
    Spec("dtd", "DTD", {"dtd/dtd": {}}, _tt(val="val"), 64,
         "DTD: 1,880 train / 1,880 val / 1,880 test texture images of 47 classes (partition 1). "
         "Cimpoi et al., CVPR 2014."),
    Spec("food101", "Food101", {"food-101": {}}, _tt(), 64,
         "Food-101: 75,750 train / 25,250 test images of 101 dishes. Bossard et al., ECCV 2014."),
    Spec("fgvc_aircraft", "FGVCAircraft", {"fgvc-aircraft-2013b": {}}, _tt(val="val", trainval="trainval"), 64,
         "FGVC Aircraft: 3,334 train / 3,333 val / 3,333 test images of 100 variants. Maji et al., 2013."),
    Spec("stanford_cars", "StanfordCars", {"stanford_cars/devkit": {}}, _tt(), 64,
         "Stanford Cars: 8,144 train / 8,041 test images of 196 models. Krause et al., 3dRR 2013.",
         no_download="its original URL is gone; see torchvision's StanfordCars docs for the expected files"),
    Spec("sun397", "SUN397", {"SUN397": {}}, {}, 64,
         "SUN397: 108,754 scene images of 397 categories; test carved. Xiao et al., CVPR 2010."),
    Spec("eurosat", "EuroSAT", {"eurosat/2750": {}}, {}, 64,
         "EuroSAT (RGB): 27,000 64x64 Sentinel-2 land-use images of 10 classes; test carved. Helber et al., 2019."),
    Spec("imagenette", "Imagenette",
         {"imagenette2-160": {"size": "160px"}, "imagenette2-320": {"size": "320px"}, "imagenette2": {"size": "full"}},
         _tt(test="val"), 64,
         "Imagenette: 9,469 train / 3,925 val (our `test`) images of 10 ImageNet classes (fast.ai); "
         "imagenette2-160, -320 or full, whichever is present (download fetches -160)."),
)
"""Every torchvision-backed dataset, by registered name."""


def _index(ds: Any) -> tuple[list[Path] | np.ndarray, list[int], Sequence[Any] | None]:
    """(files or a uint8 (N, 3, H, W) array, labels, class names) of a constructed torchvision dataset."""
    names = getattr(ds, "classes", None) or getattr(ds, "categories", None)
    if isinstance(getattr(ds, "data", None), np.ndarray):  # STL10, SVHN
        return ds.data, [int(y) for y in ds.labels], names
    for files_attr in ("_image_files", "_images"):  # Flowers102, DTD, Food101, FGVCAircraft, SUN397 / Pets
        if hasattr(ds, files_attr):
            return [Path(f) for f in getattr(ds, files_attr)], [int(y) for y in ds._labels], names
    samples = getattr(ds, "_samples", None) or getattr(ds, "samples", None)  # Imagenette, StanfordCars / EuroSAT
    if samples is not None:
        return [Path(f) for f, _ in samples], [int(y) for _, y in samples], names
    if hasattr(ds, "categories"):  # Caltech101 keeps category and file number per row
        root = Path(ds.root) / "101_ObjectCategories"
        return [root / ds.categories[y] / f"image_{i:04d}.jpg" for i, y in zip(ds.index, ds.y)], list(ds.y), names
    raise DataError(f"{type(ds).__name__}: this torchvision version keeps its file list where ssl-bench does not look")


def load_torchvision(spec: Spec, split: str, p: NamedParams, ctx: DataContext) -> ImageSet:
    """Load ``split`` of ``spec``'s dataset: uint8 images (N, 3, S, S) with S = ``p.image_size``, labels (N,)."""
    found = parquet_under_root(spec.name, split, p, ctx, has_val="val" in spec.splits)
    if found is not None:
        return found
    download = p.download or ctx.download
    layout = next((m for m in spec.layouts if next(ctx.root.glob(m), None) is not None), None)
    if layout is None and download and spec.no_download is None:
        layout = next(iter(spec.layouts))
    if layout is None:
        raise missing_data(spec.name, split, ctx.root, list(spec.layouts), "torchvision layout", spec.no_download)
    kwargs = {**spec.layouts[layout], **spec.splits.get(split, {})}
    try:
        # imported here, not at the top: importing torchvision takes about a second
        from torchvision import datasets as tv_datasets

        ds = getattr(tv_datasets, spec.tv_class)(root=str(ctx.root / spec.root), download=download, **kwargs)
    except (RuntimeError, OSError, ValueError, KeyError, IndexError, ImportError) as exc:
        raise DataError(f"{spec.name}: cannot {'download or ' if download else ''}read the torchvision layout "
                        f"{ctx.root / layout}: {exc}") from exc
    data, targets, names = _index(ds)
    names = names or spec.classes
    labels = torch.tensor(targets, dtype=torch.int64)
    part = split if spec.splits else "all"
    tag = f"{spec.name}-{part}-{p.image_size}px"
    rows = None
    if isinstance(data, np.ndarray):
        base = ctx.root / (spec.root or layout)
        fingerprint = file_fingerprint(sorted(f for f in base.rglob("*") if f.is_file()))
        images = torch.from_numpy(data).contiguous()  # torchvision's arrays are transposed views
        if images.shape[-1] != p.image_size or images.shape[-2] != p.image_size:
            images = cached(ctx.cache_dir / f"{tag}-{fingerprint}.pt",
                            lambda: {"images": resize_uint8(images, p.image_size)})["images"]
    else:
        fingerprint = file_fingerprint(data)
        images, kept = load_files_cached(data, p.image_size, p.on_corrupt, ctx.cache_dir, tag, fingerprint,
                                         stream=p.stream)
        labels = labels[kept]
        rows = torch.arange(len(labels)) if p.stream else None
    classes = tuple(str(n[0] if isinstance(n, tuple) else n) for n in names) if names else tuple(
        str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0))
    found = ImageSet(images, labels, classes, content_key(spec.name, "torchvision", fingerprint, p, split), rows=rows)
    return found if spec.splits else carve(found, split, p.test_fraction, p.seed)


def torchvision_fingerprint(spec: Spec, split: str, ctx: DataContext) -> str:
    """The identity of the files ``split`` is read from, without decoding: the Parquet copy's files, else
    every file of the torchvision layout's folder (``<root>/<first part of the layout>``); '' when absent."""
    found = parquet_files(spec.name, split, ctx, has_val="val" in spec.splits)
    if found is not None:
        return file_fingerprint(found[0])
    layout = next((m for m in spec.layouts if next(ctx.root.glob(m), None) is not None), None)
    return "" if layout is None else tree_fingerprint(ctx.root / layout.split("/")[0])


def _make(spec: Spec) -> type[Dataset]:
    """The Dataset class registered as ``spec.name``."""
    title = "".join(part.title() for part in spec.name.split("_"))
    return dataset_class(spec.name, tuple(spec.splits) or ("train", "test"),
                         params_with_size(NamedParams, f"{title}Params", spec.image_size), spec.doc,
                         lambda split, p, ctx: load_torchvision(spec, split, p, ctx),  # type: ignore[arg-type]
                         lambda split, p, ctx: torchvision_fingerprint(spec, split, ctx))


DATASETS: dict[str, type[Dataset]] = {spec.name: _make(spec) for spec in SPECS}
"""Registered name -> Dataset class."""


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    for cls in DATASETS.values():
        register(cls)
