"""What the datasets read from a user's own files share: the path under the data root, optional packages,
and the one class of unlabelled data.

A relative ``path`` is resolved against the data root (``--data-root``, ``BENCH_DATA_ROOT``) and an absent
one is a one-line :class:`~ssl_bench.harness.DataError` saying where it was expected (:func:`data_path`). A
source that needs an optional package (``datasets``, ``webdataset``) imports it through :func:`require`,
whose error names the extra to install. Data without labels (pretraining only) has every label 0 and the
single class :data:`UNLABELLED`; such a dataset says ``labelled`` is False, so a benchmark that evaluates on
it is refused when it is planned (``bench validate`` already), not when the job runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from ssl_bench.harness import DataContext, DataError

UNLABELLED: tuple[str, ...] = ("unlabelled",)
"""The class names of data without labels: one class, every label 0."""


def data_path(what: str, raw: str, ctx: DataContext, *, kind: str = "folder", param: str = "path") -> Path:
    """``raw`` resolved against the data root unless absolute (``~`` expanded), checked to exist.

    Args:
        what: the dataset's name, first in the message.
        raw: the path as the benchmark file gives it.
        ctx: the data root (``ctx.root``).
        kind: "folder" (must be a directory) or "file".
        param: the params key that gave ``raw``, named in the message.

    Raises:
        DataError: one line naming the path expected, the key and the data root, and the fixes.
    """
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else ctx.root / path
    if not (path.is_dir() if kind == "folder" else path.is_file()):
        raise DataError(f"{what}: {kind} {path} not found (params.{param} = '{raw}', data root {ctx.root}); "
                        "set --data-root or BENCH_DATA_ROOT, or give an absolute path")
    return path


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import the optional package ``module``, or a DataError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{what}: needs the '{module}' package, which is not installed: "
                        f"pip install \"ssl-bench[{extra}]\"") from None


def unlabelled(n: int) -> Tensor:
    """The labels of ``n`` unlabelled images: int64 zeros (N,), all of the class :data:`UNLABELLED`."""
    return torch.zeros(n, dtype=torch.int64)
