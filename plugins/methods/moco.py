"""MoCo v2: contrastive learning against a queue of keys from a momentum encoder.

- [0] He, Fan, Wu, Xie, Girshick. Momentum Contrast for Unsupervised Visual Representation
  Learning. CVPR 2020, arXiv:1911.05722.
- [1] Chen, Fan, Girshick, He. Improved Baselines with Momentum Contrastive Learning, 2020,
  arXiv:2003.04297 (v2: MLP head, temperature 0.2, blur augmentation, cosine schedule).
- [2] Chen, Xie, He. An Empirical Study of Training Self-Supervised Vision Transformers. ICCV 2021,
  arXiv:2104.02057 (v3: symmetrised loss).

The query encoder is the backbone plus a 2-layer MLP head (Linear-ReLU-Linear, as [1]); the key
encoder is a copy of both that moves only by momentum, ``key <- m * key + (1 - m) * query``, after
every optimizer step. Keys, L2-normalised, enter a FIFO queue of negatives (a registered buffer, so it
is checkpointed and restored with the model). The loss is InfoNCE with the positive key at index 0.

Defaults and why (paper values scaled to CIFAR-size runs):
    temperature 0.2 as [1]. Head hidden width = the backbone's feature dimension (2048 for the
    ResNet-50 of [1]), output 128 as [1]. Queue 4096 keys (65536 in [0, 1]): with 10-50k training
    images a longer queue holds keys from an encoder many steps stale. Momentum 0.99 (0.999 in [0, 1]):
    runs of a few hundred to a few thousand steps cannot wait for a key encoder with a 1000-step time
    constant; 0.99 is the usual CIFAR choice. Symmetrised loss on (each view is once query, once key,
    both keys enqueued), as [2] and common CIFAR setups, because small batches give few gradients per
    step. Views ("moco_v2", "moco_v2"): [1]'s augmentation (SimCLR's crop and jitter plus blur).

Deviations from [0, 1]:
    - Shuffled BN needs several GPUs. Its single-process equivalent is used instead ("split BN"):
      the key batch is shuffled, forwarded through the key encoder in ``key_bn_splits`` sub-batches
      (each normalised by its own statistics) and unshuffled, so a key never shares batch statistics
      with exactly the samples of its query's batch. Under torchrun each process does the same on its
      local batch and keys are gathered for the queue through :func:`harness.gather`.
    - The momentum update runs in :meth:`on_step_end`, after the optimizer step, and keys are enqueued
      there too; [0] does both at the start/end of the next forward, which is the same sequence.
    - The queue may hold any number of keys (wrap-around enqueue); [0] requires K % batch == 0.
    - The optimizer is chosen by the benchmark file.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, gather, hookimpl
from ssl_bench.harness.kit.heads import mlp_head
from ssl_bench.harness.kit.losses import info_nce
from ssl_bench.harness.kit.momentum import ema_update, frozen_copy


def moco_infonce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """InfoNCE of [0], eq. 1: each query against its key (logit 0) and every queued negative.

    :func:`~ssl_bench.harness.kit.losses.info_nce` with the keys as ``positive_keys``.

    Args:
        q: queries, shape (N, D); L2-normalised here.
        k: positive keys, shape (N, D), no gradient expected; L2-normalised here.
        queue: negative keys, shape (K, D), already L2-normalised.
        temperature: softmax temperature (> 0).

    Returns:
        Scalar loss, the mean over the N queries.
    """
    q = F.normalize(q.float(), dim=1)
    return info_nce(q, queue.float(), temperature, positive_keys=F.normalize(k.float(), dim=1))


class MoCoV2(Method):
    """MoCo v2 [0, 1]: momentum key encoder, a queue of negatives, InfoNCE at temperature 0.2."""

    name = "moco_v2"

    class Params(MethodParams):
        views: tuple[str, str] = ("moco_v2", "moco_v2")
        """The two augmentation pipelines (query view, key view)."""
        temperature: Annotated[float, Field(gt=0)] = 0.2
        """Softmax temperature of InfoNCE ([1]: 0.2)."""
        momentum: Annotated[float, Field(ge=0, le=1)] = 0.99
        """Key encoder momentum m ([0, 1]: 0.999; 0.99 for short runs)."""
        queue_size: Annotated[int, Field(gt=0)] = 4096
        """Number K of queued negative keys ([0, 1]: 65536)."""
        proj_hidden_dim: Annotated[int, Field(gt=0)] | None = None
        """Hidden width of the MLP head; None = the backbone's feature dimension."""
        proj_dim: Annotated[int, Field(gt=0)] = 128
        """Output dimension of the head (and of the queued keys)."""
        symmetric: bool = True
        """Symmetrised loss: each view is also a key for the other, both keys enqueued ([2])."""
        key_bn_splits: Annotated[int, Field(ge=1)] = 2
        """Sub-batches of the shuffled key batch, each with its own BN statistics (1 = no guard)."""

    params: Params
    queue: Tensor
    queue_ptr: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        hidden = params.proj_hidden_dim or backbone.feature_dim
        self.projector = mlp_head(backbone.feature_dim, hidden, params.proj_dim, batch_norm=False)
        self.key_encoder = frozen_copy(nn.Sequential(backbone, self.projector))
        self.register_buffer("queue", F.normalize(torch.randn(params.queue_size, params.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending: list[Tensor] = []

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """Key embeddings (B, proj_dim) of images (B, C, H, W), with the shuffle/split-BN guard."""
        splits = max(1, min(self.params.key_bn_splits, x.shape[0] // 2))
        if splits == 1:
            return self.key_encoder(x)  # type: ignore[no-any-return]
        g = torch.Generator().manual_seed(int(self.queue_ptr) + 7919 * x.shape[0])
        perm = torch.randperm(x.shape[0], generator=g).to(x.device)
        k = torch.cat([self.key_encoder(chunk) for chunk in x[perm].tensor_split(splits)])
        return k[torch.argsort(perm)]

    def loss(self, batch: Batch) -> Tensor:
        """InfoNCE of the query view(s) against the other view's key and the queue."""
        x1, x2 = batch.views
        q1 = self.projector(self.backbone(x1))
        k2 = self.keys(x2)
        queue = self.queue  # unchanged until on_step_end, after backward
        loss = moco_infonce(q1, k2, queue, self.params.temperature)
        new_keys = [k2]
        if self.params.symmetric:
            q2 = self.projector(self.backbone(x2))
            k1 = self.keys(x1)
            loss = (loss + moco_infonce(q2, k1, queue, self.params.temperature)) / 2
            new_keys = [k1, k2]
        self._pending = [gather(F.normalize(k.detach().float(), dim=1)) for k in new_keys]
        return loss

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write normalised keys (N, proj_dim) over the oldest queue rows, wrapping around."""
        size = self.queue.shape[0]
        keys = keys[-size:]
        idx = (int(self.queue_ptr) + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + keys.shape[0]) % size)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Momentum-update the key encoder, then enqueue this step's keys."""
        ema_update(self.key_encoder, nn.Sequential(self.backbone, self.projector), self.params.momentum)
        for keys in self._pending:
            self.enqueue(keys)
        self._pending = []


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(MoCoV2)
