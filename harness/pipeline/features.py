"""Encoder features, extracted once per (checkpoint, dataset split) and reused by every probe."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from ssl_bench.harness.data import ImageSet, cached, normalize, to_float


@torch.no_grad()
def extract(encoder: nn.Module, images: ImageSet, device: torch.device, batch_size: int = 512) -> Tensor:
    """Features of a set's uint8 images (N, C, H, W) -> float32 (N, D) on the CPU, encoder in eval mode.

    The images are read chunk by chunk (:meth:`ImageSet.chunks`), so a mapped set is never in memory whole.
    """
    encoder.eval()
    cuda = device.type == "cuda"
    out = []
    for chunk in images.chunks(batch_size, device):
        x = normalize(to_float(chunk))
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out.append(encoder(x).float().cpu())
    return torch.cat(out)


class FeatureCache:
    """Features of one encoder, keyed by the source split of an ImageSet, cached on disk.

    ``cache(imageset)`` extracts the whole source split once (the first time any subset of it is
    asked for) and indexes it, so validation carve-outs and label fractions cost nothing more.
    A cache file that is truncated, unreadable or of another row count is discarded with a one-line
    warning and extracted again (:func:`~ssl_bench.harness.data.cached`).
    """

    def __init__(self, encoder: nn.Module, device: torch.device, folder: Path) -> None:
        self.encoder, self.device, self.folder = encoder, device, folder
        self._memory: dict[str, Tensor] = {}
        self._sources: dict[str, ImageSet] = {}

    def register_source(self, source: ImageSet) -> None:
        """Declare the full split that subsets with ``source.key`` are drawn from."""
        self._sources.setdefault(source.key, source)

    def __call__(self, images: ImageSet) -> Tensor:
        if images.key not in self._memory:
            source = self._sources.get(images.key, images)
            if source.indices is not None:
                raise ValueError(f"register the full split of {images.key} before asking for a subset")
            name = hashlib.sha256(images.key.encode()).hexdigest()[:16] + ".pt"
            self._memory[images.key] = cached(
                self.folder / name, lambda: {"features": extract(self.encoder, source, self.device)},
                check=lambda value: _unfit(value, len(source)))["features"]
        feats = self._memory[images.key]
        return feats if images.indices is None else feats[images.indices]


def _unfit(value: dict[str, Tensor], rows: int) -> str | None:
    """Why a loaded feature cache is not the (``rows``, D) float features of its split, or None."""
    feats = value.get("features")
    if feats is None or feats.ndim != 2 or not feats.is_floating_point():
        return "not a feature cache (no float (N, D) 'features')"
    if feats.shape[0] != rows:
        return f"{feats.shape[0]} feature rows for a split of {rows} images"
    return None
