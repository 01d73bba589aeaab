"""NNCLR: the positive of each embedding is its nearest neighbour in a support set of past embeddings.

- [0] Dwibedi, Aytar, Tompson, Sermanet, Zisserman. With a Little Help from My Friends: Nearest-Neighbor
  Contrastive Learning of Visual Representations. ICCV 2021, arXiv:2104.14548.

One backbone and a 3-layer projector (BN on every layer) embed both views as z; a 2-layer predictor maps
them to p. The support set Q is a FIFO queue of L2-normalised projections of first views (a registered
buffer, so it is checkpointed). For each image i, ``NN(z1_i, Q)``, the queue row of highest cosine
similarity (Euclidean nearest for unit vectors), is the anchor and the other view's prediction ``p2_i``
its positive, against the predictions ``p2_k`` of every other image of the global batch ([0], sec. 3); the
loss is symmetrised over the two views and averaged. Gradients reach the network through the
predictions only: the neighbours are queue rows.

Defaults and why (paper values scaled to CIFAR-size runs):
    temperature 0.1 as [0]. Queue 4096 ([0]: 98304 for ImageNet's 1.28M images): on 10-50k images a
    longer queue holds embeddings from an encoder many steps stale (MoCo v2 here keeps 4096 for the same
    reason). Projector 512-512-128 and predictor hidden 512 ([0]: 2048-2048-256 and 4096). Views ("byol",
    "byol_prime"): [0] trains with BYOL's augmentation.

Deviations from [0]:
    - The queue starts as random unit vectors (so the first ``queue_size / batch`` steps draw neighbours
      partly from noise), and this step's embeddings are enqueued in :meth:`on_step_end`, after the
      optimizer step, so a sample never finds its own current embedding.
    - Under torchrun, predictions are gathered (with gradients) through :func:`harness.gather` as the
      candidates of every process's anchors, and the first views' projections of every process are
      enqueued, so all processes keep the same queue. Batch norm is per process unless synchronised.
    - The optimizer is chosen by the benchmark file ([0]: LARS, lr 0.3 x batch / 256, wd 1e-6).
    - The loss is computed in float32 whatever the autocast precision.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, gather, hookimpl, rank
from ssl_bench.harness.kit.losses import info_nce
from ssl_bench.harness.kit.mlp import mlp


@torch.no_grad()
def nearest_neighbours(z: Tensor, support: Tensor) -> Tensor:
    """The row of ``support`` of highest cosine similarity to each row of ``z`` (ties: the first).

    Args:
        z: embeddings. Shape: (N, D).
        support: candidates, L2-normalised. Shape: (K, D).

    Returns:
        The chosen rows, without gradient. Shape: (N, D).
    """
    sims = F.normalize(z.float(), dim=1) @ support.float().T  # (N, K)
    return support[sims.argmax(dim=1)].float()


def nnclr_loss(neighbours: Tensor, predictions: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """The loss of [0], sec. 3: ``-log softmax_k(NN(z_i) . p_k / tau)[offset + i]``, averaged over anchors.

    Args:
        neighbours: this process's anchors ``NN(z_i, Q)``, unit rows. Shape: (N, D).
        predictions: the other views' predictions of the global batch, L2-normalised here; row
            ``offset + i`` is anchor i's positive. Shape: (M, D).
        temperature: tau (> 0).
        offset: index of this process's first image in the global batch (rank * N).

    Returns:
        Scalar loss.
    """
    p = F.normalize(predictions.float(), dim=1)
    positives = torch.arange(offset, offset + neighbours.shape[0], device=p.device)
    return info_nce(neighbours.float(), p, temperature, positives=positives)


class NNCLR(Method):
    """NNCLR [0]: nearest neighbours from a support queue as positives of a symmetrised InfoNCE."""

    name = "nnclr"

    class Params(MethodParams):
        views: tuple[str, str] = ("byol", "byol_prime")
        """The two augmentation pipelines ([0]: BYOL's)."""
        temperature: Annotated[float, Field(gt=0)] = 0.1
        """Softmax temperature tau ([0]: 0.1)."""
        queue_size: Annotated[int, Field(gt=0)] = 4096
        """Rows K of the support set ([0]: 98304)."""
        proj_hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Width of the projector's hidden layers ([0]: 2048)."""
        proj_dim: Annotated[int, Field(gt=0)] = 128
        """Embedding width, of the projector, the predictor and the queue ([0]: 256)."""
        pred_hidden_dim: Annotated[int, Field(gt=0)] = 512
        """Hidden width of the predictor ([0]: 4096)."""

    params: Params
    queue: Tensor
    queue_ptr: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        h, d = params.proj_hidden_dim, params.proj_dim
        self.projector = mlp([backbone.feature_dim, h, h, d], last_bn=True)
        self.predictor = mlp([d, params.pred_hidden_dim, d])
        self.register_buffer("queue", F.normalize(torch.randn(params.queue_size, d), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending: Tensor | None = None

    def loss(self, batch: Batch) -> Tensor:
        """Symmetrised NNCLR loss of the two views (each (B, C, H, W)); the queue is read, not written."""
        z1, z2 = (self.projector(self.backbone(v)) for v in batch.views)
        p1, p2 = gather(self.predictor(z1)), gather(self.predictor(z2))
        nn1, nn2 = nearest_neighbours(z1, self.queue), nearest_neighbours(z2, self.queue)
        offset, t = rank() * z1.shape[0], self.params.temperature
        self._pending = gather(F.normalize(z1.detach().float(), dim=1))
        return (nnclr_loss(nn1, p2, t, offset) + nnclr_loss(nn2, p1, t, offset)) / 2

    @torch.no_grad()
    def enqueue(self, z: Tensor) -> None:
        """Write unit embeddings (N, proj_dim) over the oldest queue rows, wrapping around."""
        size = self.queue.shape[0]
        z = z[-size:]
        idx = (int(self.queue_ptr) + torch.arange(z.shape[0], device=z.device)) % size
        self.queue[idx] = z.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + z.shape[0]) % size)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Enqueue this step's (gathered) first-view projections."""
        if self._pending is not None:
            self.enqueue(self._pending)
            self._pending = None


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(NNCLR)
