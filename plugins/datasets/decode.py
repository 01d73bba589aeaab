"""Decoding images to uint8 tensors once, cached on disk, with corrupt images failing or skipped.

Parquet rows go through :func:`decode_images` (encoded bytes in memory). Every file-based dataset (image
folders, torchvision layouts) goes through :func:`load_files_cached`: the files are decoded by
torchvision's native decoders (PIL as a fallback for formats they lack, such as TIFF), resized to the
dataset's square resolution right away so that memory holds only small images, and saved as one tensor
file in the context's cache folder. The cache key covers the files' fingerprint (paths, sizes,
modification times), the resolution and the corrupt-file policy, so a second load reads one file and
never decodes again. With ``stream`` (a dataset's ``stream = true``) the images are decoded chunk by
chunk into a raw uint8 file instead, returned memory-mapped, for splits larger than memory. Skipped
files are reported on every load through the ``bench.data`` logger (stderr by default).

Before an image is decoded its header is read (PNG's IHDR, JPEG's SOF marker, else PIL's lazy open):
an image over :func:`max_pixels` (``BENCH_MAX_MEGAPIXELS``, default 64 megapixels: a 1.7 MB PNG can
hold 24,000 x 24,000 pixels, 1.7 GB decoded) and an image of more than 8 bits per channel (16-bit
PNG or TIFF, which would otherwise be clipped or wrapped into uint8) are a DataError naming the file
or row, never decoded. Both count as unreadable images for ``on_corrupt = "skip"``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssl_bench.harness import (
    DataError,
    cached,
    cached_mapped,
    check_decoded_fits,
    file_fingerprint,
    resize_uint8,
)

CACHE_VERSION = 2
"""Part of every cache key; bump when decoding changes (2: 16-bit images refused, not clipped)."""

MAX_MEGAPIXELS = 64
"""Default largest image decoded, in megapixels (width x height / 10**6); ``BENCH_MAX_MEGAPIXELS`` overrides it."""

SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG start-of-frame markers (they carry the precision, height and width)."""

OnCorrupt = Literal["error", "skip"]
"""What a dataset does with an unreadable image: fail naming the file, or leave it out and report it."""

CHUNK = 2048
"""Files decoded between two checks for an error."""

log = logging.getLogger("bench.data")


def max_pixels() -> int:
    """The largest image decoded, in pixels: ``BENCH_MAX_MEGAPIXELS`` (megapixels) or :data:`MAX_MEGAPIXELS`."""
    raw = os.environ.get("BENCH_MAX_MEGAPIXELS", "").strip()
    if not raw:
        return MAX_MEGAPIXELS * 1_000_000
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise DataError(f"BENCH_MAX_MEGAPIXELS={raw!r}: expected a positive number of megapixels (default "
                        f"{MAX_MEGAPIXELS})")
    return int(value * 1_000_000)


WIDE_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
"""PIL modes of more than 8 bits per channel."""


def image_header(blob: bytes) -> tuple[int, int, int] | None:
    """(width, height, bits per channel) read from an encoded image's header, or None when unknown.

    PNG and JPEG headers are parsed directly (a few bytes); other formats through PIL, which reads the
    header only. Nothing is decoded.
    """
    if blob[:8] == b"\x89PNG\r\n\x1a\n" and blob[12:16] == b"IHDR" and len(blob) >= 25:
        return int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big"), blob[24]
    if blob[:2] == b"\xff\xd8":
        return _jpeg_header(blob)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as im:
                return im.width, im.height, 16 if im.mode in WIDE_MODES else 8
    except Image.DecompressionBombError as exc:
        raise DataError(str(exc).splitlines()[0]) from None
    except (OSError, ValueError, SyntaxError):
        return None


