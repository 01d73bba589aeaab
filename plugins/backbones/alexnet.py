"""`alexnet_bn`: AlexNet's five conv layers with batch norm, for any input size, with frozen stages.

- [0] Krizhevsky, Sutskever, Hinton. ImageNet Classification with Deep Convolutional Neural
  Networks. NeurIPS 2012 (conv widths 96-256-384-384-256).
- [1] Noroozi, Favaro. Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles,
  2016, arXiv:1603.09246, and Zhang, Isola, Efros. Colorful Image Colorization, 2016,
  arXiv:1603.08511 (AlexNet with batch norm after every conv, the pretext-task benchmark net).
- [2] Macar, Liu. Self-Supervised Learning for Computer Vision (the pretext-tasks study): AlexNet
  with batch norm, frozen up to conv3 when fine-tuned.

Stage k (1..5) is conv k, batch norm, ReLU, and after stages 1 and 2 a 3x3 stride-2 max-pool. The
features are the global average of conv5's output (256-d by default); fc6-fc8 and their dropout are
not part of the backbone (methods and evaluators add their own heads).

Two stems:
    ``"small"`` (default): conv1 is 5x5 stride 1 and the max-pools pad by 1, so each halves the side
        (rounding up): 32 px -> conv3..5 at 8 x 8. Any input side >= 1 works (8 px jigsaw tiles too).
    ``"imagenet"``: [0]'s conv1 11x11 stride 4 and unpadded pools, for inputs of 31 px and more
        (224 px -> conv5 at 13 x 13, as [0]).

``freeze_stages = K`` freezes stages 1..K: their parameters get ``requires_grad = False`` and their
batch norms stay in eval mode (running statistics fixed) even when the model is put in train mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

from pydantic import Field
from torch import Tensor, nn

from ssl_bench.harness import Backbone, hookimpl
from ssl_bench.harness import Params as BaseParams

NUM_STAGES = 5


class AlexNetBN(Backbone):
    """AlexNet conv1-conv5 with batch norm. Shape: (B, 3, H, W) -> (B, widths[4])."""

    name: ClassVar[str] = "alexnet_bn"

    class Params(BaseParams):
        stem: Literal["small", "imagenet"] = "small"
        """'small': 5x5 stride-1 conv1 and padded pools (any size, for 32 px); 'imagenet': [0]'s stem."""
        widths: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
        """Channels of conv1..conv5 ([0]; torchvision's AlexNet uses 64, 192, 384, 256, 256)."""
        freeze_stages: Annotated[int, Field(ge=0, le=NUM_STAGES)] = 0
        """Freeze conv stages 1..K (weights and batch-norm statistics); the pretext-tasks study freezes up to conv3."""

    params: Params

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        if min(params.widths) < 1:
            raise ValueError(f"alexnet_bn widths must be positive, got {params.widths}")
        small = params.stem == "small"
        conv1 = (5, 1, 2) if small else (11, 4, 2)  # kernel, stride, padding
        specs = [conv1, (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1)]
        stages: list[nn.Module] = []
        c_in = 3
        for k, ((kernel, stride, pad), c_out) in enumerate(zip(specs, params.widths)):
            layers: list[nn.Module] = [
                nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if k < 2:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1 if small else 0))
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.freeze_stages(params.freeze_stages)

    def stage_modules(self) -> list[nn.Module]:
        """conv1..conv5, each with its batch norm, ReLU and max-pool."""
        return list(self.stages)

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, 3, H, W) to features (B, feature_dim)."""
        for stage in self.stages:
            x = stage(x)
        features: Tensor = self.pool(x).flatten(1)
        return features


@hookimpl
def bench_register_backbones(register: Callable[[type], None]) -> None:
    register(AlexNetBN)
