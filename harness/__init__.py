"""ssl-bench: a plugin-based benchmark harness for self-supervised learning in computer vision.

What plugin authors import::

    from harness import hookimpl, Method, MethodParams, Batch, Backbone, Dataset, Augmentation,
                        Evaluator, EvalTask, ImageSet, Params, DataContext, gather
"""

from __future__ import annotations

import pluggy

from harness.components import (
    Augmentation,
    Backbone,
    Batch,
    DataContext,
    Dataset,
    EvalTask,
    Evaluator,
    Method,
    MethodParams,
    Params,
)
from harness.data import ImageSet
from harness.distributed import gather
from harness.errors import BenchError, DataError, SpecError, UnknownComponentError
from harness.hookspecs import Register

hookimpl = pluggy.HookimplMarker("bench")

__all__ = [
    "Augmentation",
    "Backbone",
    "Batch",
    "BenchError",
    "DataContext",
    "DataError",
    "Dataset",
    "EvalTask",
    "Evaluator",
    "ImageSet",
    "Method",
    "MethodParams",
    "Params",
    "Register",
    "SpecError",
    "UnknownComponentError",
    "gather",
    "hookimpl",
]
