"""PIRL: representations invariant to a jigsaw transform, contrasted against a memory bank.

- [0] Misra, van der Maaten. Self-Supervised Learning of Pretext-Invariant Representations.
  CVPR 2020, arXiv:1912.01991.
- [1] Wu, Xiong, Yu, Lin. Unsupervised Feature Learning via Non-Parametric Instance Discrimination.
  CVPR 2018, arXiv:1805.01978 (the memory bank and the NCE estimator [0] builds on).

The image view v_I goes through the backbone and a linear head f (Sec. 3 of [0]). The transformed
view v_I^t is a 3 x 3 jigsaw cut from the second view (:func:`ssl_bench.harness.kit.augment.tile_grid`: a tile at a
random place in each cell), each tile colour-jittered on its own, the tiles in a random order; every
tile goes through the backbone and a shared linear projection, and the 9 projections, concatenated in
the shuffled order, through a linear layer: g(v_I^t). A memory bank holds, for every image of the
pretraining set (``batch.indices``), the L2-normalised EMA m_I of f(v_I), updated after each
optimizer step (``m <- normalise(0.5 m + 0.5 f)``, [0]). N negatives are random bank rows. Loss, eq. 5:

    L = lambda * L_NCE(m_I, g(v_I^t)) + (1 - lambda) * L_NCE(m_I, f(v_I))

Defaults and why: in-batch negatives (``negatives = "batch"``, below), as CMC's plugin does: in a
short run every bank row is refreshed only once an epoch, so the bank's rows are stale. Lambda 0.5,
bank momentum 0.5, 128-d embeddings as [0]; 4096 bank negatives (32000 in [0]: CIFAR-scale sets have
10-50k images); views ("simclr", "crop_flip"): v_I with [0]'s image augmentation, the jigsaw cut from
a separately cropped and flipped copy, colour jitter per tile (as [0]'s public code does).
Temperature 0.2 and an MLP head (not [0]'s 0.07 and linear heads): they learn better in short
CIFAR-10 runs, as does SGD lr ~0.06 rather than 0.3. Memory-bank methods need more epochs than a
4-epoch budget: each row is refreshed once per epoch.

Deviations from [0]:
    - ``negatives = "batch"`` (default): no memory bank; eq. 5 becomes the symmetric InfoNCE between
      the two branches, lambda * L(g(v_I^t) -> f(v_I)) + (1 - lambda) * L(f(v_I) -> g(v_I^t)), each
      image's positive the other branch of itself and its negatives the other images of the (global)
      batch, with gradients through both sides. ``"bank"`` is [0]'s form, and what the rest of this
      list describes.
    - ``objective = "infonce"`` (default) replaces [0]'s binary NCE by the softmax InfoNCE over the
      positive and the N negatives (as MoCo, CMC): it needs no estimate of the partition function and
      is the form later contrastive methods settled on; ``"nce"`` is [0]'s eq. 3-4, with the partition
      function estimated on each batch's negatives (detached) rather than fixed after the first batch
      (tested against a loop, not benchmarked here).
    - Temperature 0.2 and MLP heads by default (``temperature = 0.07, head = "linear"`` is [0]).
    - One set of N negatives is shared by the whole batch (one (N, D) matmul, not (B, N, D) gathers);
      a sample's own bank row is masked out of its negatives (D_N is a subset of D minus {I}).
    - ``fresh_positive`` (default): the positive m_I is the bank row after this step's EMA with the
      detached f(v_I), normalise(0.5 m_I + 0.5 f(v_I)); [0] (``False``) uses the row before it, one
      epoch stale.
    - Bank rows not yet written (the first epoch) take the sample's own detached f(v_I) as m_I, and
      their first update writes f(v_I) instead of mixing it with the random initial row.
    - The tile pass normalises by its own batch statistics but does not update batch-norm running
      statistics (``tile_bn_stats = False``): evaluation sees whole images, not a mix of 8 px tiles.
    - 8 px tiles at 32 px (the 64/75 tile-to-cell ratio of the jigsaw paper), upsampled by
      ``tile_resize_px`` when set; [0] cuts 64 px tiles from 255 px crops.
    - Random draws come from a generator seeded by a counter buffer (resumed runs draw what the
      interrupted one would have); tiles differ per process, negatives do not (the banks are equal).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, BenchError, Method, MethodParams, Register, gather, hookimpl, rank
from ssl_bench.harness.kit.augment import permute_tiles, random_permutations, tile_grid
from ssl_bench.harness.kit.draws import draw_seed, new_draws, next_generator
from ssl_bench.harness.kit.heads import mlp_head
from ssl_bench.harness.kit.losses import info_nce
from ssl_bench.harness.kit.momentum import ema_rows
from ssl_bench.harness.kit.pixels import jitter_normalized

Objective = Literal["infonce", "nce"]


def pirl_nce(query: Tensor, positive: Tensor, negatives: Tensor, temperature: float,
             objective: Objective = "infonce", neg_mask: Tensor | None = None) -> Tensor:
    """L_NCE of [0] for each query against its positive bank row and N shared negative rows.

    ``"nce"``: eq. 3-4 of [0], h(s) = e^(s/t) / (e^(s/t) + N * Z), Z the mean of e^(s/t) over the
    batch's negatives (detached); loss = -log h(s+) - sum_neg log(1 - h(s-)). ``"infonce"``:
    -log(e^(s+/t) / (e^(s+/t) + sum_neg e^(s-/t))), :func:`~ssl_bench.harness.kit.losses.info_nce`
    with the positives as ``positive_keys``. s is the cosine similarity.

    Args:
        query: embeddings, shape (B, D); L2-normalised here.
        positive: bank rows m_I, shape (B, D), no gradient expected; L2-normalised here.
        negatives: bank rows, shape (N, D), L2-normalised here.
        temperature: t > 0.
        objective: ``"infonce"`` or ``"nce"``.
        neg_mask: bool (B, N), True where a negative is kept; None keeps all.

    Returns:
        Scalar loss, the mean over the B queries.
    """
    q = F.normalize(query.float(), dim=1)
    m, negs = F.normalize(positive.float(), dim=1), F.normalize(negatives.float(), dim=1)
    if objective == "infonce":
        return info_nce(q, negs, temperature, positive_keys=m, exclude=None if neg_mask is None else ~neg_mask)
    pos = (q * m).sum(1) / temperature  # (B,)
    neg = q @ negs.T / temperature  # (B, N)
    keep = torch.ones_like(neg, dtype=torch.bool) if neg_mask is None else neg_mask
    kept = neg.detach()[keep]
    log_c = (torch.logsumexp(kept, 0) - torch.log(kept.new_tensor(kept.numel())) + torch.log(
        kept.new_tensor(neg.shape[1]))) if kept.numel() else neg.new_zeros(())
    return (F.softplus(log_c - pos) + (F.softplus(neg - log_c) * keep).sum(1)).mean()


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Batch norm layers of ``module`` normalise by batch statistics but leave running ones alone."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0  # running <- (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


class PIRL(Method):
    """PIRL [0]: f(v_I) and g(jigsaw(v_I)) pulled to the bank row m_I, pushed from other rows."""

    name = "pirl"

    class Params(MethodParams):
        views: tuple[str, str] = ("simclr", "crop_flip")
        """Pipelines of v_I and of the image the jigsaw tiles are cut from."""
        temperature: Annotated[float, Field(gt=0)] = 0.2
        """Temperature t of the similarity ([0]: 0.07; 0.2 learns better in short CIFAR runs)."""
        loss_lambda: Annotated[float, Field(ge=0, le=1)] = 0.5
        """Weight lambda of the jigsaw term; 1 - lambda weights the f(v_I) term ([0]: 0.5)."""
        objective: Objective = "infonce"
        """"infonce" (softmax, default) or "nce" ([0]'s binary noise-contrastive estimator)."""
        num_negatives: Annotated[int, Field(gt=0)] = 4096
        """Negatives N drawn from the bank per step ([0]: 32000); at most the set size."""
        bank_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.5
        """EMA weight of the old bank row ([0]: 0.5)."""
        proj_dim: Annotated[int, Field(gt=0)] = 128
        """Embedding dimension of f, g and the bank ([0]: 128)."""
        grid: Annotated[int, Field(ge=2, le=4)] = 3
        """Jigsaw cells per side ([0]: 3)."""
        tile_resize_px: Annotated[int, Field(gt=0)] | None = None
        """Side tiles are upsampled to (bilinear) before the backbone; None keeps their cut size."""
        jitter_strength: Annotated[float, Field(ge=0, le=1)] = 0.4
        """Per-tile colour jitter strength (hue a quarter of it); 0 = none."""
        jitter_p: Annotated[float, Field(ge=0, le=1)] = 0.8
        """Probability of jittering a tile."""
        grayscale_p: Annotated[float, Field(ge=0, le=1)] = 0.2
        """Probability of turning a tile grey."""
        head: Literal["linear", "mlp"] = "mlp"
        """f and the per-tile projection: one linear layer ([0]) or Linear-ReLU-Linear (hidden = feature_dim)."""
        fresh_positive: bool = True
        """Positive m_I = the bank row after this step's EMA with f(v_I) (detached); False: before ([0])."""
        tile_bn_stats: bool = False
        """Let the tile pass update batch-norm running statistics (False: only whole images do)."""
        negatives: Literal["bank", "batch"] = "batch"
        """"batch" (default): g(v_I^t) and f(v_I) contrasted with each other over the global batch, no
        bank (lambda weights the jigsaw -> image direction); "bank": eq. 5 against the memory bank ([0])."""

    params: Params
    bank: Tensor
    seen: Tensor
    draws: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int, num_samples: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        d, n = params.proj_dim, params.grid**2
        c = backbone.feature_dim
        self.f = nn.Linear(c, d) if params.head == "linear" else mlp_head(c, c, d, batch_norm=False)
        self.tile_proj = nn.Linear(c, d) if params.head == "linear" else mlp_head(c, c, d, batch_norm=False)
        self.g = nn.Linear(n * d, d)
        rows = num_samples if params.negatives == "bank" else 0  # batch negatives: no bank to hold
        self.register_buffer("bank", F.normalize(torch.randn(rows, d), dim=1))
        self.register_buffer("seen", torch.zeros(rows, dtype=torch.bool))
        # (seed, loss calls so far): the seed comes from the global RNG at build time.
        self.register_buffer("draws", new_draws())
        self._pending: tuple[Tensor, Tensor] | None = None

    def jigsaw(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Cut, jitter and shuffle tiles of normalised images (B, C, H, W) -> (B, grid^2, C, t, t)."""
        p = self.params
        tiles = tile_grid(images, p.grid, generator=generator)
        if p.jitter_strength > 0 or p.grayscale_p > 0:  # each tile on its own; both ops draw even at 0
            flat = jitter_normalized(tiles.flatten(0, 1), p.jitter_strength, p.jitter_p,
                                     grayscale_p=p.grayscale_p, generator=generator)
            tiles = flat.reshape(tiles.shape)
        perms = random_permutations(len(tiles), p.grid**2, generator=generator)
        return permute_tiles(tiles, perms)

    def embed_tiles(self, tiles: Tensor) -> Tensor:
        """g(v_I^t): tiles (B, N, C, t, t) -> backbone per tile -> shared projection -> concat -> (B, D)."""
        b, n = tiles.shape[:2]
        x = tiles.flatten(0, 1)
        if self.params.tile_resize_px is not None:
            x = F.interpolate(x, size=self.params.tile_resize_px, mode="bilinear", align_corners=False)
        if self.params.tile_bn_stats:
            h = self.backbone(x)
        else:
            with frozen_bn_stats(self.backbone):
                h = self.backbone(x)
        z: Tensor = self.g(self.tile_proj(h).reshape(b, n * self.params.proj_dim))
        return z

    def negatives(self, count: int, device: torch.device) -> Tensor:
        """Indices (min(N, set size),) of distinct random bank rows for the draw number ``count``."""
        g = torch.Generator().manual_seed(draw_seed(self.draws, count))
        return torch.randperm(len(self.bank), generator=g)[: self.params.num_negatives].to(device)

    def loss(self, batch: Batch) -> Tensor:
        """Eq. 5 of [0] on views (v_I, source of v_I^t), each (B, C, H, W), keyed by ``batch.indices``."""
        p, (x, x_t) = self.params, batch.views
        count = int(self.draws[1])
        g = next_generator(self.draws, x_t.device, salt=104729 * rank())
        f = self.f(self.backbone(x))  # (B, D)
        z_t = self.embed_tiles(self.jigsaw(x_t, g))  # (B, D)
        if p.negatives == "batch":
            f_all, z_all = gather(f), gather(z_t)  # (world * B, D), with gradients
            others = ~torch.eye(len(f_all), dtype=torch.bool, device=f_all.device)  # image i's negatives: the rest
            return (p.loss_lambda * pirl_nce(z_all, f_all, f_all, p.temperature, p.objective, others)
                    + (1 - p.loss_lambda) * pirl_nce(f_all, z_all, z_all, p.temperature, p.objective, others))
        if batch.indices is None:
            raise BenchError("pirl needs batch.indices: its memory bank keys on sample positions")
        idx = batch.indices.to(self.bank.device)
        f_n = F.normalize(f.detach().float(), dim=1)
        m = self.updated_rows(idx, f_n) if p.fresh_positive else torch.where(self.seen[idx, None], self.bank[idx], f_n)
        neg_idx = self.negatives(count, idx.device)
        mask = neg_idx[None, :] != idx[:, None]
        negs = self.bank[neg_idx]
        loss = p.loss_lambda * pirl_nce(z_t, m, negs, p.temperature, p.objective, mask)
        loss = loss + (1 - p.loss_lambda) * pirl_nce(f, m, negs, p.temperature, p.objective, mask)
        self._pending = (gather(idx), gather(f_n))
        return loss

    @torch.no_grad()
    def updated_rows(self, idx: Tensor, feats: Tensor) -> Tensor:
        """normalise(mu * m + (1 - mu) * f) of rows ``idx`` (K,) and features (K, D); unseen rows: f. (K, D)."""
        mixed = ema_rows(self.bank[idx], feats, self.params.bank_momentum)
        return torch.where(self.seen[idx, None], mixed, F.normalize(feats.to(self.bank.dtype), dim=1))

    @torch.no_grad()
    def update_bank(self, idx: Tensor, feats: Tensor) -> None:
        """Write :meth:`updated_rows` into the bank: the EMA update of [0]."""
        self.bank[idx] = self.updated_rows(idx, feats)
        self.seen[idx] = True

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Write this step's (gathered) f(v_I) into the bank, after the optimizer step."""
        if self._pending is not None:
            self.update_bank(*self._pending)
        self._pending = None


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(PIRL)
