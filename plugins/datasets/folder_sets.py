"""The named datasets that come as class folders: tf_flowers, uc_merced, brain_mri, imagenet.

Each split is found (see :mod:`ssl_bench.plugins.datasets.named`) as HF-style Parquet under ``<root>/<name>/``,
else in the class-folder layout below (read by :func:`ssl_bench.plugins.datasets.imagefolder.load_image_folder`,
decoded once at ``image_size``, default 64, and cached), else one DataError says where it is expected.
The first folder of a dataset's list that holds sub-folders wins. Layouts, under the data root ``R``:

- ``tf_flowers``: ``R/tf_flowers/flower_photos/<class>/*.jpg`` (TensorFlow's ``flower_photos.tgz``
  extracted into ``R/tf_flowers``; ``download = true`` does that) or ``R/tf_flowers/<class>/*.jpg``.
  5 classes, 3,670 images; no official split, so ``test`` is carved (seeded, stratified, ``test_fraction``).
- ``uc_merced``: ``R/uc_merced/UCMerced_LandUse/Images/<class>/*.tif`` (the official zip extracted into
  ``R/uc_merced``; ``download = true`` does that), or ``R/uc_merced/Images/<class>/``, or
  ``R/uc_merced/<class>/``. 21 land-use classes x 100 256x256 aerial images; ``test`` carved.
- ``brain_mri``: ``R/brain_mri/Training/<class>/*.jpg`` and ``R/brain_mri/Testing/<class>/*.jpg`` (the
  Kaggle "Brain Tumor MRI Dataset", classes glioma, meningioma, notumor, pituitary; lower-case
  ``train/`` and ``test/`` work too). Kaggle needs a login, so there is no automatic download.
- ``imagenet``: ``R/imagenet/train/<wnid>/*.JPEG`` and ``R/imagenet/val/<wnid>/*.JPEG`` (torchvision's
  ImageNet layout after extraction; ``val/`` is our ``test`` split since ImageNet's test labels are
  not public). Class names are the WordNet ids. The licence forbids automatic download. At 64 px the
  full train split is ~16 GB of uint8: use ``classes`` or ``max_per_class`` for a subset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ssl_bench.harness import DataContext, DataError, Dataset, ImageSet, file_fingerprint, hookimpl
from ssl_bench.plugins.datasets.imagefolder import FolderOptions, list_split, load_image_folder
from ssl_bench.plugins.datasets.named import (
    dataset_class,
    missing_data,
    params_with_size,
    parquet_files,
    parquet_under_root,
)


class FolderSetParams(FolderOptions):
    """Class-folder options (:class:`~ssl_bench.plugins.datasets.imagefolder.FolderOptions`) plus ``download``."""

    download: bool = False
    """Download and extract the source archive into the data root when no local copy is found."""


@dataclass(frozen=True)
class FolderSpec:
    """Where one folder-shaped dataset lives.

    Attributes:
        name: the registered name.
        folders: candidate dataset folders relative to the data root, most specific first.
        split_dirs: split -> subfolder names holding it; None when the folder is one set (test carved).
        doc: the class docstring.
        url: archive that ``download = true`` extracts into ``<root>/<name>``; None when there is none.
        no_download: why there is no automatic download (with ``url`` None).
        test_stems: Parquet files serving as ``test`` where the default rule is wrong.
    """

    name: str
    folders: tuple[str, ...]
    split_dirs: Mapping[str, tuple[str, ...]] | None
    doc: str
    url: str | None = None
    no_download: str | None = None
    test_stems: tuple[str, ...] | None = None


SPECS: tuple[FolderSpec, ...] = (
    FolderSpec("tf_flowers", ("tf_flowers/flower_photos", "tf_flowers"), None,
               "TF Flowers: 3,670 photos of 5 flower classes (TensorFlow team, 2019); test carved.",
               url="https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"),
    FolderSpec("uc_merced", ("uc_merced/UCMerced_LandUse/Images", "uc_merced/Images", "uc_merced"), None,
               "UC Merced Land Use: 2,100 aerial 256x256 images of 21 classes (Yang & Newsam, 2010); test carved.",
               url="http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip"),
    FolderSpec("brain_mri", ("brain_mri",), {"train": ("Training", "train"), "test": ("Testing", "test")},
               "Brain tumor MRI (Kaggle, Nickparvar 2021): 5,712 train / 1,311 test slices of 4 classes.",
               no_download="it is distributed by Kaggle, which needs a login"),
    FolderSpec("imagenet", ("imagenet",), {"train": ("train",), "test": ("val",)},
               "ImageNet-1k (ILSVRC 2012): 1.28M train / 50,000 val (our `test`) images of 1,000 classes. "
               "Russakovsky et al., IJCV 2015.",
               no_download="its licence requires a manual download from image-net.org",
               test_stems=("validation", "val")),
)
"""Every folder-shaped named dataset."""


def _locate(spec: FolderSpec, root: Path) -> Path | None:
    """The first candidate folder that holds sub-folders (class or split folders), or None."""
    for rel in spec.folders:
        folder = root / rel
        if folder.is_dir() and any(d.is_dir() for d in folder.iterdir()):
            return folder
    return None


def load_folder_set(spec: FolderSpec, split: str, p: FolderSetParams, ctx: DataContext) -> ImageSet:
    """Load ``split`` of ``spec``'s dataset: uint8 images (N, 3, S, S) with S = ``p.image_size``, labels (N,)."""
    found = parquet_under_root(spec.name, split, p, ctx, has_val=False, test_stems=spec.test_stems)
    if found is not None:
        return found
    folder = _locate(spec, ctx.root)
    if folder is None and spec.url is not None and (p.download or ctx.download):
        try:
            # imported here, not at the top: importing torchvision takes about a second
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(spec.url, download_root=str(ctx.root / spec.name))
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataError(f"{spec.name}: cannot download {spec.url} into {ctx.root / spec.name}: {exc}") from exc
        folder = _locate(spec, ctx.root)
    dirs = spec.split_dirs or {}
    if folder is None or (dirs and not any((folder / d).is_dir() for d in dirs["train"])):
        expected = f"{spec.folders[0]}/{dirs[split][0]}/<class>/" if dirs else f"{spec.folders[0]}/<class>/"
        why = spec.no_download if spec.url is None else None
        raise missing_data(spec.name, split, ctx.root, [expected], "class-folder layout", why)
    return load_image_folder(spec.name, folder, split, p, ctx, dirs)  # no split folders: test is carved


