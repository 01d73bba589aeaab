"""`cifar10` and `cifar100`: CIFAR from a Hugging Face-style Parquet export or the torchvision layout.

Resolution order for split ``s`` under the data root ``R``:

1. ``R/cifar10/s.parquet`` (Hugging Face Parquet layout), decoded by :mod:`ssl_bench.plugins.datasets.parquet`
   and cached as tensors;
2. the torchvision layout ``R/cifar-10-batches-py`` (downloaded there when ``download`` is set);
3. otherwise a :class:`~ssl_bench.harness.errors.DataError` saying where the files are expected.

``image_size`` (default 32, the native size) resizes every image once; from Parquet the resized tensors
are cached with the decoded ones.

- [0] Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009
"""

from __future__ import annotations

from collections.abc import Callable
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
    resize_uint8,
)
from ssl_bench.harness import (
    Params as BaseParams,
)
from ssl_bench.plugins.datasets.parquet import load_parquet_split

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm".split()
)
"""The 100 fine labels in label order (alphabetical)."""


class CifarParams(BaseParams):
    """Parameters shared by both CIFAR datasets."""

    download: bool = False
    """Download the torchvision layout into the data root when no local copy is found."""
    image_size: Annotated[int, Field(ge=8)] = 32
    """Side of the square images in pixels; 32 is the native size, others are resized once and cached."""


def cifar_fingerprint(name: str, split: str, ctx: DataContext) -> str:
    """The identity of the files ``split`` is read from (the Parquet file, else every file of the
    torchvision layout's folder), without decoding; '' when neither is there yet."""
    file = ctx.root / name / f"{split}.parquet"
    if file.is_file():
        return file_fingerprint([file])
    folder = ctx.root / {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    files = sorted(f for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else []
    return file_fingerprint(files) if files else ""


def load_cifar(name: str, split: str, params: CifarParams, ctx: DataContext) -> ImageSet:
    """Load CIFAR-10 or CIFAR-100 ``split`` as uint8 images (N, 3, S, S) and int64 labels (N,).

    Args:
        name: "cifar10" or "cifar100".
        split: "train" or "test".
        params: the dataset's params (``download``, ``image_size`` = S).
        ctx: data root, cache folder and whether downloading is allowed.
    """
    if split not in ("train", "test"):
        raise DataError(f"{name}: unknown split '{split}'; available: train, test")
    classes, label_column = (CIFAR10_CLASSES, "label") if name == "cifar10" else (CIFAR100_CLASSES, "fine_label")
    # imported here, not at the top: importing torchvision takes about a second
    from torchvision import datasets as tv_datasets

    tv_cls, folder = {
        "cifar10": (tv_datasets.CIFAR10, "cifar-10-batches-py"),
        "cifar100": (tv_datasets.CIFAR100, "cifar-100-python"),
    }[name]
    file = ctx.root / name / f"{split}.parquet"
    size = params.image_size
    if file.is_file():
        images, labels = load_parquet_split(file, "img", label_column, ctx.cache_dir,
                                            image_size=None if size == 32 else size)
        key = f"{name}:parquet:{file_fingerprint([file])}:{split}"
    elif (ctx.root / folder).is_dir() or params.download or ctx.download:
        try:
            ds = tv_cls(root=str(ctx.root), train=split == "train", download=params.download or ctx.download)
        except (RuntimeError, OSError) as exc:  # corrupt files, or a download without network
            raise DataError(f"{name}: cannot read the torchvision layout under {ctx.root}: {exc}") from exc
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        labels = torch.tensor(ds.targets, dtype=torch.int64)
        images, key = resize_uint8(images, size), f"{name}:torchvision:{split}"
    else:
        raise DataError(
            f"{name}: no data found; expected {ctx.root}/{name}/{{train,test}}.parquet or the torchvision layout "
            f"{ctx.root}/{folder}; set --data-root or BENCH_DATA_ROOT, or download = true"
        )
    if size != 32:
        key = f"{key}:{size}px"
    return ImageSet(images, labels, classes, key)


class Cifar10(Dataset):
    """CIFAR-10: 50,000 train and 10,000 test 32x32 colour images of 10 classes."""

    name: ClassVar[str] = "cifar10"

    class Params(CifarParams):
        """CIFAR-10 parameters (see :class:`CifarParams`)."""

    params: Params

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``split``: uint8 images (N, 3, S, S) (S = ``image_size``, 32), int64 labels (N,) in 0..9."""
        return load_cifar(self.name, split, self.params, ctx)

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """See :func:`cifar_fingerprint`."""
        return cifar_fingerprint(self.name, split, ctx)


class Cifar100(Dataset):
    """CIFAR-100: 50,000 train and 10,000 test 32x32 colour images of 100 fine classes."""

    name: ClassVar[str] = "cifar100"

    class Params(CifarParams):
        """CIFAR-100 parameters (see :class:`CifarParams`); labels are the fine labels."""

    params: Params

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``split``: uint8 images (N, 3, S, S) (S = ``image_size``, 32), int64 labels (N,) in 0..99."""
        return load_cifar(self.name, split, self.params, ctx)

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """See :func:`cifar_fingerprint`."""
        return cifar_fingerprint(self.name, split, ctx)


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(Cifar10)
    register(Cifar100)
