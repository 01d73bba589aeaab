"""`vit_tiny_cifar`: a small Vision Transformer for 32 px images, patch 4 (8 x 8 = 64 tokens + class token).

- [0] Dosovitskiy et al. An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale. ICLR
  2021, arXiv:2010.11929 (pre-norm blocks, class token, learned position embedding).
- [1] Touvron et al. Training data-efficient image transformers & distillation through attention (DeiT).
  ICML 2021, arXiv:2012.12877 (ViT-Tiny: width 192, 3 heads, 12 blocks).
- [2] Hassani et al. Escaping the Big Data Paradigm with Compact Transformers, 2021, arXiv:2104.05704
  (ViTs of 6-7 blocks with 4 px patches trained from scratch on CIFAR).

Images (B, 3, H, W) are cut into 4 px patches by a stride-4 convolution, a class token is prepended and
position embeddings added; pre-norm blocks (LayerNorm, multi-head self-attention, LayerNorm, GELU MLP
of 4x width) follow, then a final LayerNorm. The feature (B, 192) is the mean of the patch tokens (global
average pooling), or with ``pool = "cls"`` the class token's, as [0].

Defaults and why: ViT-Tiny's width 192 and 3 heads (head width 64) [1] with half its depth, 6 blocks:
at 65 tokens a block costs about 30 MMACs per image, so the 6 blocks cost about a third of a CIFAR-stem
ResNet-18's 0.56 GMACs, and [2] trains ViTs of this depth on CIFAR from scratch. Learned position
embeddings as [0, 1] (``sincos`` gives the fixed 2-D sine-cosine table of MAE and MoCo v3). Inputs of
another size work: the learned table is resized bicubically to the new grid (DINO's way), the fixed one
recomputed, and a side that is not a multiple of the patch (a 14 px local crop) is zero-padded on the
right and bottom (zero is the mean pixel of a normalised image). Mean pooling by default: the class token's
output is trained only by losses that read it (DINO, MoCo v3), never by MAE or SimMIM, whose encoder is this
backbone, and MAE and SimMIM (BEiT's ViT) fine-tune on the mean of the patch tokens too; one setting for every
method keeps their rows comparable.

Written here rather than through timm (optional here, ``timm:`` backbones): the built-in masked image
modelling methods need the parts (patch projection, positions, class token, blocks, final norm) under
names that do not move between timm releases, and its initial weights come from this file's draws.
MAE and SimMIM encode through :attr:`ViTTinyCifar.embed` and :meth:`ViTTinyCifar.encode`, so their encoder
is the module the evaluators probe. No dropout, no stochastic depth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import Backbone, BenchError, hookimpl
from ssl_bench.harness import Params as BaseParams


class IncompatibleBackboneError(BenchError):
    """A method was given a backbone it cannot use (a ViT-only method on a convnet): a benchmark-file mistake."""

    exit_code = 2


def require_vit(method: str, backbone: nn.Module) -> ViTTinyCifar:
    """``backbone`` when it is a :class:`ViTTinyCifar`; else :class:`IncompatibleBackboneError`, one line."""
    if not isinstance(backbone, ViTTinyCifar):
        name = getattr(backbone, "name", type(backbone).__name__)
        vit = ViTTinyCifar.name
        raise IncompatibleBackboneError(f"method '{method}' needs a vision transformer backbone ('{vit}'), got "
                                        f"'{name}': set backbone = {{ name = \"{vit}\" }} for this method")
    return backbone


def sincos_table(dim: int, rows: int, cols: int) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings (MAE, arXiv:2111.06377): half the width per axis.

    Returns:
        Shape: (rows * cols, dim), row-major; ``dim`` a multiple of 4.
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")
    parts = [f(pos.reshape(-1, 1) * omega) for pos in (r, c) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1).float()


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``. Shape: (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attn)
        out: Tensor = x + self.mlp(self.norm2(x))
        return out


class PatchEmbedding(nn.Module):
    """Patch projection, class token and position embeddings (stage 1 of the ViT)."""

    pos_embed: Tensor

    def __init__(self, patch_px: int, grid: int, dim: int, pos: Literal["learned", "sincos"]) -> None:
        super().__init__()
        self.patch_px, self.grid, self.learned = patch_px, grid, pos == "learned"
        self.proj = nn.Conv2d(3, dim, patch_px, stride=patch_px)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if self.learned:  # (1, 1 + N, D), drawn by init_weights
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        else:  # the class token's row is zero
            table = torch.cat([torch.zeros(1, dim), sincos_table(dim, grid, grid)]).unsqueeze(0)
            self.register_buffer("pos_embed", table, persistent=False)

    def pad(self, x: Tensor) -> Tensor:
        """Zero-pad (B, C, H, W) on the right and bottom to multiples of the patch side."""
        p = self.patch_px
        return F.pad(x, (0, -x.shape[-1] % p, 0, -x.shape[-2] % p))

    def patches(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch embeddings without positions, and the patch grid. Shape: (B, 3, H, W) -> (B, N, D), (h, w)."""
        t = self.proj(self.pad(x))
        return t.flatten(2).transpose(1, 2), (t.shape[-2], t.shape[-1])

    def positions(self, grid: tuple[int, int]) -> Tensor:
        """Position embeddings of the patches of a (h, w) grid. Shape: (1, h * w, D)."""
        table = self.pos_embed[:, 1:]
        if grid == (self.grid, self.grid):
            return table
        d = table.shape[-1]
        if not self.learned:
            return sincos_table(d, *grid).to(table).unsqueeze(0)
        square = table.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        return F.interpolate(square, size=grid, mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)

    def cls(self, batch: int) -> Tensor:
        """The class token with its position embedding. Shape: (batch, 1, D)."""
        return (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)

    def forward(self, x: Tensor) -> Tensor:
        """Class token and positioned patch tokens. Shape: (B, 3, H, W) -> (B, 1 + N, D)."""
        t, grid = self.patches(x)
        return torch.cat([self.cls(t.shape[0]), t + self.positions(grid)], dim=1)


