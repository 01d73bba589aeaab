"""A split too large to hold is refused before it is decoded or generated, not by the kernel's OOM killer.

The pretraining memory estimate (tests in test_data_and_files.py) runs once a split is loaded; these
cases would exhaust memory before it: ``n_train = 1e8`` shapes, ``image_size = 4096`` over a folder of
images, a resize of a decoded split to 4096 px. Each fails at once with the bytes it needs and has.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import torch
from PIL import Image

from ssl_bench.harness.components import DataContext
from ssl_bench.harness.data import check_decoded_fits, resize_uint8
from ssl_bench.harness.errors import DataError
from ssl_bench.harness.scale import machine
from ssl_bench.plugins.datasets.decode import decode_files
from ssl_bench.plugins.datasets.shapes import Shapes


@pytest.fixture
def small_machine(monkeypatch: pytest.MonkeyPatch) -> int:
    """This machine, with 1 MB available."""
    monkeypatch.setattr(machine, "available_host_memory", lambda: 1_000_000)
    return 1_000_000


def test_the_check_names_where_and_both_sizes(small_machine: int) -> None:
    check_decoded_fits(10, 3, 32, 32, "fits")  # 30 kB
    with pytest.raises(DataError, match=r"^here: 500 images of 3 x 4096 x 4096 pixels need 25\.2 GB as uint8; "
                                        r"this machine has 0\.0 GB available"):
        check_decoded_fits(500, 3, 4096, 4096, "here")


def test_the_check_can_be_turned_off(small_machine: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_MEMORY_CHECK", "0")
    check_decoded_fits(500, 3, 4096, 4096, "here")


def test_a_hundred_million_shapes_are_refused_before_any_allocation(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ds = Shapes(Shapes.Params(n_train=100_000_000, n_test=10))  # 1.2 TB at 64 px: more than any machine here

    def drawn(*args: object, **kwargs: object) -> None:
        raise AssertionError("the shapes' parameters were drawn before the size was refused")

    monkeypatch.setattr(torch, "randperm", drawn)  # the first draw (tracemalloc does not see torch's memory)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"^shapes: generating 100000000 images: .* need \d+\.\d GB"):
            ds.load("train", DataContext(root=tmp_path, cache_dir=tmp_path / "cache"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000_000  # refused up front, not after drawing 1e8 shapes' parameters


def test_a_folder_decoded_at_4096_px_is_refused_before_decoding(tmp_path: Path, small_machine: int) -> None:
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i, 0, 0)).save(files[-1])
    assert decode_files(files, 8)["images"].shape == (3, 3, 8, 8)
    with pytest.raises(DataError, match=rf"^decoding {tmp_path}: 3 images of 3 x 4096 x 4096 pixels need 0\.2 GB"):
        decode_files(files, 4096)


def test_a_resize_that_cannot_fit_is_refused(small_machine: int) -> None:
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    assert resize_uint8(images, 16).shape == (4, 3, 16, 16)
    with pytest.raises(DataError, match=r"^resizing to image_size 1024: 4 images"):
        resize_uint8(images, 1024)
