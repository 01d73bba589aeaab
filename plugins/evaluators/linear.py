"""Linear evaluation: multinomial logistic regression on frozen, cached features."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from ssl_bench.harness import EvalTask, Evaluator, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.harness.kit.metrics import classification_metrics
from ssl_bench.plugins.evaluators._probe import check_hparams, fit_head
from ssl_bench.plugins.evaluators._probe import train_linear as train_linear  # re-export: it was defined here


class Linear(Evaluator):
    """Linear probe: multinomial logistic regression on frozen features, lr x weight decay swept.

    - [0] Zhang et al., Colorful Image Colorization, 2016, arXiv:1603.08511 (linear classifiers on
      frozen features as the evaluation of self-supervised representations)
    - [1] Kolesnikov et al., Revisiting Self-Supervised Visual Representation Learning, 2019,
      arXiv:1901.09005 (multinomial logistic regression with SGD, hyper-parameters chosen on a
      validation split carved from the training set)

    Features (cached, (N, D)) are standardised with the mean and std of ``task.fit`` features, then
    ``nn.Linear(D, C)`` is trained from zeros with SGD (momentum 0.9, no Nesterov), batch 512, cosine
    lr over 100 epochs, weight decay on the weights. Shuffling is drawn from ``task.seed``. The fit is
    :func:`~ssl_bench.plugins.evaluators._probe.fit_head`, shared with the evaluators that probe.

    Default grid, ``lr`` (0.1, 0.03, 0.01) x ``weight_decay`` (0.0, 1e-3, 1e-2): where a wider sweep
    on CIFAR-10 features of random-init and trained convnets found the best settings. A benchmark's
    ``sweep`` table replaces either grid.
    Deviations from [1]: no data augmentation (features are extracted once per checkpoint), no
    L-BFGS; a cosine schedule instead of step decay.
    """

    name = "linear"

    class Params(BaseParams):
        epochs: Annotated[int, Field(gt=0)] = 100
        """Passes over the fit features."""
        batch_size: Annotated[int, Field(gt=0)] = 512
        """Rows per SGD step; ``lr`` is per step on the batch-mean loss."""
        momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
        """SGD momentum (heavy ball, no Nesterov)."""
        lr: Annotated[float, Field(gt=0)] = 0.03
        """Peak learning rate when ``hparams`` has no ``lr``."""
        weight_decay: Annotated[float, Field(ge=0)] = 1e-3
        """Weight decay when ``hparams`` has no ``weight_decay``."""

    params: Params
    search_space: ClassVar[Mapping[str, tuple[float, ...]]] = {
        "lr": (0.1, 0.03, 0.01),
        "weight_decay": (0.0, 1e-3, 1e-2),
    }

    def evaluate(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """Train on ``task.fit`` features, report ``task.target`` accuracy.

        Args:
            task: features come from ``task.features`` (cached, (N, D)); compute on ``task.device``.
            hparams: ``lr`` and/or ``weight_decay``; missing ones fall back to ``Params``.

        Returns:
            ``classification_metrics`` of the logits on ``task.target`` (percent).
        """
        check_hparams(self.name, hparams, ("lr", "weight_decay"))
        fit = task.features(task.fit).to(task.device, torch.float32)
        target = task.features(task.target).to(task.device, torch.float32)
        head = fit_head(fit, task.fit.labels, num_classes=task.num_classes, hparams=hparams, params=self.params,
                        seed=task.seed)
        with torch.no_grad():
            logits = torch.cat([head(rows) for rows in target.split(4096)])
        return classification_metrics(logits.cpu(), task.target.labels.cpu(), task.num_classes)


@hookimpl
def bench_register_evaluators(register: Callable[[type], None]) -> None:
    register(Linear)
