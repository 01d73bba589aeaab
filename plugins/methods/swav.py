"""SwAV: online clustering; each view predicts the Sinkhorn-Knopp codes of the other views.

- [0] Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. Unsupervised Learning of Visual Features by
  Contrasting Cluster Assignments. NeurIPS 2020, arXiv:2006.09882.
- [1] Cuturi. Sinkhorn Distances: Lightspeed Computation of Optimal Transport. NeurIPS 2013,
  arXiv:1306.0895.

Every view goes through the backbone and an MLP head (Linear-BN-ReLU-Linear) onto the unit sphere,
z (B, D). Scores against K L2-normalised prototypes (a bias-free linear layer) are z C^T (B, K). For
each global view, codes Q (B, K) solve [0]'s equipartitioned transport problem (eq. 3) by three
Sinkhorn-Knopp iterations [1] on exp(scores / epsilon), in float32, without gradient, over the global
batch: every normaliser sum goes through :func:`harness.gather`, so under torchrun the codes are
those of the whole batch. Each other view v, local crops included, predicts them: [0]'s eq. 2,
-sum_k q_k log softmax(z_v C^T / temperature)_k, averaged over samples, over the predicting views
and over the global views. The first ``n_global`` views are global (they get codes); every further
view is a local crop that only predicts, so multi-crop is a views list, not code:
``views = ["swav_multicrop", "swav_multicrop", "swav_multicrop_local", "swav_multicrop_local"]``.
Consecutive views of one size share a forward pass (and batch-norm statistics), as in [0]'s code.

Defaults and why (paper values scaled to CIFAR-size runs):
    temperature 0.1, epsilon 0.05, 3 Sinkhorn iterations, head 2048-2048-128 as [0] (hidden width =
    the backbone's feature dimension here). For runs of a few hundred steps a smaller epsilon (0.03,
    sharper codes, a stronger early signal) learns faster, so the 4-epoch CIFAR-10 CPU benchmark sets
    it in its row; the default stays the paper's.
    100 prototypes: [0] uses 3000 for ImageNet's 1000 classes and reports little sensitivity to the
    number; ~10 x the classes gives 100 at CIFAR-10, and K below the batch (256) lets the batch alone be
    split equally between prototypes. Queue off (``queue_size = 0``): [0] adds a 3840-row queue
    when the batch (256) is far smaller than K (3000); with K = 100 < B it is not needed.
    Set ``queue_size`` (e.g. 15 batches) and ``queue_start_steps`` for small batches or large K.
    Prototypes frozen for the first 5 steps: [0] freezes them for its first epoch (313 iterations,
    0.1-1% of its runs) so that codes are not chased by prototypes still random; at CIFAR budgets of
    hundreds of steps that share is a few steps.
    Two views by default: local crops of 32 px images (14 px) carry little.
    What was measured choosing these is in leaderboard/findings.toml (``[methods] swav``).

Deviations from [0]:
    - The optimizer is chosen by the benchmark file (LARS with lr 4.8 in [0]).
    - Prototypes are re-normalised in :meth:`on_step_end`, after each optimizer step (and at
      construction), instead of at the start of the next iteration: the same sequence.
    - Freezing drops the prototypes' gradient by detaching them in the loss (grad stays None, so the
      optimizer leaves them alone, weight decay included), as [0] sets the gradient to None.
    - The queue is filled from step ``queue_start_steps`` on ([0] counts epochs) and used once full.
      [0] keeps one queue per process; here every process keeps the same queue of gathered
      embeddings (``queue_size`` rows in all) and adds its own 1/world_size share of the rows to the
      Sinkhorn problem, so each queued embedding still counts once, DistributedDataParallel's buffer
      broadcast changes nothing, and a checkpoint resumes at any world size.
    - The max score is subtracted before exp (exactly invariant; it keeps small epsilons finite).
    - Batch norm is synchronised across processes only when the run asks for it (``--sync-bn``).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import (
    Backbone,
    Batch,
    Method,
    MethodParams,
    Register,
    gather,
    hookimpl,
    rank,
    world_size,
)
from ssl_bench.harness.kit.heads import mlp_head
from ssl_bench.harness.kit.multicrop import forward_by_size


def _global_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over every process (an all-reduce built on :func:`harness.gather`)."""
    return gather(x.unsqueeze(0)).sum(dim=0)


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Soft codes of [0] (eq. 3 and its appendix): Sinkhorn-Knopp on exp(scores / epsilon).

    Q = exp(scores / epsilon)^T (K, N) is scaled to total mass 1, then each iteration scales every
    prototype's row to 1/K and every sample's column to 1/N, N and the sums taken over all processes.
    The result is scaled by N, so each sample's code sums to 1 and each prototype gets ~N/K. The max
    score is subtracted first (no effect on Q); with unit-sphere scores (range <= 2) an epsilon below
    ~0.02 can still underflow a whole prototype row of float32 to zero.

    Args:
        scores: this process's prototype scores (N_local, K), any dtype; no gradient flows back.
        epsilon: entropic regularisation (smaller = sharper codes).
        iterations: Sinkhorn-Knopp iterations.

    Returns:
        float32 codes (N_local, K), rows summing to 1.
    """
    with torch.autocast(scores.device.type, enabled=False):
        s = scores.detach().float()
        s = s - gather(s.max().reshape(1)).max()
        q = torch.exp(s / epsilon).T  # (K, N)
        k = q.shape[0]
        n = _global_sum(torch.tensor(float(q.shape[1]), device=q.device))
        q /= _global_sum(q.sum())
        for _ in range(iterations):
            q /= _global_sum(q.sum(dim=1, keepdim=True)) * k  # prototypes: mass 1/K each
            q /= q.sum(dim=0, keepdim=True) * n  # samples: mass 1/N each
        return (q * n).T


def swapped_prediction_loss(scores: list[Tensor], codes: list[Tensor], temperature: float) -> Tensor:
    """[0]'s eq. 2 over many views: each coded view's codes predicted by every other view.

    Args:
        scores: V prototype scores (B, K), one per view, with gradient.
        codes: codes (B, K) of the first len(codes) views (the global ones), no gradient.
        temperature: softmax temperature of the predictions.

    Returns:
        Scalar: mean over coded views i of the mean over views v != i of
        -mean_b sum_k codes_i[b, k] log softmax(scores_v[b] / temperature)_k.
    """
    log_p = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    total = scores[0].new_zeros((), dtype=torch.float32)
    for i, q in enumerate(codes):
        others = [lp for v, lp in enumerate(log_p) if v != i]
        total = total + sum(-(q * lp).sum(dim=1).mean() for lp in others) / len(others)
    return total / len(codes)


class SwAV(Method):
    """SwAV [0]: prototypes, Sinkhorn codes of the global views, swapped prediction, multi-crop."""

    name = "swav"

    class Params(MethodParams):
        views: tuple[str, ...] = ("swav_multicrop", "swav_multicrop")
        """Pipelines of the views: the first ``n_global`` are global, any further ones local crops."""
        n_global: Annotated[int, Field(ge=1)] = 2
        """Number of leading views that get codes ([0]: the two 224 px crops)."""
        num_prototypes: Annotated[int, Field(gt=0)] = 100
        """Number K of prototypes ([0]: 3000 on ImageNet; ~10 x the classes here)."""
        temperature: Annotated[float, Field(gt=0)] = 0.1
        """Softmax temperature of the predictions ([0]: 0.1)."""
        epsilon: Annotated[float, Field(gt=0)] = 0.05
        """Entropic regularisation of the Sinkhorn codes ([0]: 0.05)."""
        sinkhorn_iterations: Annotated[int, Field(ge=1)] = 3
        """Sinkhorn-Knopp iterations ([0]: 3)."""
        proj_hidden_dim: Annotated[int, Field(gt=0)] | None = None
        """Hidden width of the MLP head; None = the backbone's feature dimension ([0]: 2048)."""
        proj_dim: Annotated[int, Field(gt=0)] = 128
        """Output dimension of the head, the prototypes' dimension ([0]: 128)."""
        queue_size: Annotated[int, Field(ge=0)] = 0
        """Past embeddings per global view added to the Sinkhorn problem (0 = off; [0]: 3840)."""
        queue_start_steps: Annotated[int, Field(ge=0)] = 0
        """Optimizer steps before the queue starts filling ([0]: 15 epochs)."""
        freeze_prototypes_steps: Annotated[int, Field(ge=0)] = 5
        """Optimizer steps during which the prototypes get no gradient ([0]: 313, its first epoch)."""

        @model_validator(mode="after")
        def _enough_views(self) -> SwAV.Params:
            if len(self.views) < 2 or self.n_global > len(self.views):
                raise ValueError(f"need at least 2 views and n_global <= len(views), got {len(self.views)} views "
                                 f"and n_global={self.n_global}")
            return self

    params: Params
    queue: Tensor
    queue_rows: Tensor
    steps_done: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        hidden = params.proj_hidden_dim or backbone.feature_dim
        self.projector = mlp_head(backbone.feature_dim, hidden, params.proj_dim)
        self.prototypes = nn.Linear(params.proj_dim, params.num_prototypes, bias=False)
        self.normalize_prototypes()
        self.register_buffer("queue", torch.zeros(params.n_global, params.queue_size, params.proj_dim))
        self.register_buffer("queue_rows", torch.zeros((), dtype=torch.long))  # filled rows, newest first
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._pending: list[Tensor] = []

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype back onto the unit sphere."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def embed(self, views: list[Tensor]) -> list[Tensor]:
        """Unit embeddings (B, proj_dim), float32, one per view; consecutive same-size views share a pass."""
        return forward_by_size(lambda x: F.normalize(self.projector(self.backbone(x)).float(), dim=1), views)

    def loss(self, batch: Batch) -> Tensor:
        """Swapped prediction over every view of the batch (views (B, C, H_v, W_v), sizes may differ)."""
        p = self.params
        z = self.embed(batch.views)
        frozen = int(self.steps_done) < p.freeze_prototypes_steps
        weight = self.prototypes.weight.detach() if frozen else self.prototypes.weight
        with torch.autocast(z[0].device.type, enabled=False):
            scores = [zv @ weight.float().T for zv in z]
            use_queue = self.queue.shape[1] > 0 and int(self.queue_rows) >= self.queue.shape[1]
            codes = []
            for i in range(p.n_global):
                s = scores[i].detach()
                if use_queue:  # this process's share of the (identical) global queue
                    share = self.queue[i].tensor_split(world_size())[rank()]
                    s = torch.cat([share @ weight.detach().float().T, s])
                codes.append(sinkhorn(s, p.epsilon, p.sinkhorn_iterations)[-scores[i].shape[0]:])
            loss = swapped_prediction_loss(scores, codes, p.temperature)
        if self.queue.shape[1] > 0 and int(self.steps_done) >= p.queue_start_steps:
            self._pending = [gather(zv.detach()) for zv in z[:p.n_global]]
        return loss

    @torch.no_grad()
    def enqueue(self, embeddings: list[Tensor]) -> None:
        """Put one (N, proj_dim) global embedding batch per global view at the queue's head; the oldest fall off."""
        rows = self.queue.shape[1]
        new = torch.stack(embeddings).to(self.queue.dtype)[:, :rows]
        self.queue.copy_(torch.cat([new, self.queue], dim=1)[:, :rows])
        self.queue_rows.fill_(min(rows, int(self.queue_rows) + new.shape[1]))

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Count the step, re-normalise the prototypes, enqueue this step's global embeddings."""
        self.steps_done.fill_(step)
        self.normalize_prototypes()
        if self._pending:
            self.enqueue(self._pending)
        self._pending = []


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(SwAV)
