"""CPC v2: predict the embeddings of patches below from a context of the rows above (InfoNCE).

- [0] Hénaff, Srinivas, De Fauw, Razavi, Doersch, Eslami, van den Oord. Data-Efficient Image
  Recognition with Contrastive Predictive Coding. ICML 2020, arXiv:1905.09272.
- [1] van den Oord, Li, Vinyals. Representation Learning with Contrastive Predictive Coding, 2018,
  arXiv:1807.03748 (CPC v1: the patch grid, the autoregressive context, InfoNCE).

Each view is cut into an overlapping ``G x G`` grid of square patches; every patch goes through
``self.backbone`` (so the evaluated encoder is the one that learned), giving a feature grid
``z`` (B, D, G, G). A context network, causal over rows (each convolution sees only its own row and
those above), maps ``z`` to contexts ``c`` (B, C, G, G), ``c[i, j]`` a function of rows ``<= i`` only.
Targets are a linear map of ``z``; a linear ``W_k`` per offset ``k`` predicts the target of patch
``(i + k, j)`` from ``c[i, j]``. InfoNCE scores each prediction against its true target (positive)
and every other target of the (global) batch, every position of every image (negatives). With
``directions`` 2 or 4 the grid is also turned by 180 (and 90, 270) degrees and the same task is
solved on it (bottom-up, and across columns), as [0] predicts in several directions.

Defaults and why (scaled from [0]'s 7x7 grid of 64 px patches at stride 32 on 224 px images), the
best of the settings tried on the 4-epoch CIFAR-10 check (convnet_small, kNN and linear probes of
whole 32 px images):
    20 px patches at stride 6: a 3x3 grid of patches near the image size, entering the backbone at
    their own size (``patch_resize_px`` None; upsampling to 32 px costs 2.5x the compute). Offsets
    1 and 2, every offset the grid allows. Per-patch colour jitter 0.4 and grayscale 0.2, the
    per-patch colour augmentation of [0], which also hides the pixels a predicted patch shares
    with its context's patch ([0, 1] instead skip the overlapping row). Cosine similarities at
    temperature 0.2: [0]'s raw dot products (``temperature`` None, predictions scaled by
    ``emb_scale`` 0.1, targets of ``target_dim`` 64, as [0]'s pseudo-code) learned far more
    slowly and gave kNN features below random init at this budget; with 16 px patches at stride
    8 and offset 2 only (no shared pixels, [0]'s rule) they did too. Context width 128, 2 residual
    blocks (the PixelCNN of [0] is far wider and deeper; the grid is small). ``directions`` 4:
    a 3x3 grid gives few predictions per direction. Views ``("crop_flip",)``: [0] crops and flips
    the image, then augments patches.

Deviations from [0]:
    - The backbone's own normalisation is used as is (batch norm in ``convnet_small`` and the
      ResNets); [0] replaces it by layer norm in the patch encoder, because batch statistics over
      patches of one image leak information between them. The context network uses layer norm
      (over channels at each position, which keeps it causal), as [0] recommends.
    - Cosine similarity with a temperature by default (raw dot products with ``temperature`` None).
    - Per-patch augmentation is colour jitter and grayscale only (no spatial jitter of patches).
    - The context network is a small stack of residual blocks of row-causal convolutions with
      layer norm, not [0]'s PixelCNN; one network and one set of ``W_k`` serve every direction.
    - Evaluation uses the backbone on whole images (the harness's protocol), not [0]'s pooled
      grid of patch features.
    - The optimizer and schedule are chosen by the benchmark file (Adam in [0]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, Batch, Method, MethodParams, Register, gather, hookimpl, rank
from ssl_bench.harness.kit.draws import new_draws, next_generator
from ssl_bench.harness.kit.losses import info_nce
from ssl_bench.harness.kit.pixels import denormalize as denormalize  # re-export: it was defined here
from ssl_bench.harness.kit.pixels import jitter_normalized


def patch_grid(images: Tensor, patch_px: int, stride_px: int) -> Tensor:
    """Cut each image into an overlapping grid of square patches, row-major.

    Args:
        images: (B, C, H, W) with H = W >= ``patch_px``.
        patch_px: patch side.
        stride_px: step between neighbouring patches.

    Returns:
        patches (B, G, G, C, patch_px, patch_px), G = (H - patch_px) // stride_px + 1; patch
        ``[b, i, j]`` starts at row ``i * stride_px`` and column ``j * stride_px``.
    """
    if images.shape[-1] != images.shape[-2] or images.shape[-1] < patch_px:
        raise ValueError(f"views must be square and at least {patch_px} px, got {tuple(images.shape[-2:])}")
    x = images.unfold(2, patch_px, stride_px).unfold(3, patch_px, stride_px)  # (B, C, G, G, p, p)
    return x.permute(0, 2, 3, 1, 4, 5)


def cpc_infonce(predictions: Sequence[Tensor], targets: Tensor, offsets: Sequence[int],
                temperature: float | None = None) -> Tensor:
    """InfoNCE of [0, 1] over a grid: every prediction against every patch embedding of the batch.

    :func:`~ssl_bench.harness.kit.losses.info_nce` with the positives' indices into the gathered targets.

    ``predictions[n][b, :, i, j]`` predicts ``targets[b, :, i + offsets[n], j]``; the negatives are all
    other entries of ``targets`` (every position of every image), gathered over processes. Scores
    are raw dot products, as in [0, 1], or cosine similarities over ``temperature`` when it is set.

    Args:
        predictions: one tensor per offset k, of shape (B, D, G - k, G) (predictions from rows 0..G-1-k).
        targets: target embeddings, shape (B, D, G, G).
        offsets: the offset k of each entry of ``predictions``, each in [1, G).
        temperature: None for raw dot products; else L2-normalise both sides and divide by it.

    Returns:
        Scalar loss, the mean over all B * sum_k (G - k) * G predictions.
    """
    b, d, g, _ = targets.shape
    bank = gather(targets.permute(0, 2, 3, 1).reshape(-1, d).float())  # (world * B * G * G, D)
    index = torch.arange(b * g * g, device=targets.device).view(b, g, g) + rank() * b * g * g
    preds, positives = [], []
    for k, pred in zip(offsets, predictions, strict=True):
        preds.append(pred.permute(0, 2, 3, 1).reshape(-1, d))
        positives.append(index[:, k:, :].reshape(-1))
    queries = torch.cat(preds).float()
    if temperature is not None:  # the temperature scales the queries, before the dot products
        queries, bank = F.normalize(queries, dim=1) / temperature, F.normalize(bank, dim=1)
    return info_nce(queries, bank, None, positives=torch.cat(positives))


class CausalConv(nn.Conv2d):
    """A convolution whose output row i sees input rows i - kernel + 1 .. i only (zero-padded above).

    Shape: (B, C_in, G, G) -> (B, C_out, G, G); columns are padded on both sides.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__(c_in, c_out, kernel)
        self.pads = (kernel // 2, kernel // 2, kernel - 1, 0)  # left, right, top, bottom

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.pads))


