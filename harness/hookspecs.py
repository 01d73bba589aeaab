"""Every hook of ssl-bench: the plugin author's manual.

A plugin is a module (or object) with functions decorated by ``ssl_bench.harness.hookimpl`` whose
names and argument names match the specifications below (a hook may take fewer arguments than its
specification, never others). Registration hooks receive a ``register`` callback and call it once per
component class; event hooks are notifications, past tense, and return nothing.

A third-party plugin is the module an entry point of the group ``bench.plugins`` names; the plugin's
name is the entry point's name (``[project.entry-points."bench.plugins"] mine = "bench_mine"`` makes
the plugin ``mine``, blocked with ``bench -p no:mine``). A plugin that fails to import, implements a
hook not listed here (``bench_register_method``), raises in a registration hook, registers something
that is not a component or a name another plugin registered is skipped whole, with one warning line
naming it, its distribution and the file and line; a benchmark that needs one of its components
fails with exit code 2 naming it. The contracts of the five component kinds are in
:mod:`ssl_bench.harness.components`, the README's "Writing a plugin" shows one example of each, and
:mod:`ssl_bench.harness.testing` checks them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("bench")

Register = Callable[[type], None]


@hookspec
def bench_register_methods(register: Register) -> None:
    """Register pretraining methods.

    :param register: call ``register(cls)`` with each :class:`harness.Method` subclass.

    Called once when the registry is built, in every registration hook of every plugin (built-ins
    first). Names (``cls.name``) must be unique across all plugins: a name already taken skips the
    plugin (``bench`` commands) or raises ``DuplicateComponentError`` naming both (``collect``).
    """


@hookspec
def bench_register_datasets(register: Register) -> None:
    """Register datasets.

    :param register: call ``register(cls)`` with each :class:`harness.Dataset` subclass
        (``load(split, ctx) -> ImageSet`` of uint8 RGB images, int64 labels, a key per split).
    """


@hookspec
def bench_register_augmentations(register: Register) -> None:
    """Register augmentation pipelines.

    :param register: call ``register(cls)`` with each :class:`harness.Augmentation` subclass
        (batched: ``(images, *, generator) -> images``, float in [0, 1], random parameters per sample).
    """


@hookspec
def bench_register_backbones(register: Register) -> None:
    """Register backbones.

    :param register: call ``register(cls)`` with each :class:`harness.Backbone` subclass
        (an ``nn.Module``, normalised images (B, 3, H, W) -> features (B, feature_dim)).
    """


@hookspec
def bench_register_evaluators(register: Register) -> None:
    """Register evaluation protocols.

    :param register: call ``register(cls)`` with each :class:`harness.Evaluator` subclass
        (``evaluate(task, hparams) -> {metric: percent}`` with ``top1``; ``search_space`` grids).
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
def bench_step_logged(job: Any, step: int, metrics: dict[str, float], artifacts: Path) -> None:
    """Called every few optimizer steps of a pretraining, on rank 0: the feed of a tracker plugin.

    :param job: the :class:`~ssl_bench.harness.pipeline.plan.PretrainJob` being trained (its ``label``,
        ``seed``, ``key`` and ``record()``, the resolved spec).
    :param step: optimizer steps done, from 1, counting those before a resume.
    :param metrics: floats, read from the device once per call: ``loss`` (this step's, as rank 0 computed
        it), ``loss/<name>`` for each named term the method's loss returned (a
        :class:`harness.LossTerms`), ``lr`` (the learning rate of the optimizer's first parameter group
        at this step), ``images_per_s`` (pretraining images per second since the previous call) and
        ``epoch`` (epochs done, fractional: 1.5 halfway through the second).
    :param artifacts: the folder this training writes in (``<out>/artifacts/<key>/``): where a tracker
        puts its files (the built-in ones: ``metrics.jsonl``, ``tensorboard/``).

    Called every ``BENCH_LOG_EVERY`` steps (default 10) and at the last step of the session, after the
    optimizer step. A resumed job continues its step count, so a tracker that appends sees the steps
    since the last checkpoint twice. Return nothing; keep it cheap (it runs inside the training loop).
    A tracker closes what it opened in ``bench_job_finished`` (or ``bench_run_finished``).
    """


@hookspec
def bench_run_finished(run: Any, failed: int) -> None:
    """Called once after the last job of ``bench run``.

    :param run: the :class:`ssl_bench.harness.pipeline.runner.Run`.
    :param failed: how many jobs failed.
    """
