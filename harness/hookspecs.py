"""Every hook of ssl-bench: the plugin author's manual.

A plugin is a module (or object) with functions decorated by ``harness.hookimpl`` whose names and
argument names match the specifications below. Registration hooks receive a ``register`` callback
and call it once per component class; event hooks are notifications, past tense, and return nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("bench")

Register = Callable[[type], None]


@hookspec
def bench_register_methods(register: Register) -> None:
    """Register pretraining methods.

    :param register: call ``register(cls)`` with each :class:`harness.Method` subclass.

    Called once when the registry is built. Names must be unique across all plugins.
    """


@hookspec
def bench_register_datasets(register: Register) -> None:
    """Register datasets.

    :param register: call ``register(cls)`` with each :class:`harness.Dataset` subclass.
    """


@hookspec
def bench_register_augmentations(register: Register) -> None:
    """Register augmentation pipelines.

    :param register: call ``register(cls)`` with each :class:`harness.Augmentation` subclass.
    """


@hookspec
def bench_register_backbones(register: Register) -> None:
    """Register backbones.

    :param register: call ``register(cls)`` with each :class:`harness.Backbone` subclass.
    """


@hookspec
def bench_register_evaluators(register: Register) -> None:
    """Register evaluation protocols.

    :param register: call ``register(cls)`` with each :class:`harness.Evaluator` subclass.
    """


@hookspec
def bench_run_started(run: Any) -> None:
    """Called once before the first job of ``bench run``.

    :param run: the :class:`ssl_bench.harness.pipeline.runner.Run` (its ``spec``, ``jobs`` and ``out_dir``).
    """


@hookspec
def bench_job_finished(job: Any, result: Any) -> None:
    """Called after each job finishes or fails, and for jobs found finished in the results folder.

    :param job: the :class:`~ssl_bench.harness.pipeline.plan.PretrainJob` or
        :class:`~ssl_bench.harness.pipeline.plan.EvalJob`.
    :param result: a dict with at least ``status`` ("ok", "cached" or "failed"); evaluation jobs add
        ``rows`` (the result rows), pretraining jobs add ``stats``.
    """


@hookspec
def bench_run_finished(run: Any, failed: int) -> None:
    """Called once after the last job of ``bench run``.

    :param run: the :class:`ssl_bench.harness.pipeline.runner.Run`.
    :param failed: how many jobs failed.
    """
