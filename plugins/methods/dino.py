"""DINO: self-distillation with no labels; a student matches a momentum teacher's centred, sharpened outputs.

- [0] Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin. Emerging Properties in Self-Supervised
  Vision Transformers. ICCV 2021, arXiv:2104.14294.

Student and teacher are the backbone and the DINO head (a 3-layer GELU MLP to a bottleneck, L2
normalisation, then a weight-normalised bias-free Linear to K outputs, its norms fixed to 1); the teacher
is a copy that moves only by ``teacher <- m * teacher + (1 - m) * student`` after each optimizer step, m
rising from ``momentum_base`` to 1 on a cosine. The teacher sees the ``n_global`` global views, the
student every view (the local crops included); the loss is [0]'s eq. 3 (Algorithm 1): for each global
view i and every view v != i, ``-sum_k P_t(i)_k log P_s(v)_k`` averaged over the batch, then over the
pairs, with ``P_s = softmax(g_s / tau_s)`` and ``P_t = softmax((g_t - c) / tau_t)``: centring by c and
sharpening by the low tau_t keep the outputs from collapsing (sec. 3.1). The centre is an EMA of the mean
teacher output over the global batch (``c <- lambda c + (1 - lambda) mean``, gathered over processes) and
tau_t warms up linearly from ``teacher_temp_start`` to ``teacher_temp`` over the first share of training.
Multi-crop is a views list: ``n_global`` global views, then local crops (the SwAV pipelines; consecutive
views of one size share a forward pass).

Defaults and why (paper values scaled to CIFAR-size runs):
    tau_s 0.1, tau_t from 0.04 to 0.07 over the first 10% of training, centre momentum 0.9, as [0]'s ViT
    recipe (its warm-up is 30 of 300 epochs; its ResNet-50 recipe keeps tau_t at 0.04, what
    methods_cifar10_cpu sets for convnet_small). Head 512-512-128 with K = 1024 outputs ([0]: 2048-2048-256,
    K = 65536): K is the cost of the last layer and of every softmax on a CPU, and ~100 x the classes of
    CIFAR-10 still over-clusters them. Batch norm in the head's hidden layers ([0]'s ``use_bn_in_head``
    option; off in its recipes): with a few hundred steps from a random convnet, whose features of
    different images are nearly parallel, the head without it fell to the uniform solution (the loss settled
    at log K) in CPU runs on CIFAR-10, while batch norm spreads the images apart from the first step.
    Teacher momentum 0.99 rising to 1 ([0]: 0.996): at a few hundred steps a 0.996 teacher barely leaves
    its random start (MoCo v3 and BYOL here use 0.99 too). Views: 2 global ``swav_multicrop`` (crop scale
    0.14-1) and 4 local ``swav_multicrop_local`` crops (0.05-0.14, 14 px at 32 px): [0]'s ResNet-50 recipe
    uses these (SwAV's) scales, its ViT recipe 0.4-1 and 0.05-0.4 (set them in the benchmark's
    ``[pretrain.augmentations]``), both with 2 x 224 px and 6-10 x 96 px crops. The last layer is not
    frozen at the start (``freeze_last_layer_steps = 0``): [0] freezes it for its first epoch, 0.1-1% of
    its runs, about one step at CIFAR budgets.

Deviations from [0]:
    - The optimizer and its schedule are the benchmark file's ([0]: AdamW with weight decay rising 0.04 to
      0.4 on a cosine for ViTs; SGD, lr 0.03 x batch / 256, wd 1e-4 for ResNet-50), without [0]'s gradient
      clipping at 3.0.
    - Augmentations are the SwAV pipelines' (no blur at 32 px, no solarisation of the second global view).
    - The centre and temperature step counter move in :meth:`on_step_end`, after the optimizer step
      ([0] updates the centre inside the loss of the same step: the same sequence).
    - Batch norm in the head (above; ``head_bn = false`` is [0]'s head); it is per process unless the run
      synchronises it. The loss is computed in float32.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, gather, hookimpl, world_size
from ssl_bench.harness.kit.momentum import cosine_tau, ema_update, frozen_copy
from ssl_bench.harness.kit.multicrop import forward_by_size


class DINOHead(nn.Module):
    """[0]'s head: MLP (GELU) to a bottleneck, L2-normalise, weight-normalised Linear. Shape: (B, D) -> (B, K)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int, *, batch_norm: bool = False,
                 norm_last_layer: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for d_in, d_out in ((in_dim, hidden_dim), (hidden_dim, hidden_dim)):
            layers += [nn.Linear(d_in, d_out), *([nn.BatchNorm1d(d_out)] if batch_norm else []), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_v = nn.Parameter(nn.Linear(bottleneck_dim, out_dim, bias=False).weight.detach().clone())
        """Directions v of the last layer (K, bottleneck); its weight is ``g * v / ||v||`` per row."""
        self.last_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)
        """Row norms g of the last layer (fixed to 1 with ``norm_last_layer``, as [0])."""

    def forward(self, x: Tensor, *, freeze_last: bool = False) -> Tensor:
        """Logits (B, K) of features (B, D); ``freeze_last`` stops the gradient into the last layer."""
        z = F.normalize(self.mlp(x), dim=-1)
        w = self.last_g * F.normalize(self.last_v, dim=1)
        return z @ (w.detach() if freeze_last else w).T