def folder_set_fingerprint(spec: FolderSpec, split: str, p: FolderSetParams, ctx: DataContext) -> str:
    """The identity of the files ``split`` is read from, without decoding: the Parquet copy's files, else
    the split's image files in the class-folder layout (:func:`list_split`); '' when neither is there."""
    found = parquet_files(spec.name, split, ctx, has_val=False, test_stems=spec.test_stems)
    if found is not None:
        return file_fingerprint(found[0])
    folder = _locate(spec, ctx.root)
    dirs = spec.split_dirs or {}
    if folder is None or (dirs and not any((folder / d).is_dir() for d in dirs["train"])):
        return ""
    return file_fingerprint(list_split(spec.name, folder, split, p, dirs).files)


def _make(spec: FolderSpec) -> type[Dataset]:
    """The Dataset class registered as ``spec.name``."""
    title = "".join(part.title() for part in spec.name.split("_"))
    return dataset_class(spec.name, tuple(spec.split_dirs or ("train", "test")),
                         params_with_size(FolderSetParams, f"{title}Params", 64), spec.doc,
                         lambda split, p, ctx: load_folder_set(spec, split, p, ctx),  # type: ignore[arg-type]
                         lambda split, p, ctx: folder_set_fingerprint(spec, split, p, ctx))  # type: ignore[arg-type]


DATASETS: dict[str, type[Dataset]] = {spec.name: _make(spec) for spec in SPECS}
"""Registered name -> Dataset class."""


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    for cls in DATASETS.values():
        register(cls)
