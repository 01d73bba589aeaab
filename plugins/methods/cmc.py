"""CMC: Contrastive Multiview Coding between the L and ab channels of the L*a*b* colour space.

- [0] Tian, Krishnan, Isola. Contrastive Multiview Coding. ECCV 2020, arXiv:1906.05849.

One crop of each image is converted to L*a*b* (:mod:`ssl_bench.harness.kit.augment.lab`) and split into its
lightness L and its colour ab, the two views of [0] (Sec. 4.1, "L" and "ab"). Each view has its own
encoder and projection head; the loss is [0]'s two-way contrastive loss, eq. 3-4: every L embedding
picks its own image's ab embedding out of the candidates (L -> ab), and every ab embedding its L
(ab -> L), with dot products of L2-normalised embeddings over a temperature of 0.07. Candidates are
the other view's embeddings of the global batch (gathered through :func:`harness.gather`), or, with
``negatives = "bank"``, those plus ``bank_negatives`` rows sampled from a memory bank of the other
view (one L2-normalised row per training image, keyed on ``batch.indices``, updated as
``normalize(m * row + (1 - m) * z)`` with m = 0.5 as [0]'s code; a registered buffer, so it is
checkpointed).

Encoders and inputs. Only ``self.backbone`` is saved and evaluated, on normalised RGB (B, 3, H, W),
so it stays the registered backbone and encodes the L view; the ab encoder is a second, freshly
initialised instance of the same class. Both take 3 channels:
    - L (``l_input = "grey"``, default): the crop with its colour removed, i.e. L* with a* = b* = 0
      mapped back to sRGB (a grey image, three equal channels) and normalised like every
      evaluation input, so the backbone trains on the same input distribution it is probed on
      minus colour. ``"l"`` feeds L* scaled to [-1, 1] in all three channels instead.
    - ab: (a*, b*, 0) / 110, scaled into about [-1, 1] (:data:`~ssl_bench.harness.kit.augment.lab.AB_SCALE`).
The views arrive normalised with ImageNet statistics; they are mapped back to RGB in [0, 1]
(:func:`ssl_bench.harness.kit.pixels.denormalize`) before the conversion.

Defaults and why: temperature 0.07 as [0]; in-batch negatives (a 10k-image CIFAR subset is seen
only a few times in a short run, so bank rows would stay stale); 2-layer MLP heads to 128 dims
(``head = "linear"`` is [0]'s linear embedding); views ``("crop_flip",)``: one random resized crop
and flip whose colour is intact (``simclr``'s jitter and grayscale would corrupt the ab view, and
[0] also takes both views from one crop); ``l_input = "grey"``. Short runs set ``temperature =
0.2``, which learns faster than 0.07 in a few epochs; the backbone trained on grey L views does not
lose from being evaluated on RGB.

Deviations from [0]:
    - [0] uses half-width encoders with 1 (L) and 2 (ab) input channels and evaluates the
      concatenation of both encoders' features; here both are full backbones with 3-channel inputs
      and only the L encoder (``self.backbone``) is evaluated, on colour images it never saw.
    - In bank mode the positive is the other view's current embedding (with gradient) and the bank
      gives only negatives, sampled once per step for the whole batch; [0] takes the positive from
      the bank as well and samples K = 16384 negatives per anchor with an NCE or softmax loss.
    - The loss is the sum of the two directions as [0] eq. 4, averaged over anchors.
    - The optimizer and schedule are chosen by the benchmark file.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, BenchError, Method, MethodParams, Register, gather, hookimpl, normalize
from ssl_bench.harness.kit.augment.lab import lab_to_rgb, merge_lab, rgb_to_l_ab
from ssl_bench.harness.kit.heads import mlp_head
from ssl_bench.harness.kit.losses import info_nce
from ssl_bench.harness.kit.momentum import ema_rows
from ssl_bench.harness.kit.pixels import denormalize


def lab_views(x: Tensor, l_input: Literal["grey", "l"] = "grey") -> tuple[Tensor, Tensor]:
    """The two 3-channel encoder inputs of a normalised RGB crop.

    Args:
        x: normalised RGB images, shape (B, 3, H, W).
        l_input: "grey" = L* as a normalised grey sRGB image; "l" = L* / 50 - 1 in all channels.

    Returns:
        The L input (B, 3, H, W) and the ab input (B, 3, H, W) = (a*, b*, 0) / 110.
    """
    with torch.autocast(x.device.type, enabled=False):  # colour maths in float32 under bf16 autocast
        light, ab = rgb_to_l_ab(denormalize(x.float()))
        if l_input == "grey":
            l_view = normalize(lab_to_rgb(merge_lab(light, torch.zeros_like(ab))))
        else:
            l_view = light.expand(-1, 3, -1, -1)
    return l_view.to(x.dtype), torch.cat([ab, torch.zeros_like(light)], dim=1).to(x.dtype)


def contrast(anchors: Tensor, candidates: Tensor, temperature: float, exclude: Tensor | None = None) -> Tensor:
    """Cross-entropy of each anchor picking candidate i (its positive) among all candidates.

    :func:`~ssl_bench.harness.kit.losses.info_nce` on cosine similarities.

    Args:
        anchors: shape (N, D); L2-normalised here.
        candidates: shape (M, D), M >= N, row i the positive of anchor i; L2-normalised here.
        temperature: softmax temperature (> 0).
        exclude: optional bool (N, M), True where a candidate must not count (an anchor's own bank row).

    Returns:
        Scalar loss, the mean over anchors.
    """
    return info_nce(F.normalize(anchors.float(), dim=1), F.normalize(candidates.float(), dim=1), temperature,
                    exclude=exclude)


def cmc_terms(z_l: Tensor, z_ab: Tensor, temperature: float, bank_l: Tensor | None = None,
              bank_ab: Tensor | None = None, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The two directions of [0] eq. 4: (L -> ab, ab -> L).

    Args:
        z_l, z_ab: embeddings of the two views, shape (N, D); row i of both is one image.
        temperature: softmax temperature.
        bank_l, bank_ab: optional extra negatives (K, D) of each view (from a memory bank).
        exclude: optional bool (N, K), True where bank row k is anchor i's own image.

    Returns:
        L anchors against ab candidates, and ab anchors against L candidates.
    """
    def side(anchor: Tensor, other: Tensor, bank: Tensor | None) -> Tensor:
        if bank is None:
            return contrast(anchor, other, temperature)
        mask = None if exclude is None else F.pad(exclude, (other.shape[0], 0))
        return contrast(anchor, torch.cat([other.float(), bank.float()]), temperature, mask)

    return side(z_l, z_ab, bank_ab), side(z_ab, z_l, bank_l)


class CMC(Method):
    """CMC [0]: L and ab encoders, two-way contrastive loss at temperature 0.07."""

    name = "cmc"

    class Params(MethodParams):
        views: tuple[str] = ("crop_flip",)
        """One pipeline making an RGB crop with its colour intact; L and ab both come from it."""
        temperature: Annotated[float, Field(gt=0)] = 0.07
        """Softmax temperature ([0]: 0.07)."""
        negatives: Literal["batch", "bank"] = "batch"
        """Where negatives come from: the global batch, or the batch plus a memory bank ([0])."""
        bank_negatives: Annotated[int, Field(gt=0)] = 4096
        """Bank rows sampled as extra negatives per step ([0]: 16384); bank mode only."""
        bank_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.5
        """Memory bank update: row <- normalize(m * row + (1 - m) * z) ([0]'s code: 0.5)."""
        head: Literal["linear", "mlp"] = "mlp"
        """Projection head per view: one linear layer ([0]) or Linear-BN-ReLU-Linear."""
        proj_dim: Annotated[int, Field(gt=0)] = 128
        """Embedding dimension ([0]: 128)."""
        l_input: Literal["grey", "l"] = "grey"
        """How L enters the 3-channel backbone: a normalised grey image, or L* scaled, repeated."""

    params: Params
    bank_l: Tensor
    bank_ab: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int, num_samples: int | None = None) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        self.ab_encoder = type(backbone)(backbone.params)
        self.head_l, self.head_ab = (self._head(backbone.feature_dim) for _ in range(2))
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None
        if params.negatives == "bank":
            if not num_samples:
                raise BenchError("cmc: negatives = 'bank' needs the size of the pretraining set (num_samples)")
            for name in ("bank_l", "bank_ab"):
                self.register_buffer(name, F.normalize(torch.randn(num_samples, params.proj_dim), dim=1))

    def _head(self, dim: int) -> nn.Module:
        if self.params.head == "linear":
            return nn.Linear(dim, self.params.proj_dim)
        return mlp_head(dim, dim, self.params.proj_dim)

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings (B, proj_dim) of the L and ab views of normalised RGB crops (B, 3, H, W)."""
        l_view, ab_view = lab_views(x, self.params.l_input)
        return self.head_l(self.backbone(l_view)), self.head_ab(self.ab_encoder(ab_view))

    def loss(self, batch: Batch) -> Tensor:
        """Sum of the L -> ab and ab -> L contrastive losses of the batch's single view."""
        z_l, z_ab = (gather(z) for z in self.embed(batch.views[0]))
        if self.params.negatives == "batch":
            l_to_ab, ab_to_l = cmc_terms(z_l, z_ab, self.params.temperature)
            return l_to_ab + ab_to_l
        if batch.indices is None:
            raise BenchError("cmc: negatives = 'bank' needs batch.indices")
        idx = gather(batch.indices.to(z_l.device))
        sample = torch.randint(0, self.bank_l.shape[0], (self.params.bank_negatives,), device=z_l.device)
        exclude = idx[:, None] == sample[None, :]
        terms = cmc_terms(z_l, z_ab, self.params.temperature, self.bank_l[sample], self.bank_ab[sample], exclude)
        self._pending = (idx, z_l.detach(), z_ab.detach())
        return terms[0] + terms[1]

    @torch.no_grad()
    def update_bank(self, idx: Tensor, z_l: Tensor, z_ab: Tensor) -> None:
        """Move the bank rows ``idx`` (N,) towards the new embeddings (N, proj_dim), then renormalise."""
        m = self.params.bank_momentum
        for bank, z in ((self.bank_l, z_l), (self.bank_ab, z_ab)):
            bank[idx] = ema_rows(bank[idx].float(), z.float(), m).to(bank.dtype)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Write this step's embeddings into the memory banks (bank mode)."""
        if self._pending is not None:
            self.update_bank(*self._pending)
            self._pending = None


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(CMC)
