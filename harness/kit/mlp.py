"""Deep MLP heads: Linear-BN-ReLU blocks, then an output Linear with or without batch norm.

- [0] Chen, He. Exploring Simple Siamese Representation Learning. CVPR 2021, arXiv:2011.10566 (3-layer
  projector with BN on its output layer; 2-layer bottleneck predictor without).
- [1] Zbontar, Jing, Misra, LeCun, Deny. Barlow Twins: Self-Supervised Learning via Redundancy Reduction.
  ICML 2021, arXiv:2103.03230 (3-layer projector, plain Linear output).
- [2] Chen, Xie, He. An Empirical Study of Training Self-Supervised Vision Transformers. ICCV 2021,
  arXiv:2104.02057 (BN on every layer, the output one without affine parameters).

:func:`ssl_bench.harness.kit.heads.mlp_head` is the 2-layer case of SimCLR and BYOL; this builds any depth.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(
    dims: Sequence[int], *, last_bn: bool = False, last_affine: bool = True, last_bias: bool = True
) -> nn.Sequential:
    """``len(dims) - 1`` Linear layers; all but the last are followed by BatchNorm1d and ReLU.

    A Linear followed by batch norm has no bias (the norm's shift replaces it). Shape: (B, dims[0]) -> (B, dims[-1]).

    Args:
        dims: widths, input first, output last; at least two.
        last_bn: batch norm after the output Linear (SimSiam's and MoCo v3's projectors), no ReLU.
        last_affine: whether that output batch norm has a learned scale and shift (False in [0, 2]).
        last_bias: bias of the output Linear when it has no batch norm (False where the loss ignores a shift).

    Raises:
        ValueError: fewer than two widths.
    """
    if len(dims) < 2:
        raise ValueError(f"mlp needs an input and an output width, got {list(dims)}")
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=last_bias and not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=last_affine))
    return nn.Sequential(*layers)
