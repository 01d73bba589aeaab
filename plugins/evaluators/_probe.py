"""A linear probe as one function of pixels, for evaluators that perturb the images they score.

``ProbeNet`` is ``head(standardise(encoder(normalize(x))))`` on float images ``x`` in [0, 1]: what the
``adversarial`` evaluator attacks end to end and the ``robustness`` evaluator feeds degraded images.
The head is :func:`ssl_bench.plugins.evaluators.linear.train_linear` (the ``linear`` evaluator's fitting, its
``lr`` x ``weight_decay`` sweep) on features that :func:`encode` extracts with that same encoder in
float32. They are not read from ``task.features``: the cache may be bfloat16 on CUDA (or, in a test,
planted), and a perturbed image must go through the very function the head was fitted on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from ssl_bench.harness import EvalTask, ImageSet, normalize, to_float
from ssl_bench.plugins.evaluators.linear import Linear, train_linear


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
    """The ``linear`` evaluator's classifier on ``features`` (N, D): standardised with their own mean
    and std, trained by ``train_linear`` with ``hparams``' ``lr`` / ``weight_decay`` (else ``params``')."""
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