def dino_loss(student: list[Tensor], teacher: list[Tensor], center: Tensor, student_temp: float,
              teacher_temp: float) -> Tensor:
    """Eq. 3 of [0] over views: every global view's teacher distribution predicted by every other view.

    Args:
        student: V student logits, the global views first (the same crops as ``teacher``). Shape: V x (B, K).
        teacher: G teacher logits of the global views, no gradient. Shape: G x (B, K).
        center: c. Shape: (1, K) or (K,).
        student_temp: tau_s.
        teacher_temp: tau_t.

    Returns:
        Scalar: mean over the pairs (i, v), v != i, of ``-mean_b sum_k P_t(i)[b, k] log P_s(v)[b, k]``.
    """
    targets = [F.softmax((t.detach().float() - center) / teacher_temp, dim=-1) for t in teacher]
    log_p = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student]
    total, pairs = student[0].new_zeros((), dtype=torch.float32), 0
    for i, q in enumerate(targets):
        for v, lp in enumerate(log_p):
            if v != i:
                total, pairs = total - (q * lp).sum(dim=-1).mean(), pairs + 1
    return total / pairs


@torch.no_grad()
def batch_center(teacher: list[Tensor]) -> Tensor:
    """Mean teacher output over every global view of the global batch (summed over processes). Shape: (1, K)."""
    t = torch.cat(teacher).float()
    total = gather(t.sum(dim=0, keepdim=True)).sum(dim=0, keepdim=True)
    return total / (t.shape[0] * world_size())


class DINO(Method):
    """DINO [0]: a student matching a momentum teacher's centred and sharpened outputs, multi-crop."""

    name = "dino"

    class Params(MethodParams):
        views: tuple[str, ...] = ("swav_multicrop",) * 2 + ("swav_multicrop_local",) * 4
        """Pipelines: the first ``n_global`` views are global (seen by the teacher), the rest local crops."""
        n_global: Annotated[int, Field(ge=1)] = 2
        """Leading views the teacher sees ([0]: the two global crops)."""
        out_dim: Annotated[int, Field(gt=0)] = 1024
        """Outputs K of the head ([0]: 65536)."""
        hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Hidden width of the head's MLP ([0]: 2048)."""
        bottleneck_dim: Annotated[int, Field(gt=0)] = 128
        """Bottleneck before the last layer ([0]: 256)."""
        head_bn: bool = True
        """Batch norm in the head's hidden layers ([0]: off in its recipes, an option of its code)."""
        norm_last_layer: bool = True
        """Fix the last layer's row norms to 1 ([0]: true, more stable)."""
        student_temp: Annotated[float, Field(gt=0)] = 0.1
        """tau_s ([0]: 0.1)."""
        teacher_temp_start: Annotated[float, Field(gt=0)] = 0.04
        """tau_t at step 0 ([0]: 0.04)."""
        teacher_temp: Annotated[float, Field(gt=0)] = 0.07
        """tau_t after the warm-up ([0]: 0.04-0.07)."""
        teacher_temp_warmup: Annotated[float, Field(ge=0, le=1)] = 0.1
        """Share of training over which tau_t rises linearly ([0]: 30 of 300 epochs)."""
        center_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
        """lambda of the centre's EMA ([0]: 0.9)."""
        momentum_base: Annotated[float, Field(ge=0, le=1)] = 0.99
        """Teacher momentum m at step 0, rising to 1 on a cosine ([0]: 0.996)."""
        freeze_last_layer_steps: Annotated[int, Field(ge=0)] = 0
        """Optimizer steps during which the last layer gets no gradient ([0]: its first epoch)."""

        @model_validator(mode="after")
        def _enough_views(self) -> DINO.Params:
            if len(self.views) < 2 or self.n_global > len(self.views):
                raise ValueError(f"need at least 2 views and n_global <= len(views), got {len(self.views)} views "
                                 f"and n_global={self.n_global}")
            return self

    params: Params
    center: Tensor
    steps_done: Tensor
    total_steps: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        p = params
        self.head = DINOHead(backbone.feature_dim, p.hidden_dim, p.bottleneck_dim, p.out_dim, batch_norm=p.head_bn,
                             norm_last_layer=p.norm_last_layer)
        self.teacher = frozen_copy(nn.Sequential(backbone, self.head))
        self.register_buffer("center", torch.zeros(1, p.out_dim))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.long))
        self._pending: Tensor | None = None

    def teacher_temperature(self) -> float:
        """tau_t at this step: linear from ``teacher_temp_start`` over the warm-up share, then ``teacher_temp``.

        The run's length is known from the first :meth:`on_step_end` on; step 0 is the warm-up's start.
        """
        p, step, total = self.params, int(self.steps_done), int(self.total_steps)
        if p.teacher_temp_warmup == 0:
            return p.teacher_temp
        warmup = p.teacher_temp_warmup * total
        if total > 0 and step >= warmup:
            return p.teacher_temp
        return p.teacher_temp_start + (p.teacher_temp - p.teacher_temp_start) * (step / warmup if total else 0.0)

    def loss(self, batch: Batch) -> Tensor:
        """[0]'s loss of the views (V x (B, C, H_v, W_v), the global ones first, sizes may differ)."""
        p, views = self.params, batch.views
        frozen = int(self.steps_done) < p.freeze_last_layer_steps
        student = forward_by_size(lambda x: self.head(self.backbone(x), freeze_last=frozen), views)
        with torch.no_grad():
            teacher = forward_by_size(self.teacher, views[:p.n_global])
        loss = dino_loss(student, teacher, self.center, p.student_temp, self.teacher_temperature())
        self._pending = batch_center(teacher)
        return loss

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        """Move the teacher (cosine momentum) and the centre (EMA of this step's batch centre); count the step."""
        ema_update(self.teacher, nn.Sequential(self.backbone, self.head), cosine_tau(self.params.momentum_base,
                                                                                     step, total_steps))
        if self._pending is not None:
            lam = self.params.center_momentum
            self.center.mul_(lam).add_(self._pending.to(self.center.dtype), alpha=1 - lam)
            self._pending = None
        self.steps_done.fill_(step)
        self.total_steps.fill_(total_steps)


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(DINO)
