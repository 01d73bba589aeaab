"""`convnet_small`: a small, CPU-friendly VGG-style convnet for quick benchmarks.

Stages of conv3x3-BN-ReLU blocks with max-pool downsampling between them and global average pooling
at the end, so any input size works. Widths double per stage from ``width`` (16, 32, 64, 128 by
default); the feature dimension is the last width. The default is sized for CPUs. The first stage
runs at full resolution: a stride-2 stem, as fast at twice the width, learned less on 32x32 images.
Measured numbers: leaderboard/findings.toml (``[backbones] convnet_small``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ClassVar

from pydantic import Field
from torch import Tensor, nn

from ssl_bench.harness import Backbone, hookimpl
from ssl_bench.harness import Params as BaseParams


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution (no bias), batch norm, ReLU; keeps the spatial size."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ConvNetSmall(Backbone):
    """A small convnet: ``stages`` stages of conv-BN-ReLU blocks, 2x2 max-pool between stages.

    Shape: input (B, 3, H, W) float, any H and W >= 1; output (B, width * 2**(stages - 1)).
    A 32x32 input is pooled to 4x4 before the last stage with the default four stages.
    """

    name: ClassVar[str] = "convnet_small"

    class Params(BaseParams):
        width: Annotated[int, Field(gt=0)] = 16
        """Channels of the first stage; each later stage doubles them."""
        stages: Annotated[int, Field(gt=0, le=6)] = 4
        """Number of stages (each but the first starts with a 2x2 max-pool)."""
        blocks_per_stage: Annotated[int, Field(gt=0)] = 1
        """conv3x3-BN-ReLU blocks per stage."""

    params: Params

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(params.stages):
            c_out = params.width * 2**i
            if i > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for _ in range(params.blocks_per_stage):
                layers.append(conv_bn_relu(c_in, c_out))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, 3, H, W) to features (B, feature_dim)."""
        features: Tensor = self.pool(self.features(x)).flatten(1)
        return features

    def stage_modules(self) -> list[nn.Module]:
        """One stage per width: its max-pool (stages 2..) and its conv-BN-ReLU blocks."""
        stages: list[list[nn.Module]] = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d) or not stages:
                stages.append([])
            stages[-1].append(layer)
        return [nn.ModuleList(stage) for stage in stages]


@hookimpl
def bench_register_backbones(register: Callable[[type], None]) -> None:
    register(ConvNetSmall)
