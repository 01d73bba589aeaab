from __future__ import annotations

import torch

from ssl_bench.harness.components import EvalTask, Evaluator
from ssl_bench.harness.data import ImageSet
from ssl_bench.harness.pipeline.sweep import sweep_and_test


class Recorder(Evaluator):
    """Scores hparams by a fixed table; records every call."""

    name = "recorder"

    def __init__(self, table):
        super().__init__(self.Params())
        self.table, self.calls = table, []

    def evaluate(self, task, hparams):
        self.calls.append((task.target.key, len(task.fit), len(task.target), dict(hparams)))
        return {"top1": self.table[(hparams["lr"], hparams["wd"])]}


def sets():
    train = ImageSet(torch.zeros(100, 3, 4, 4, dtype=torch.uint8), torch.arange(100) % 5, tuple("abcde"), "train")
    test = ImageSet(torch.zeros(30, 3, 4, 4, dtype=torch.uint8), torch.arange(30) % 5, tuple("abcde"), "test")
    return train, test


def make_task(fit, target):
    return EvalTask(torch.nn.Identity(), fit, target, 5, lambda s: s.images, torch.device("cpu"), 0)


def test_grid_winner_chosen_on_validation_and_test_scored_once():
    table = {(0.1, 0.0): 50.0, (0.1, 1e-4): 70.0, (0.01, 0.0): 60.0, (0.01, 1e-4): 65.0}
    ev = Recorder(table)
    train, test = sets()
    out = sweep_and_test(ev, make_task, train, test, {"lr": (0.1, 0.01), "wd": (0.0, 1e-4)},
                         metric="top1", val_fraction=0.2, seed=0)
    assert out.hparams == {"lr": 0.1, "wd": 1e-4} and out.trials == 4 and out.val_score == 70.0
    test_calls = [c for c in ev.calls if c[0] == "test"]
    assert len(test_calls) == 1 and test_calls[0][3] == {"lr": 0.1, "wd": 1e-4}
    assert test_calls[0][1] == 100  # refit on the whole training split
    for key, n_fit, n_target, _ in ev.calls[:-1]:
        assert key == "train" and n_fit == 80 and n_target == 20  # trials never see the test split


def test_ties_break_by_grid_order():
    ev = Recorder({(0.1, 0.0): 1.0, (0.1, 1e-4): 1.0, (0.01, 0.0): 1.0, (0.01, 1e-4): 1.0})
    train, test = sets()
    out = sweep_and_test(ev, make_task, train, test, {"lr": (0.1, 0.01), "wd": (0.0, 1e-4)},
                         metric="top1", val_fraction=0.2, seed=3)
    assert out.hparams == {"lr": 0.1, "wd": 0.0}


def test_single_cell_needs_no_trials():
    ev = Recorder({(0.1, 0.0): 42.0})
    train, test = sets()
    out = sweep_and_test(ev, make_task, train, test, {"lr": (0.1,), "wd": (0.0,)}, metric="top1",
                         val_fraction=0.2, seed=0)
    assert out.trials == 0 and out.metrics == {"top1": 42.0} and len(ev.calls) == 1
