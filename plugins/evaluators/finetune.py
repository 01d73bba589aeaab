"""Fine-tuning evaluation: a copy of the encoder plus a linear head, trained end to end on few labels."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import (
    Backbone,
    EvalTask,
    Evaluator,
    ScheduleSpec,
    hookimpl,
    lr_factor,
    normalize,
    to_float,
)
from ssl_bench.harness import (
    Params as BaseParams,
)
from ssl_bench.harness.kit.augment import random_resized_crop
from ssl_bench.harness.kit.labels import label_fraction_indices
from ssl_bench.harness.kit.metrics import classification_metrics

SCHEDULES: dict[str, ScheduleSpec] = {
    "exponential": ScheduleSpec(name="step", gamma=0.9, step_epochs=10),  # the transfer study's x0.9 every 10 epochs
    "cosine": ScheduleSpec(name="cosine"),  # to 0 at the last step
}
CROP_SCALE = (0.5, 1.0)
"""Area range of the light training crop (then resized back to the input size)."""


class FineTuneNet(nn.Module):
    """``head(dropout(encoder(x)))``: images (B, C, H, W) -> logits (B, num_classes)."""

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.head(self.dropout(self.encoder(x)))
        return logits


def batches(order: Tensor, batch_size: int) -> list[Tensor]:
    """``order`` split into batches; a last batch of one row joins the previous one (batch norm needs 2)."""
    parts = list(order.split(batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def feature_dim_of(encoder: nn.Module, probe: Tensor) -> int:
    """``encoder.feature_dim`` when it declares one, else the width of its output on ``probe`` (1, C, H, W)."""
    dim = getattr(encoder, "feature_dim", None)
    if isinstance(dim, int):
        return dim
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        dim = int(encoder(probe).shape[1])
    encoder.train(was_training)
    return dim


class FineTune(Evaluator):
    """Fine-tune a copy of the encoder with a linear head on a stratified fraction of the labels.

    - [0] the transfer study (few-label fine-tuning of the pretrained network, SGD momentum 0.9, lr x0.9
      every 10 epochs, small lr x weight-decay grids)
    - [1] the SimCLR-vs-RotNet study (1%, 10% and 50% label fractions)
    - [2] Chen et al., Big Self-Supervised Models are Strong Semi-Supervised Learners, 2020,
      arXiv:2006.10029 (fine-tuning on 1% / 10% label subsets as an SSL evaluation)

    ``task.encoder`` is never touched: a deep copy is trained (train mode, all weights) together with
    ``dropout -> nn.Linear(feature_dim, C)``, on the ``label_fraction`` subset of ``task.fit`` chosen by
    :func:`ssl_bench.harness.kit.labels.label_fraction_indices` (stratified, seeded by ``task.seed``, nested across
    fractions). ``freeze_backbone`` trains only the head, with the copy in eval mode (a linear probe
    through the network, with augmentation). Cross-entropy, SGD (momentum 0.9, weight decay on every
    trainable tensor), lr per step on the batch-mean loss, ``exponential`` ([0]) or ``cosine`` schedule
    stepped per optimizer step. Light augmentation: random resized crop of 50-100% of the area with a
    horizontal flip (p 0.5). ``task.target`` is scored in eval mode.

    Default grid ``lr`` (0.01, 0.001) x ``weight_decay`` (0, 5e-4): [0] swept small grids of this kind;
    2 x 2 keeps four fine-tunes per sweep. Randomness: shuffling from a CPU generator
    seeded with ``task.seed``, crops from a generator on ``task.device`` seeded with ``task.seed + 1``,
    head init and dropout from ``torch.manual_seed(task.seed)`` inside ``torch.random.fork_rng``
    (the caller's global RNG state is restored). Deviations: freezing is all or nothing (no first-K
    stages); with the default 10 epochs the exponential schedule never decays (it does from epoch 10).
    """

    name = "finetune"

    class Params(BaseParams):
        label_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
        """Share of each class of ``task.fit`` that keeps its label (nested subsets; 0.01, 0.1, 0.5 in [1])."""
        freeze_backbone: bool = False
        """Train only the head (the encoder copy stays frozen, in eval mode)."""
        freeze_stages: Annotated[int, Field(ge=0)] = 0
        """Freeze the encoder's first K stages (the pretext-tasks study: AlexNet up to conv3, K = 3)."""
        epochs: Annotated[int, Field(gt=0)] = 10
        """Passes over the labelled subset."""
        batch_size: Annotated[int, Field(gt=0)] = 128
        """Images per SGD step."""
        momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
        """SGD momentum (heavy ball, no Nesterov)."""
        schedule: Literal["exponential", "cosine"] = "exponential"
        """``exponential``: lr x0.9 every 10 epochs (the transfer study); ``cosine``: to 0 over the run."""
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
        """Dropout probability on the features before the head."""
        augment: bool = True
        """Random resized crop (50-100% of the area) and horizontal flip of every training image."""
        lr: Annotated[float, Field(gt=0)] = 0.01
        """Peak learning rate when ``hparams`` has no ``lr``."""
        weight_decay: Annotated[float, Field(ge=0)] = 5e-4
        """Weight decay when ``hparams`` has no ``weight_decay``."""
        eval_batch_size: Annotated[int, Field(gt=0)] = 512
        """Images per forward pass when scoring ``task.target``."""

    params: Params
    search_space: ClassVar[Mapping[str, tuple[float, ...]]] = {"lr": (0.01, 0.001), "weight_decay": (0.0, 5e-4)}
    sweepable: ClassVar[tuple[str, ...]] = ("dropout",)

    def evaluate(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """Fine-tune on the labelled fraction of ``task.fit``, report ``task.target`` metrics.

        Args:
            task: images are uint8 (N, C, H, W); ``task.encoder`` is copied, never modified.
            hparams: ``lr``, ``weight_decay`` and/or ``dropout``; missing ones fall back to ``Params``.

        Returns:
            ``classification_metrics`` of the fine-tuned network's logits on ``task.target`` (percent).
        """
        unknown = set(hparams) - {"lr", "weight_decay", "dropout"}
        if unknown:
            raise ValueError(f"finetune: unknown hyper-parameters {sorted(unknown)}; "
                             "expected lr, weight_decay, dropout")
        cuda = [task.device.index if task.device.index is not None else torch.cuda.current_device()] \
            if task.device.type == "cuda" else []
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=cuda):
            model, diverged = self.finetune(task, hparams)
            logits = self.predict(model, task)
        metrics = classification_metrics(logits.cpu(), task.target.labels.cpu(), task.num_classes)
        return {k: math.nan for k in metrics} if diverged else metrics

    def finetune(self, task: EvalTask, hparams: Mapping[str, float]) -> tuple[FineTuneNet, bool]:
        """The fine-tuned copy of the encoder with its head (see the class docstring), and whether the
        loss diverged (then training stopped at that epoch's end and every metric is NaN, which fails
        that Optuna trial instead of the whole sweep)."""
        p, device = self.params, task.device
        rows = label_fraction_indices(task.fit.labels, p.label_fraction, seed=task.seed)
        fit = task.fit.subset(rows)
        images = None if fit.mapped else fit.images.to(device)  # a mapped set stays in its file, read per batch
        labels = fit.labels.to(device).long()
        if len(rows) < 2 and not p.freeze_backbone:
            raise ValueError(f"finetune: {len(rows)} labelled image(s); batch norm needs at least 2")
        encoder = copy.deepcopy(task.encoder).to(device)
        encoder.requires_grad_(not p.freeze_backbone)
        if p.freeze_stages:
            if not isinstance(encoder, Backbone):
                raise ValueError(f"finetune: freeze_stages needs a Backbone encoder, got {type(encoder).__name__}")
            encoder.freeze_stages(p.freeze_stages)
        dim = feature_dim_of(encoder, normalize(to_float(fit.batch(torch.arange(min(1, len(fit))), device))))
        torch.manual_seed(task.seed)
        model = FineTuneNet(encoder, dim, task.num_classes, float(hparams.get("dropout", p.dropout))).to(device)
        trainable = [t for t in model.parameters() if t.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=float(hparams.get("lr", p.lr)), momentum=p.momentum,
                                    weight_decay=float(hparams.get("weight_decay", p.weight_decay)))
        steps_per_epoch = len(batches(torch.arange(len(rows)), p.batch_size))
        total = p.epochs * steps_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(SCHEDULES[p.schedule], step, total, steps_per_epoch))
        shuffle = torch.Generator().manual_seed(task.seed)
        crops = torch.Generator(device=device).manual_seed(task.seed + 1)
        height, width = fit.images.shape[-2:]
        for _ in range(p.epochs):
            model.train()
            if p.freeze_backbone:
                model.encoder.eval()
            for host_idx in batches(torch.randperm(len(rows), generator=shuffle), p.batch_size):
                idx = host_idx.to(device)
                x = to_float(fit.batch(host_idx, device) if images is None else images.index_select(0, idx))
                if p.augment:
                    x = random_resized_crop(x, (height, width), CROP_SCALE, generator=crops, flip_p=0.5)
                loss = F.cross_entropy(model(normalize(x)), labels.index_select(0, idx))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            if not math.isfinite(loss.item()):  # checked once per epoch: no per-step device sync
                return model.eval(), True
        return model.eval(), False

    def predict(self, model: FineTuneNet, task: EvalTask) -> Tensor:
        """Logits of ``model`` in eval mode on ``task.target``. Shape: (N_target, num_classes)."""
        model.eval()
        with torch.no_grad():
            out = [model(normalize(to_float(chunk)))
                   for chunk in task.target.chunks(self.params.eval_batch_size, task.device)]
        return torch.cat(out) if out else torch.zeros(0, task.num_classes, device=task.device)


@hookimpl
def bench_register_evaluators(register: Callable[[type], None]) -> None:
    register(FineTune)