class ViTTinyCifar(Backbone):
    """ViT for 32 px images [0]: 4 px patches, width 192, 3 heads, 6 blocks, mean-pooled. (B, 3, H, W) -> (B, 192)."""

    name: ClassVar[str] = "vit_tiny_cifar"

    class Params(BaseParams):
        patch_px: Annotated[int, Field(gt=0)] = 4
        """Side of a patch in pixels (4: 64 patches at 32 px; [0] uses 16 at 224 px)."""
        image_px: Annotated[int, Field(gt=0)] = 32
        """Image side the position table is made for; other sizes resize it."""
        width: Annotated[int, Field(gt=0)] = 192
        """Token width D (ViT-Tiny [1]: 192)."""
        depth: Annotated[int, Field(gt=0)] = 6
        """Transformer blocks (ViT-Tiny [1]: 12)."""
        heads: Annotated[int, Field(gt=0)] = 3
        """Attention heads (ViT-Tiny [1]: 3)."""
        mlp_ratio: Annotated[float, Field(gt=0)] = 4.0
        """MLP hidden width as a multiple of D."""
        pos_embed: Literal["learned", "sincos"] = "learned"
        """Learned position embeddings [0], or the fixed 2-D sine-cosine table (MAE, MoCo v3)."""
        pool: Literal["mean", "cls"] = "mean"
        """The feature: mean of the patch tokens, or the class token's output ([0])."""

        @model_validator(mode="after")
        def _shapes(self) -> ViTTinyCifar.Params:
            if self.width % self.heads or self.width % 4 or self.image_px % self.patch_px:
                raise ValueError(f"width {self.width} must be a multiple of heads ({self.heads}) and of 4, and "
                                 f"image_px {self.image_px} a multiple of patch_px {self.patch_px}")
            return self

    params: Params

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        d = params.width
        self.feature_dim = d
        self.patch_px = params.patch_px
        self.embed = PatchEmbedding(params.patch_px, params.image_px // params.patch_px, d, params.pos_embed)
        self.blocks = nn.ModuleList([Block(d, params.heads, params.mlp_ratio) for _ in range(params.depth)])
        self.norm = nn.LayerNorm(d)
        init_weights(self)

    def encode(self, tokens: Tensor) -> Tensor:
        """Blocks and final norm over a token sequence (class token first). Shape: (B, L, D) -> (B, L, D)."""
        for block in self.blocks:
            tokens = block(tokens)
        out: Tensor = self.norm(tokens)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """The mean patch token (or the class token). Shape: (B, 3, H, W) -> (B, width)."""
        tokens = self.encode(self.embed(x))
        return tokens[:, 0] if self.params.pool == "cls" else tokens[:, 1:].mean(dim=1)

    def stage_modules(self) -> list[nn.Module]:
        """1 + depth stages: the embedding (patches, class token, positions), one per block (the last with the norm)."""
        *first, last = self.blocks
        return [self.embed, *first, nn.ModuleList([last, self.norm])]


def init_weights(model: nn.Module) -> None:
    """Truncated-normal (std 0.02) Linear weights, class token and learned positions, zero biases ([1]'s
    recipe); the patch projection as a Linear of its flattened weight (Xavier uniform, as MAE)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbedding):
            nn.init.xavier_uniform_(m.proj.weight.view(m.proj.weight.shape[0], -1))
            nn.init.zeros_(m.proj.bias)
            nn.init.trunc_normal_(m.cls_token, std=0.02)
            if m.learned:
                nn.init.trunc_normal_(m.pos_embed, std=0.02)


@hookimpl
def bench_register_backbones(register: Callable[[type], None]) -> None:
    register(ViTTinyCifar)
