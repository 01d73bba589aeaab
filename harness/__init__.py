"""ssl-bench: a plugin-based benchmark harness for self-supervised learning in computer vision.

The public API. What plugin authors import, all from this one module::

    from ssl_bench.harness import (hookimpl, Register, Method, MethodParams, Batch, LossTerms, Backbone,
                                   Dataset, DataContext, ImageSet, Augmentation, Evaluator, EvalTask,
                                   Params, gather, BenchError, DataError)

plus the helpers a component needs from the core: the views' normalisation (``normalize``,
``to_float``, ``IMAGENET_MEAN``/``IMAGENET_STD``), a dataset's decode cache, memory check and splits
(``cached``, ``cached_mapped``, ``check_decoded_fits``, ``file_fingerprint``, ``resize_uint8``,
``stratified_split``, ``balanced_subset``),
the process group (``rank``, ``world_size``), ``atomic_write`` and the learning-rate schedules
(``ScheduleSpec``, ``lr_factor``) an evaluator that trains can reuse.

The toolkit for writing components (augmentation ops, heads, momentum encoders, losses, metrics) is
:mod:`ssl_bench.harness.kit`. Everything else under ``ssl_bench.harness`` is internal.

Names load on first use (PEP 562), so ``import ssl_bench.harness`` and ``from ssl_bench.harness
import hookimpl`` do not import torch: the pytest plugin and ``bench --help`` stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

hookimpl = pluggy.HookimplMarker("bench")
"""Marks a plugin's hook implementations: ``@hookimpl def bench_register_methods(register): ...``."""

_EXPORTS = {
    "Augmentation": "components",
    "Backbone": "components",
    "Batch": "components",
    "DataContext": "components",
    "Dataset": "components",
    "EvalTask": "components",
    "Evaluator": "components",
    "LossTerms": "components",
    "Method": "components",
    "MethodParams": "components",
    "Params": "components",
    "ImageSet": "data",
    "BoxTargets": "data",
    "IMAGENET_MEAN": "data",
    "IMAGENET_STD": "data",
    "normalize": "data",
    "to_float": "data",
    "resize_uint8": "data",
    "check_decoded_fits": "data",
    "stratified_split": "data",
    "balanced_subset": "data",
    "cached": "data",
    "cached_mapped": "data",
    "file_fingerprint": "data",
    "gather": "scale.distributed",
    "rank": "scale.distributed",
    "world_size": "scale.distributed",
    "atomic_write": "record.atomic",
    "RunFolder": "record.layout",
    "read_rows": "record.results",
    "ScheduleSpec": "pipeline.specs",
    "lr_factor": "pipeline.optim",
    "BenchError": "errors",
    "DataError": "errors",
    "SpecError": "errors",
    "UnknownComponentError": "errors",
    "Register": "hookspecs",
}

if TYPE_CHECKING:
    from ssl_bench.harness.components import (
        Augmentation,
        Backbone,
        Batch,
        DataContext,
        Dataset,
        EvalTask,
        Evaluator,
        LossTerms,
        Method,
        MethodParams,
        Params,
    )
    from ssl_bench.harness.data import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        BoxTargets,
        ImageSet,
        balanced_subset,
        cached,
        cached_mapped,
        check_decoded_fits,
        file_fingerprint,
        normalize,
        resize_uint8,
        stratified_split,
        to_float,
    )
    from ssl_bench.harness.errors import BenchError, DataError, SpecError, UnknownComponentError
    from ssl_bench.harness.hookspecs import Register
    from ssl_bench.harness.pipeline.optim import lr_factor
    from ssl_bench.harness.pipeline.specs import ScheduleSpec
    from ssl_bench.harness.record.atomic import atomic_write
    from ssl_bench.harness.record.layout import RunFolder
    from ssl_bench.harness.record.results import read_rows
    from ssl_bench.harness.scale.distributed import gather, rank, world_size


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ssl_bench.harness' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"ssl_bench.harness.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "Augmentation",
    "Backbone",
    "Batch",
    "BenchError",
    "BoxTargets",
    "DataContext",
    "DataError",
    "Dataset",
    "EvalTask",
    "Evaluator",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageSet",
    "LossTerms",
    "Method",
    "MethodParams",
    "Params",
    "Register",
    "RunFolder",
    "ScheduleSpec",
    "SpecError",
    "UnknownComponentError",
    "atomic_write",
    "balanced_subset",
    "cached",
    "cached_mapped",
    "check_decoded_fits",
    "file_fingerprint",
    "gather",
    "hookimpl",
    "lr_factor",
    "normalize",
    "rank",
    "read_rows",
    "resize_uint8",
    "stratified_split",
    "to_float",
    "world_size",
]
