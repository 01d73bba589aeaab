"""A real full disk (a 256 KiB tmpfs), not a simulated one: torch.save's failure is recognised as disk full.

Given a path, torch's C++ writer reports ENOSPC as ``RuntimeError: [enforce fail at inline_container.cc]
... unexpected pos``, which no one can tell from a bug; the harness writes through a file object, whose
``OSError`` carries errno ENOSPC. Needs root (to mount); skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ssl_bench.harness.errors import DiskFullError
from ssl_bench.harness.record.atomic import atomic_torch_save


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tiny tmpfs needs root and mount(8)")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_torch_save_on_a_full_disk_is_disk_full_naming_the_file(full_disk: Path) -> None:
    target = full_disk / "encoder.pt"
    with pytest.raises(OSError) as caught:
        atomic_torch_save({"w": torch.zeros(1_000_000)}, target)  # 4 MB into 256 KiB
    full = DiskFullError.of(caught.value)
    assert full is not None, f"not recognised as disk full: {caught.value!r}"
    assert str(target) in str(full)
    assert list(full_disk.iterdir()) == []  # no temporary file left behind


def test_a_save_that_fits_still_writes_the_file(full_disk: Path) -> None:
    target = full_disk / "small.pt"
    atomic_torch_save({"w": torch.arange(10)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(10))
