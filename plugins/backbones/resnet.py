"""ResNet-18 and ResNet-50 backbones (torchvision, randomly initialised), with ImageNet or CIFAR stems.

- [0] He et al., Deep Residual Learning for Image Recognition, 2016, arXiv:1512.03385

The ImageNet stem is the paper's 7x7 stride-2 convolution followed by a 3x3 stride-2 max-pool. The
CIFAR stem replaces it by a 3x3 stride-1 convolution and drops the max-pool, as the paper does for
CIFAR-10 (Sec. 4.2) and as SSL papers do for 32x32 inputs; the residual stages are the ImageNet ones
(widths 64-512), not the paper's narrower CIFAR ResNets. The classifier ``fc`` is removed.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ssl_bench.harness import Backbone, hookimpl
from ssl_bench.harness import Params as BaseParams


class ResNetParams(BaseParams):
    """Parameters shared by every ResNet backbone."""

    zero_init_residual: bool = False
    """Zero-initialise the last BN of every residual branch, so each block starts as the identity."""


def build_resnet(arch: str, params: ResNetParams, *, cifar_stem: bool) -> nn.Module:
    """A torchvision ResNet without weights or classifier: (B, 3, H, W) -> (B, 512 or 2048)."""
    # imported here, not at the top: importing torchvision takes about a second
    from torchvision import models

    net: nn.Module = getattr(models, arch)(weights=None, zero_init_residual=params.zero_init_residual)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def resnet_backbone(name: str, arch: str, *, cifar_stem: bool, feature_dim: int) -> type[Backbone]:
    """The Backbone class registered as ``name``: torchvision ``arch`` with the chosen stem."""
    stem = "the CIFAR stem (3x3 stride-1 conv, no max-pool)" if cifar_stem else "the ImageNet stem"

    def __init__(self: Backbone, params: ResNetParams) -> None:
        Backbone.__init__(self, params)
        self.net = build_resnet(arch, params, cifar_stem=cifar_stem)
        self.feature_dim = feature_dim

    def forward(self: Backbone, x: Tensor) -> Tensor:
        features: Tensor = self.get_submodule("net")(x)
        return features

    def stage_modules(self: Backbone) -> list[nn.Module]:
        """Five stages: the stem (conv1, bn1, and the max-pool where there is one), layer1..layer4."""
        net = self.get_submodule("net")
        return [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3, net.layer4]

    forward.__doc__ = f"Map images (B, 3, H, W) to features (B, {feature_dim})."
    title = "".join(part.title() for part in name.split("_")).replace("Resnet", "ResNet")
    doc = f"{arch.replace('resnet', 'ResNet-')} with {stem}. Shape: (B, 3, H, W) -> (B, {feature_dim})."
    return type(title, (Backbone,), {"name": name, "Params": ResNetParams, "__init__": __init__, "forward": forward,
                                      "stage_modules": stage_modules,
                                      "__doc__": doc, "__module__": __name__, "__qualname__": title})


ResNet18 = resnet_backbone("resnet18", "resnet18", cifar_stem=False, feature_dim=512)
ResNet18Cifar = resnet_backbone("resnet18_cifar", "resnet18", cifar_stem=True, feature_dim=512)
ResNet50 = resnet_backbone("resnet50", "resnet50", cifar_stem=False, feature_dim=2048)
ResNet50Cifar = resnet_backbone("resnet50_cifar", "resnet50", cifar_stem=True, feature_dim=2048)


@hookimpl
def bench_register_backbones(register: Callable[[type], None]) -> None:
    for cls in (ResNet18, ResNet18Cifar, ResNet50, ResNet50Cifar):
        register(cls)
