"""ResNet-18 and ResNet-50 backbones (torchvision, randomly initialised), with ImageNet or CIFAR stems.

- [0] He et al., Deep Residual Learning for Image Recognition, 2016, arXiv:1512.03385

The ImageNet stem is the paper's 7x7 stride-2 convolution followed by a 3x3 stride-2 max-pool. The
CIFAR stem replaces it by a 3x3 stride-1 convolution and drops the max-pool, as the paper does for
CIFAR-10 (Sec. 4.2) and as SSL papers do for 32x32 inputs; the residual stages are the ImageNet ones
(widths 64-512), not the paper's narrower CIFAR ResNets. The classifier ``fc`` is removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from torch import Tensor, nn
from torchvision import models

from harness import hookimpl
from harness.components import Backbone
from harness.components import Params as BaseParams


class ResNetParams(BaseParams):
    """Parameters shared by every ResNet backbone."""

    zero_init_residual: bool = False
    """Zero-initialise the last BN of every residual branch, so each block starts as the identity."""


def build_resnet(arch: str, params: ResNetParams, *, cifar_stem: bool) -> nn.Module:
    """A torchvision ResNet without weights or classifier: (B, 3, H, W) -> (B, 512 or 2048)."""
    net: nn.Module = getattr(models, arch)(weights=None, zero_init_residual=params.zero_init_residual)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


class ResNet18(Backbone):
    """ResNet-18 with the ImageNet stem. Shape: (B, 3, H, W) -> (B, 512)."""

    name: ClassVar[str] = "resnet18"

    class Params(ResNetParams):
        """ResNet-18 parameters (see :class:`ResNetParams`)."""

    def __init__(self, params: ResNetParams) -> None:
        super().__init__(params)
        self.net = build_resnet("resnet18", params, cifar_stem=False)
        self.feature_dim = 512

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, 3, H, W) to features (B, 512)."""
        return self.net(x)  # type: ignore[no-any-return]


class ResNet18Cifar(Backbone):
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool). Shape: (B, 3, H, W) -> (B, 512)."""

    name: ClassVar[str] = "resnet18_cifar"

    class Params(ResNetParams):
        """ResNet-18 (CIFAR stem) parameters (see :class:`ResNetParams`)."""

    def __init__(self, params: ResNetParams) -> None:
        super().__init__(params)
        self.net = build_resnet("resnet18", params, cifar_stem=True)
        self.feature_dim = 512

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, 3, H, W) to features (B, 512)."""
        return self.net(x)  # type: ignore[no-any-return]


class ResNet50(Backbone):
    """ResNet-50 with the ImageNet stem. Shape: (B, 3, H, W) -> (B, 2048)."""

    name: ClassVar[str] = "resnet50"

    class Params(ResNetParams):
        """ResNet-50 parameters (see :class:`ResNetParams`)."""

    def __init__(self, params: ResNetParams) -> None:
        super().__init__(params)
        self.net = build_resnet("resnet50", params, cifar_stem=False)
        self.feature_dim = 2048

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, 3, H, W) to features (B, 2048)."""
        return self.net(x)  # type: ignore[no-any-return]


class ResNet50Cifar(Backbone):
    """ResNet-50 with the CIFAR stem (3x3 stride-1 conv, no max-pool). Shape: (B, 3, H, W) -> (B, 2048)."""

    name: ClassVar[str] = "resnet50_cifar"

    class Params(ResNetParams):
        """ResNet-50 (CIFAR stem) parameters (see :class:`ResNetParams`)."""

    def __init__(self, params: ResNetParams) -> None:
        super().__init__(params)
        self.net = build_resnet("resnet50", params, cifar_stem=True)
        self.feature_dim = 2048

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, 3, H, W) to features (B, 2048)."""
        return self.net(x)  # type: ignore[no-any-return]


@hookimpl
def bench_register_backbones(register: Callable[[type], None]) -> None:
    for cls in (ResNet18, ResNet18Cifar, ResNet50, ResNet50Cifar):
        register(cls)