def _jpeg_header(blob: bytes) -> tuple[int, int, int] | None:
    """(width, height, precision) from a JPEG's start-of-frame marker, or None when there is none."""
    i, n = 2, len(blob)
    while i + 4 <= n:
        if blob[i] != 0xFF:
            return None
        marker = blob[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in SOF_MARKERS:
            if i + 9 > n:
                return None
            return int.from_bytes(blob[i + 7:i + 9], "big"), int.from_bytes(blob[i + 5:i + 7], "big"), blob[i + 4]
        i += 2 + int.from_bytes(blob[i + 2:i + 4], "big")
    return None


def check_header(blob: bytes, where: str) -> None:
    """Refuse, before decoding, an image over :func:`max_pixels` or of more than 8 bits per channel.

    Raises:
        DataError: naming ``where``, the size and the limit (or the bit depth).
    """
    try:
        header = image_header(blob)
    except DataError as exc:  # PIL's own bomb limit (far above ours)
        raise DataError(f"{where}: {exc}; over the limit of {max_pixels() / 1e6:g} megapixels") from None
    if header is None:
        return
    width, height, bits = header
    limit = max_pixels()
    if width * height > limit:
        raise DataError(f"{where}: image is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels, "
                        f"{3 * width * height / 1e9:.1f} GB decoded), over the limit of {limit / 1e6:g} "
                        "megapixels; set BENCH_MAX_MEGAPIXELS to raise it, or shrink the image")
    if bits > 8:
        raise DataError(f"{where}: {bits}-bit image; ssl-bench reads 8 bits per channel (uint8), and would "
                        "clip it: convert the image to 8 bits")


def decode_blob(blob: bytes, where: str) -> Tensor:
    """Decode one encoded image (JPEG, PNG, WebP, GIF; TIFF, BMP and others through PIL) to RGB.

    Args:
        blob: the encoded file's bytes.
        where: the file (or row) named in the error message.

    Returns:
        uint8 tensor of shape (3, H, W).

    Raises:
        DataError: the bytes are empty, no decoder can read them, or the image is over the pixel limit
            or of more than 8 bits per channel (:func:`check_header`).
    """
    if not blob:
        raise DataError(f"{where}: no image bytes")
    check_header(blob, where)
    # imported here, not at the top: importing torchvision takes about a second
    from torchvision.io import ImageReadMode, decode_image

    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates torchvision.io in favour of torchcodec
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            image: Tensor = decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        if image.dtype != torch.uint8:
            raise DataError(f"{where}: {image.dtype} image; ssl-bench reads 8 bits per channel (uint8): convert "
                            "the image to 8 bits")
        return image
    try:
        with Image.open(io.BytesIO(blob)) as im:
            if im.mode in WIDE_MODES:
                raise DataError(f"{where}: image of PIL mode {im.mode} (more than 8 bits per channel); ssl-bench "
                                "reads 8 bits per channel: convert the image to 8 bits")
            array = np.asarray(im.convert("RGB"))  # (H, W, 3)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise DataError(f"{where}: corrupt image: {first}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def decode_images(blobs: Sequence[bytes | None], where: Callable[[int], str], image_size: int | None = None,
                  *, skipped: list[int] | None = None) -> Tensor:
    """Decode encoded image files to one RGB uint8 tensor.

    Args:
        blobs: encoded files (JPEG, PNG, WebP, GIF; others through PIL), one per row.
        where: row index -> description for error messages (file, row, stored path).
        image_size: resize every image to this square side; None requires equal sizes.
        skipped: when given, empty or corrupt rows are appended to it and left out instead of raising.

    Returns:
        uint8 tensor of shape (N, 3, H, W), N counting the rows not skipped.

    Raises:
        DataError: a row is empty or corrupt (without ``skipped``), or sizes differ without ``image_size``.
    """
    if image_size is not None and blobs:
        check_decoded_fits(len(blobs), 3, image_size, image_size, f"decoding from {where(0)} on")
    with warnings.catch_warnings():  # torchvision 0.29 deprecates torchvision.io in favour of torchcodec
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        out = [img for start in range(0, len(blobs), 1024)
               for img in _decode_chunk(blobs, start, 1024, where, skipped)]
    if not out:
        return torch.empty(0, 3, image_size or 0, image_size or 0, dtype=torch.uint8)
    if image_size is not None:
        return torch.cat([resize_uint8(img[None], image_size) for img in out])
    for i, img in enumerate(out):
        if img.shape != out[0].shape:
            raise DataError(f"{where(i)}: image is {tuple(img.shape[1:])} but row 0 is {tuple(out[0].shape[1:])}; "
                            "set params.image_size to resize every image")
    return torch.stack(out)