class ChannelNorm(nn.LayerNorm):
    """Layer norm over the channels at each grid position (keeps causality). Shape: (B, C, H, W) kept."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ContextBlock(nn.Module):
    """Pre-activation residual block: LN-ReLU-causal conv-LN-ReLU-1x1 conv, plus the input."""

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ChannelNorm(width), nn.ReLU(), CausalConv(width, width, kernel),
                                  ChannelNorm(width), nn.ReLU(), nn.Conv2d(width, width, 1))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x + self.body(x)
        return out


def context_network(in_dim: int, width: int, blocks: int, kernel: int) -> nn.Sequential:
    """Row-causal context network: 1x1 conv, residual blocks, LN-ReLU. Shape: (B, in_dim, G, G) -> (B, width, G, G)."""
    return nn.Sequential(nn.Conv2d(in_dim, width, 1), *(ContextBlock(width, kernel) for _ in range(blocks)),
                         ChannelNorm(width), nn.ReLU())


class CPCv2(Method):
    """CPC v2 [0]: a row-causal context over patch embeddings predicts the rows below, InfoNCE."""

    name = "cpc_v2"

    class Params(MethodParams):
        views: tuple[str] = ("crop_flip",)
        """The pipeline of the images the patches are cut from."""
        patch_px: Annotated[int, Field(gt=0)] = 20
        """Patch side in pixels of the view (64 of 224 px in [0])."""
        stride_px: Annotated[int, Field(gt=0)] = 6
        """Step between patches (32 in [0], half the patch side)."""
        patch_resize_px: Annotated[int, Field(gt=0)] | None = None
        """Side patches are resized to (bilinear) before the backbone; None keeps ``patch_px``."""
        min_offset: Annotated[int, Field(ge=1)] = 1
        """Smallest offset k of a predicted row (rows closer than patch / stride share pixels)."""
        max_offset: Annotated[int, Field(ge=1)] = 2
        """Largest offset k of a predicted row; must be below the grid side."""
        directions: Literal[1, 2, 4] = 4
        """1: top-down only; 2: also bottom-up; 4: also across columns both ways ([0] uses several)."""
        target_dim: Annotated[int, Field(gt=0)] = 64
        """Dimension of the targets (a linear map of the patch features) and predictions (64 in [0])."""
        emb_scale: Annotated[float, Field(gt=0)] = 0.1
        """Factor on the predictions before raw dot products (0.1 in [0]); no effect with a temperature."""
        temperature: Annotated[float, Field(gt=0)] | None = 0.2
        """None: raw dot products as [0]; else cosine similarities over this temperature."""
        context_dim: Annotated[int, Field(gt=0)] = 128
        """Channels of the context network."""
        context_blocks: Annotated[int, Field(ge=0)] = 2
        """Residual blocks of the context network."""
        context_kernel: Annotated[int, Field(ge=1)] = 3
        """Kernel side of the causal convolutions (rows above plus own row; columns both sides)."""
        patch_jitter_strength: Annotated[float, Field(ge=0, le=1)] = 0.4
        """Per-patch colour jitter strength (brightness, contrast, saturation; hue a quarter); 0 = none."""
        patch_grayscale_p: Annotated[float, Field(ge=0, le=1)] = 0.2
        """Probability of turning a patch grey (the colour dropping of [0]); 0 = never."""

    params: Params
    draws: Tensor

    def __init__(self, params: Params, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(params, backbone, num_classes=num_classes)
        p = params
        if p.min_offset > p.max_offset:
            raise ValueError(f"min_offset {p.min_offset} > max_offset {p.max_offset}")
        self.offsets = tuple(range(p.min_offset, p.max_offset + 1))
        self.context = context_network(backbone.feature_dim, p.context_dim, p.context_blocks, p.context_kernel)
        self.target = nn.Linear(backbone.feature_dim, p.target_dim)
        self.predictors = nn.ModuleList(nn.Linear(p.context_dim, p.target_dim) for _ in self.offsets)
        self.register_buffer("draws", new_draws())

    def encode_patches(self, patches: Tensor) -> Tensor:
        """Backbone features of patches (B, G, G, C, p, p) -> feature grid (B, D, G, G)."""
        b, g = patches.shape[:2]
        x = patches.flatten(0, 2)
        s, gray = self.params.patch_jitter_strength, self.params.patch_grayscale_p
        if s > 0 or gray > 0:  # an op at 0 is skipped with its draws
            x = jitter_normalized(x, s if s > 0 else None, 0.8, grayscale_p=gray if gray > 0 else None,
                                  generator=next_generator(self.draws, x.device))
        if self.params.patch_resize_px is not None and self.params.patch_resize_px != x.shape[-1]:
            x = F.interpolate(x, size=self.params.patch_resize_px, mode="bilinear", align_corners=False)
        return self.backbone(x).reshape(b, g, g, -1).permute(0, 3, 1, 2)  # type: ignore[no-any-return]

    def predict(self, z: Tensor) -> list[Tensor]:
        """Row-causal contexts of ``z`` (B, D, G, G), then ``emb_scale * W_k c``: (B, target_dim, G - k, G) per k."""
        c = self.context(z).permute(0, 2, 3, 1)  # (B, G, G, C)
        g, scale = z.shape[-1], self.params.emb_scale
        return [scale * w(c[:, : g - k]).permute(0, 3, 1, 2) for k, w in zip(self.offsets, self.predictors)]

    def targets(self, z: Tensor) -> Tensor:
        """Linear map of the feature grid (B, D, G, G) to the target grid (B, target_dim, G, G)."""
        return self.target(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # type: ignore[no-any-return]

    def loss(self, batch: Batch) -> Tensor:
        """Mean InfoNCE over directions of the patch grid of the view (B, C, H, W)."""
        p = self.params
        z = self.encode_patches(patch_grid(batch.views[0], p.patch_px, p.stride_px))
        if p.max_offset >= z.shape[-1]:
            raise ValueError(f"max_offset {p.max_offset} needs a grid larger than {z.shape[-1]}x{z.shape[-1]}")
        turns = {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3)}[p.directions]
        losses = [cpc_infonce(self.predict(zr), self.targets(zr), self.offsets, p.temperature)
                  for zr in (torch.rot90(z, t, dims=(2, 3)) for t in turns)]
        return torch.stack(losses).mean()


@hookimpl
def bench_register_methods(register: Register) -> None:
    register(CPCv2)
