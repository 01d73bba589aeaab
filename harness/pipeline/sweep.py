"""Hyper-parameter sweeps of an evaluator with Optuna, chosen on a validation split.

The validation split is carved (stratified, seeded) from the training split. Every grid cell is
fitted on the rest of the training split and scored on the validation split; the best cell is refit
on the whole training split and scored once on the test split. The test split never chooses anything.

Every grid cell is an Optuna trial enqueued in grid order. In a shared storage (``bench worker``)
the study is named by the evaluation's job key and outlives the process: a rerun of the job (a
killed worker's job taken over by another) keeps the finished cells, fails the trials the dead
process left running, and runs only the cells that have no finished trial.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import optuna

from ssl_bench.harness.components import EvalTask, Evaluator
from ssl_bench.harness.data import ImageSet, stratified_split
from ssl_bench.harness.errors import BenchError

optuna.logging.set_verbosity(optuna.logging.WARNING)

TaskFactory = Callable[[ImageSet, ImageSet], EvalTask]


@dataclass(frozen=True)
class SweepOutcome:
    """The chosen hyper-parameters, how many trials chose them, and the test metrics."""

    hparams: dict[str, float]
    trials: int
    val_score: float | None
    metrics: dict[str, float]


def grid_size(grid: Mapping[str, tuple[float, ...]]) -> int:
    return math.prod(len(v) for v in grid.values())


def sweep_and_test(
    evaluator: Evaluator,
    make_task: TaskFactory,
    train: ImageSet,
    test: ImageSet,
    grid: Mapping[str, tuple[float, ...]],
    *,
    metric: str,
    val_fraction: float,
    seed: int,
    storage: optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
) -> SweepOutcome:
    """Choose ``grid``'s best cell by ``metric`` on a validation split, then score the test split.

    Args:
        evaluator: the protocol.
        make_task: builds an EvalTask from (fit, target) ImageSets.
        train: the whole training split.
        test: the test split.
        grid: hyper-parameter name -> candidate values; an empty or one-cell grid needs no trials.
        metric: key of the evaluator's metrics that the sweep maximises.
        val_fraction: share of every class held out for validation.
        seed: seeds the carve-out.
        storage: where the study lives (None: in memory); the caller must be its only user.
        study_name: the study's name in ``storage`` (the evaluation's job key).
    """
    chosen = {k: v[0] for k, v in grid.items()}
    trials, val_score = 0, None
    if grid_size(grid) > 1:
        rest, val = stratified_split(train.labels, val_fraction, seed)
        task = make_task(train.subset(rest), train.subset(val))

        def objective(trial: optuna.Trial) -> float:
            hp = {k: trial.suggest_categorical(k, list(v)) for k, v in grid.items()}
            scores = evaluator.evaluate(task, hp)
            if metric not in scores:
                raise BenchError(f"evaluator '{evaluator.name}' reports {sorted(scores)}, "
                                 f"not the sweep metric '{metric}'")
            return scores[metric]

        study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True,
                                    sampler=optuna.samplers.RandomSampler(seed=seed))  # never asked: cells are enqueued
        todo = _enqueue_unfinished(study, storage, grid)
        study.optimize(objective, n_trials=len(todo))
        best = _first_best(study, grid)
        chosen, val_score = dict(best.params), float(best.value)  # type: ignore[arg-type]
        trials = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    metrics = evaluator.evaluate(make_task(train, test), chosen)
    return SweepOutcome(chosen, trials, val_score, metrics)


def _enqueue_unfinished(study: optuna.Study, storage: optuna.storages.BaseStorage | None,
                        grid: Mapping[str, tuple[float, ...]]) -> list[dict[str, float]]:
    """Enqueue, in grid order, every cell without a finished trial; fail trials left by a dead process."""
    states = optuna.trial.TrialState
    if storage is not None:
        for t in study.get_trials(deepcopy=False, states=(states.RUNNING, states.WAITING)):
            try:
                storage.set_trial_state_values(t._trial_id, states.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # finished meanwhile
    done = {tuple(t.params[k] for k in grid) for t in study.get_trials(deepcopy=False, states=(states.COMPLETE,))}
    todo = [dict(zip(grid, cell)) for cell in itertools.product(*grid.values()) if cell not in done]
    for cell in todo:
        study.enqueue_trial(cell)
    return todo


def _first_best(study: optuna.Study, grid: Mapping[str, tuple[float, ...]]) -> optuna.trial.FrozenTrial:
    """The best trial, ties broken by grid order (so reruns and other seeds choose alike)."""
    done = [t for t in study.trials if t.value is not None]
    top = max(float(t.value) for t in done)  # type: ignore[arg-type]
    order = {cell: i for i, cell in enumerate(itertools.product(*grid.values()))}
    ties = [t for t in done if t.value == top]
    return min(ties, key=lambda t: order[tuple(t.params[k] for k in grid)])