def _decode_chunk(blobs: Sequence[bytes | None], start: int, size: int, where: Callable[[int], str],
                  skipped: list[int] | None) -> list[Tensor]:
    """Decode rows ``start:start + size``: all-JPEG chunks in one native call, else image by image."""
    # imported here, not at the top: importing torchvision takes about a second
    from torchvision.io import ImageReadMode, decode_jpeg

    chunk = blobs[start : start + size]
    if all(blob and blob[:2] == b"\xff\xd8" and _header_ok(blob) for blob in chunk):
        try:
            datas = [torch.frombuffer(bytearray(blob or b""), dtype=torch.uint8) for blob in chunk]
            return decode_jpeg(datas, mode=ImageReadMode.RGB)  # type: ignore[no-any-return]
        except RuntimeError:
            pass  # find the bad row below
    images = []
    for i, blob in enumerate(chunk, start):
        try:
            images.append(decode_blob(blob or b"", where(i)))
        except DataError:
            if skipped is None:
                raise
            skipped.append(i)
    return images


def _header_ok(blob: bytes) -> bool:
    """Whether :func:`check_header` passes (a failing row is then decoded alone, to name it)."""
    try:
        check_header(blob, "")
    except DataError:
        return False
    return True


def decode_file(path: Path, image_size: int | None) -> Tensor:
    """Read and decode one image file to uint8 (3, S, S) with S = ``image_size`` (or its own size)."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: unreadable: {exc.strerror or exc}") from None
    image = decode_blob(blob, str(path))
    return resize_uint8(image[None], image_size)[0] if image_size is not None else image


def decoded_chunks(files: Sequence[Path], image_size: int | None, on_corrupt: OnCorrupt = "error"
                   ) -> Iterator[list[Tensor | None]]:
    """Decode image files :data:`CHUNK` at a time with a thread pool (the native decoders release the GIL).

    Yields, in row order, one list per chunk: uint8 (3, S, S) per file, None for a file skipped as
    corrupt (``on_corrupt="skip"``). Memory holds one chunk; a bad file stops the work at its chunk.

    Raises:
        DataError: a file is unreadable (with ``on_corrupt="error"``).
    """

    def one(i: int) -> Tensor | None:
        try:
            return decode_file(files[i], image_size)
        except DataError:
            if on_corrupt == "skip":
                return None
            raise

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        for start in range(0, len(files), CHUNK):
            yield list(pool.map(one, range(start, min(start + CHUNK, len(files)))))


def decode_files(files: Sequence[Path], image_size: int | None, on_corrupt: OnCorrupt = "error") -> dict[str, Tensor]:
    """Decode image files (:func:`decoded_chunks`) into one tensor.

    Args:
        files: image files in row order.
        image_size: square side to resize every image to; None requires all images to share a size.
        on_corrupt: "error" raises on the first bad file; "skip" leaves bad files out.

    Returns:
        ``images`` uint8 (K, 3, S, S), ``kept`` int64 (K,) positions into ``files`` of the decoded rows,
        ``skipped`` int64 (N - K,) positions of the files left out.

    Raises:
        DataError: a file is unreadable (with ``on_corrupt="error"``), or sizes differ without ``image_size``.
    """
    if image_size is not None and files:
        check_decoded_fits(len(files), 3, image_size, image_size, f"decoding {files[0].parent}")
    out = [img for chunk in decoded_chunks(files, image_size, on_corrupt) for img in chunk]
    kept = [i for i, img in enumerate(out) if img is not None]
    images = [img for img in out if img is not None]
    for i, img in zip(kept, images):
        if img.shape != images[0].shape:
            raise DataError(f"{files[i]}: image is {tuple(img.shape[1:])} but {files[kept[0]]} is "
                            f"{tuple(images[0].shape[1:])}; set params.image_size to resize every image")
    side = image_size or 0
    stacked = torch.stack(images) if images else torch.empty(0, 3, side, side, dtype=torch.uint8)
    return {"images": stacked, "kept": torch.tensor(kept, dtype=torch.int64),
            "skipped": torch.tensor([i for i, img in enumerate(out) if img is None], dtype=torch.int64)}


def stream_files(files: Sequence[Path], image_size: int, on_corrupt: OnCorrupt,
                 write: Callable[[Tensor], None]) -> dict[str, Any]:
    """Decode image files chunk by chunk, handing each chunk's images, uint8 (K, 3, S, S), to ``write``.

    Returns:
        ``{"files": N, "skipped": [positions of the files left out]}``.
    """
    skipped: list[int] = []
    for start, chunk in zip(range(0, len(files), CHUNK), decoded_chunks(files, image_size, on_corrupt)):
        skipped += [start + i for i, img in enumerate(chunk) if img is None]
        images = [img for img in chunk if img is not None]
        if images:
            write(torch.stack(images))
    return {"files": len(files), "skipped": skipped}


def report_skipped(what: str, skipped: Sequence[str], total: int) -> None:
    """Log how many images of ``what`` were skipped as corrupt, naming the first few."""
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        log.warning("%s: skipped %d of %d images as unreadable (on_corrupt = \"skip\"): %s",
                    what, len(skipped), total, shown)


def load_files_cached(
    files: Sequence[Path], image_size: int | None, on_corrupt: OnCorrupt, cache_dir: Path | None, tag: str,
    fingerprint: str | None = None, *, stream: bool = False,
) -> tuple[Tensor, Tensor]:
    """Decode ``files`` once and cache the result in ``cache_dir`` (None disables caching).

    Args:
        files: image files in row order.
        image_size: square side of the decoded images; None keeps their (common) size.
        on_corrupt: "error" or "skip" (skipped files are reported on every load).
        cache_dir: folder of decoded-tensor caches.
        tag: readable prefix of the cache file and of messages, e.g. ``"eurosat-all-64px"``.
        fingerprint: :func:`~ssl_bench.harness.data.file_fingerprint` of ``files`` when the caller has it already.
        stream: decode chunk by chunk into the raw file ``<cache_dir>/<tag>-<digest>.u8`` (sidecar
            ``.json``) and return it memory-mapped (:func:`~ssl_bench.harness.data.cached_mapped`), never holding
            every image in memory; needs ``image_size`` and ``cache_dir``.

    Returns:
        images uint8 (K, 3, S, S) (memory-mapped with ``stream``) and ``kept`` int64 (K,): positions into
        ``files`` of the decoded rows.
    """
    if not files:
        raise DataError(f"{tag}: no image files to decode")
    if stream and (image_size is None or cache_dir is None):
        raise DataError(f"{tag}: params.stream = true needs params.image_size (one size for every image) "
                        "and a cache folder to hold the decoded file")
    if cache_dir is None:
        data = decode_files(files, image_size, on_corrupt)
    else:
        spec = f"{fingerprint or file_fingerprint(files)}:{image_size}:{on_corrupt}:{max_pixels()}:v{CACHE_VERSION}"
        stem = Path(cache_dir) / f"{tag}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"
        if stream and image_size is not None:
            size = image_size
            images, meta = cached_mapped(Path(f"{stem}.u8"), (3, size, size),
                                         lambda write: stream_files(files, size, on_corrupt, write))
            skipped = torch.tensor(meta["skipped"], dtype=torch.int64)
            keep = torch.ones(meta["files"], dtype=torch.bool)
            keep[skipped] = False
            data = {"images": images, "kept": keep.nonzero().flatten(), "skipped": skipped}
        else:
            data = cached(Path(f"{stem}.pt"), lambda: decode_files(files, image_size, on_corrupt))
    report_skipped(tag, [str(files[i]) for i in data["skipped"].tolist()], len(files))
    return data["images"], data["kept"]
