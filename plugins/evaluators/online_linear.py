"""The online linear probe: the accuracy of the linear head trained beside pretraining (solo-learn's protocol)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field

from ssl_bench.harness import BenchError, EvalTask, Evaluator, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.harness.kit.metrics import classification_metrics


class OnlineLinear(Evaluator):
    """Online linear probe: a linear head trained during pretraining on detached features, scored at the end.

    - [0] da Costa et al., solo-learn: A Library of Self-supervised Methods for Visual Representation Learning,
      JMLR 2022 (the online classifier of its CIFAR and ImageNet-100 tables: SGD, lr 0.1, no weight decay)

    During pretraining, every step, ``nn.Linear(D, C)`` takes the backbone's features of the step's first view,
    detached (the encoder's training is unchanged), and one SGD step on the cross-entropy with the batch's labels
    (the harness trains it: ``ssl_bench.harness.pipeline.online_probe``, with this evaluator's ``lr``,
    ``momentum`` and ``weight_decay``). This evaluator scores that head, as it was at the end, on the final
    encoder's features of the un-augmented ``task.target`` images (cached, (N, D)); no standardisation, as in
    [0]. It fits nothing and sweeps nothing; ``task.fit`` is not read.

    How it differs from the offline ``linear`` probe: that one fits a fresh head on frozen features of
    un-augmented training images, many epochs, its lr and weight decay chosen on validation data; this one saw
    each augmented training image's features once per epoch, from an encoder that kept moving. Its numbers
    are a cheap signal of the same kind, not the same protocol: the leaderboard shows them in a column of
    their own and never ranks them beside the offline probe.

    The target must be the pretraining dataset (the head's classes are its classes), and an untrained encoder
    (random init) has no online head: it gets no row. Deviations from [0]: see the harness module (first view
    only; its own SGD at a constant lr by default rather than a parameter group of the method's optimizer,
    whose schedule ``schedule = "method"`` follows).
    """

    name = "online_linear"

    class Params(BaseParams):
        lr: Annotated[float, Field(gt=0)] = 0.1
        """SGD learning rate of the online head (solo-learn: 0.1), scaled each step as ``schedule`` says."""
        momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
        """SGD momentum of the online head (heavy ball)."""
        weight_decay: Annotated[float, Field(ge=0)] = 0.0
        """Weight decay of the online head (solo-learn: none)."""
        schedule: Literal["constant", "method"] = "constant"
        """``"constant"``: ``lr`` all run; ``"method"``: the head's lr follows the pretraining's schedule
        (warm-up, decay), as solo-learn's head in the method's optimizer."""

    params: Params
    search_space: ClassVar[Mapping[str, tuple[float, ...]]] = {}
    online_probe: ClassVar[bool] = True

    def evaluate(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """Score the online head on ``task.target``.

        Args:
            task: ``task.online_head`` (weight (C, D), bias (C,)) and the target's cached features (N, D).
            hparams: must be empty (nothing is swept).

        Returns:
            ``classification_metrics`` of the head's logits (N, C) on ``task.target`` (percent).

        Raises:
            BenchError: the task has no online head, or one that does not fit its classes or features.
        """
        if hparams:
            raise ValueError(f"{self.name}: sweeps nothing (its head is trained beside pretraining), "
                             f"got {dict(hparams)}")
        head = task.online_head
        if head is None:
            raise BenchError(f"{self.name}: this encoder's pretraining trained no online head (its log says why: "
                             "a method that never runs its backbone on whole images of the first view's size)")
        weight = head["weight"].to(task.device, torch.float32)  # (C, D)
        bias = head["bias"].to(task.device, torch.float32)  # (C,)
        if weight.shape[0] != task.num_classes:
            raise BenchError(f"{self.name}: the online head has {weight.shape[0]} classes, the target "
                             f"{task.num_classes}; score it on the pretraining dataset")
        target = task.features(task.target).to(task.device, torch.float32)  # (N, D)
        if target.shape[1] != weight.shape[1]:
            raise BenchError(f"{self.name}: the online head reads {weight.shape[1]} features, the encoder "
                             f"gives {target.shape[1]}")
        with torch.no_grad():
            logits = target @ weight.T + bias  # (N, C)
        return classification_metrics(logits.cpu(), task.target.labels.cpu(), task.num_classes)


@hookimpl
def bench_register_evaluators(register: Callable[[type], None]) -> None:
    register(OnlineLinear)
