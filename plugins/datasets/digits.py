"""`digits`: scikit-learn's bundled real handwritten digits (UCI optical digits, 1,797 images).

The 8x8 grayscale images (levels 0..16) ship inside scikit-learn, so this real dataset needs no
download. They are rescaled to 0..255, upsampled to ``image_size`` and repeated to three channels.
scikit-learn defines no test split; a stratified, seeded split carves one out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from ssl_bench.harness import (
    DataContext,
    DataError,
    Dataset,
    ImageSet,
    hookimpl,
    resize_uint8,
    stratified_split,
)
from ssl_bench.harness import (
    Params as BaseParams,
)


class Digits(Dataset):
    """Handwritten digits 0-9 from scikit-learn, as RGB uint8 images.

    - [0] Alpaydin & Kaynak, Optical Recognition of Handwritten Digits, UCI ML Repository, 1998
    """

    name: ClassVar[str] = "digits"

    class Params(BaseParams):
        image_size: Annotated[int, Field(ge=8)] = 32
        """Side of the square images in pixels (bilinear upsampling from 8x8)."""
        test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.25
        """Fraction of every class held out as the test split."""
        seed: Annotated[int, Field(ge=0)] = 0
        """Seed of the stratified train/test split."""

    params: Params

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``split``: uint8 images (N, 3, image_size, image_size), int64 labels (N,) in 0..9."""
        if split not in self.splits:
            raise DataError(f"digits: unknown split '{split}'; available: {', '.join(self.splits)}")
        from sklearn.datasets import load_digits  # here, not at import: sklearn takes a second to import

        bunch = load_digits()
        raw = torch.from_numpy(bunch.images).float()  # (1797, 8, 8), levels 0..16
        images = (raw * (255 / 16)).round().clamp(0, 255).to(torch.uint8)[:, None]  # (N, 1, 8, 8)
        images = resize_uint8(images, self.params.image_size).expand(-1, 3, -1, -1)
        labels = torch.from_numpy(bunch.target).long()
        train_idx, test_idx = stratified_split(labels, self.params.test_fraction, self.params.seed)
        idx = train_idx if split == "train" else test_idx
        digest = hashlib.sha256(self.params.model_dump_json().encode()).hexdigest()[:16]
        classes = tuple(str(c) for c in bunch.target_names)
        return ImageSet(images[idx].contiguous(), labels[idx], classes, f"digits:{digest}:{split}")

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """'': the images ship inside scikit-learn, whatever the data root."""
        return ""


@hookimpl
def bench_register_datasets(register: Callable[[type], None]) -> None:
    register(Digits)
