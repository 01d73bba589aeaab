"""The linear probe: one fit for every evaluator that trains a linear head on frozen features.

:func:`train_linear` is the optimiser (mini-batch SGD on softmax cross-entropy) and :func:`fit_head`
the fit around it (standardise the features, take ``lr`` / ``weight_decay`` from the trial or the
``linear`` evaluator's ``Params``, seed the shuffling), returning a frozen :class:`LinearHead`. The
``linear`` and ``gallery`` evaluators score cached features with it.

``ProbeNet`` is ``head(standardise(encoder(normalize(x))))`` on float images ``x`` in [0, 1]: what the
``adversarial`` evaluator attacks end to end and the ``robustness`` evaluator feeds degraded images.
Their head is fitted on features that :func:`encode` extracts with that same encoder in float32.
They are not read from ``task.features``: the cache may be bfloat16 on CUDA (or, in a test,
planted), and a perturbed image must go through the very function the head was fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import EvalTask, ImageSet, normalize, to_float

if TYPE_CHECKING:
    from ssl_bench.plugins.evaluators.linear import Linear


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


class LinearHead(nn.Module):
    """``linear((features - mean) / std)``: features (B, D) -> logits (B, C); frozen."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = linear

    def forward(self, features: Tensor) -> Tensor:
        logits: Tensor = self.linear((features - self.mean) / self.std)
        return logits


class ProbeNet(nn.Module):
    """``head(encoder(normalize(x)))``: float images in [0, 1] (B, C, H, W) -> logits (B, C_out)."""

    def __init__(self, encoder: nn.Module, head: LinearHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, images: Tensor) -> Tensor:
        logits: Tensor = self.head(self.encoder(normalize(images)).float())
        return logits


def fit_head(features: Tensor, labels: Tensor, *, num_classes: int, hparams: Mapping[str, float],
             params: Linear.Params, seed: int) -> LinearHead:
    """The linear probe on ``features``: standardised with their own mean and std, fitted by
    :func:`train_linear` with ``hparams``' ``lr`` / ``weight_decay`` (else ``params``').

    Args:
        features: fit features, cast to float32. Shape: (N, D).
        labels: their classes, int64. Shape: (N,).
        num_classes: number of classes C.
        hparams: the trial's ``lr`` and/or ``weight_decay``.
        params: the ``linear`` evaluator's ``Params`` (or a subclass): epochs, batch size, momentum,
            and the ``lr`` / ``weight_decay`` used when ``hparams`` has none.
        seed: seeds the shuffling order.

    Returns:
        The frozen head, (N', D) features -> (N', C) logits, on ``features.device``.
    """
    features = features.float()
    mean, std = features.mean(dim=0), features.std(dim=0, correction=0).clamp_min(1e-6)  # (D,)
    linear = train_linear(
        (features - mean) / std, labels, num_classes=num_classes,
        lr=float(hparams.get("lr", params.lr)),
        weight_decay=float(hparams.get("weight_decay", params.weight_decay)),
        epochs=params.epochs, batch_size=params.batch_size, momentum=params.momentum,
        generator=torch.Generator().manual_seed(seed),
    )
    return LinearHead(mean, std, linear).requires_grad_(False)


@torch.no_grad()
def encode(encoder: nn.Module, images: ImageSet, device: torch.device, *, batch_size: int = 256,
           transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Float32 features of a set's uint8 images (N, C, H, W), read chunk by chunk, ``transform`` (float
    [0, 1] -> float [0, 1], batch by batch) applied before normalising. Returns (N, D) on ``device``."""
    encoder.eval()
    out = []
    for chunk in images.chunks(batch_size, device):
        x = to_float(chunk)
        out.append(encoder(normalize(transform(x) if transform else x)).float())
    return torch.cat(out)


class FeatureMemo:
    """Named feature tensors of one (encoder, fit, target, seed, device) task, computed once each.

    A sweep calls ``evaluate`` once per trial with the same task: the fit features (and degraded
    target features) do not depend on the trial's hyper-parameters, so they are extracted once per
    sweep. Another task clears the memo. The memo holds its task's objects, so comparing them by
    identity is safe.
    """

    def __init__(self) -> None:
        self._scope: tuple[object, ...] = ()
        self._values: dict[str, Tensor] = {}

    def __call__(self, task: EvalTask, name: str, compute: Callable[[], Tensor]) -> Tensor:
        scope = (task.encoder, task.fit, task.target, task.seed, task.device)
        if len(self._scope) != len(scope) or any(a is not b and a != b for a, b in zip(self._scope, scope)):
            self._scope, self._values = scope, {}
        if name not in self._values:
            self._values[name] = compute()
        return self._values[name]


def check_hparams(evaluator: str, hparams: Mapping[str, float], allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming any hyper-parameter outside ``allowed``."""
    unknown = set(hparams) - set(allowed)
    if unknown:
        raise ValueError(f"{evaluator}: unknown hyper-parameters {sorted(unknown)}; expected {', '.join(allowed)}")
