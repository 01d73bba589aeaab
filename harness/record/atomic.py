"""Atomic file writes: write under a temporary name in the same folder, then rename.

A reader (or a rerun after SIGKILL) sees either the old file or the complete new one, never half.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path`` (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:  # the bytes reach the disk before the name does
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None:  # a write through a file object names no file: name the one it stood for
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` made atomic.

    torch writes through a Python file object here, not a path: given a path, its C++ writer reports a
    full disk as ``RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos``, while the
    file object raises the real ``OSError`` (errno ``ENOSPC``), which the run recognises as disk full (raised
    here even where torch's zip writer then fails closing and puts its own ``RuntimeError`` on top).
    """
    def write(tmp: Path) -> None:
        try:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
        except RuntimeError as exc:  # the zip writer's close fails after the file's write did: raise the cause
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OSError):
                raise cause from exc
            raise

    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)
