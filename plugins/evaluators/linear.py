"""Linear evaluation: multinomial logistic regression on frozen, cached features."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import EvalTask, Evaluator, hookimpl
from ssl_bench.harness import Params as BaseParams
from ssl_bench.harness.kit.metrics import classification_metrics


def train_linear(
    features: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    lr: float,
    weight_decay: float,
    epochs: int,
    batch_size: int,
    momentum: float,
    generator: torch.Generator,
) -> nn.Linear:
    """Fit a linear classifier with mini-batch SGD (momentum, cosine lr) on softmax cross-entropy.

    Equivalent to ``torch.optim.SGD(momentum=momentum, nesterov=False)`` with autograd on
    ``nn.Linear`` (a test checks this), but the gradient of the batch-mean cross-entropy is written
    out, ``(softmax(x W^T + b) - onehot(y))^T x / B``: no autograd graph, a handful of fused ops per
    step, and it works under ``torch.inference_mode``. The weights start at zero (the problem is
    convex); only the shuffling order is random. ``lr`` is the per-step learning rate on the
    batch-mean loss and decays to 0 as ``lr * (1 + cos(pi * step / steps)) / 2``. Weight decay
    applies to the weights, not the bias.

    Args:
        features: inputs, already standardised. Shape: (N, D).
        labels: classes, int64. Shape: (N,).
        num_classes: number of classes C.
        lr: peak learning rate.
        weight_decay: L2 coefficient of the weights.
        epochs: passes over the data.
        batch_size: rows per step (the last batch of an epoch may be smaller).
        momentum: SGD momentum (heavy ball, dampening 0).
        generator: CPU generator that draws the shuffling order.

    Returns:
        The trained ``nn.Linear(D, C)`` on ``features.device``, without gradients.
    """
    n, dim = features.shape
    weight = features.new_zeros(num_classes, dim)
    bias = features.new_zeros(num_classes, 1)
    buf_w, buf_b = torch.zeros_like(weight), torch.zeros_like(bias)
    # Class-major (C, B) logits: softmax over a short dim 0 is ~15x faster on CPU than over dim 1.
    onehot = F.one_hot(labels.to(features.device).long(), num_classes).to(features.dtype).T.contiguous()  # (C, N)
    total = epochs * math.ceil(n / batch_size)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(features.device)
        for idx in order.split(batch_size):
            x = features.index_select(0, idx)  # (B, D); index_select is ~3x faster than features[idx]
            grad = torch.addmm(bias, weight, x.T).softmax(dim=0).sub_(onehot.index_select(1, idx))
            grad.div_(len(idx))  # (C, B): d(mean cross-entropy) / d(logits)
            buf_w.mul_(momentum).add_(torch.addmm(weight, grad, x, beta=weight_decay))  # grad @ x + wd * W
            buf_b.mul_(momentum).add_(grad.sum(dim=1, keepdim=True))
            step_lr = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            weight.sub_(buf_w, alpha=step_lr)
            bias.sub_(buf_b, alpha=step_lr)
            step += 1
    model = nn.Linear(dim, num_classes, device=features.device, dtype=features.dtype).requires_grad_(False)
    model.weight.copy_(weight)
    model.bias.copy_(bias.squeeze(1))
    return model


class Linear(Evaluator):
    """Linear probe: multinomial logistic regression on frozen features, lr x weight decay swept.

    - [0] Zhang et al., Colorful Image Colorization, 2016, arXiv:1603.08511 (linear classifiers on
      frozen features as the evaluation of self-supervised representations)
    - [1] Kolesnikov et al., Revisiting Self-Supervised Visual Representation Learning, 2019,
      arXiv:1901.09005 (multinomial logistic regression with SGD, hyper-parameters chosen on a
      validation split carved from the training set)

    Features (cached, (N, D)) are standardised with the mean and std of ``task.fit`` features, then
    ``nn.Linear(D, C)`` is trained from zeros with SGD (momentum 0.9, no Nesterov), batch 512, cosine
    lr over 100 epochs, weight decay on the weights. Shuffling is drawn from ``task.seed``.

    Default grid, ``lr`` (0.1, 0.03, 0.01) x ``weight_decay`` (0.0, 1e-3, 1e-2), from a wider sweep
    (lr 10 .. 1e-3, wd 0 .. 3e-2) on 256-d CIFAR-10 features of a random-init and of a trained
    convnet, fitting on 1,000 or 10,000 rows: the best lr was 0.01-0.1 in every case (lr >= 0.3 lost
    1-7 points unless weight decay was >= 1e-2); wd 1e-3 or 1e-2 won by 0.1-2.5 points, 1e-4 never
    differed from 0. A benchmark's ``sweep`` table replaces either grid.
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
        unknown = set(hparams) - {"lr", "weight_decay"}
        if unknown:
            raise ValueError(f"linear: unknown hyper-parameters {sorted(unknown)}; expected lr, weight_decay")
        fit = task.features(task.fit).to(task.device, torch.float32)
        target = task.features(task.target).to(task.device, torch.float32)
        mean, std = fit.mean(dim=0), fit.std(dim=0, correction=0).clamp_min(1e-6)  # (D,)
        model = train_linear(
            (fit - mean) / std, task.fit.labels,
            num_classes=task.num_classes,
            lr=float(hparams.get("lr", self.params.lr)),
            weight_decay=float(hparams.get("weight_decay", self.params.weight_decay)),
            epochs=self.params.epochs, batch_size=self.params.batch_size, momentum=self.params.momentum,
            generator=torch.Generator().manual_seed(task.seed),
        )
        with torch.no_grad():
            logits = torch.cat([model((rows - mean) / std) for rows in target.split(4096)])
        return classification_metrics(logits.cpu(), task.target.labels.cpu(), task.num_classes)


@hookimpl
def bench_register_evaluators(register: Callable[[type], None]) -> None:
    register(Linear)
