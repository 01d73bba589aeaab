"""Faster R-CNN with a feature pyramid over the stages of any Backbone, for the detection evaluator.

- [0] Ren et al., Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks, 2015,
  arXiv:1506.01497
- [1] Lin et al., Feature Pyramid Networks for Object Detection, 2017, arXiv:1612.03144 (FPN over the
  outputs C2..C5 of the last four ResNet stages, a max-pooled extra level P6, 256 channels, anchors of
  32..512 px at an 800 px image side, one size per level, aspect ratios 1:2, 1:1, 2:1)

The backbone runs its own ``forward``; forward hooks on the last module of each of its
``stage_modules()`` catch the stage outputs (so stems with parameter-free layers outside any stage run as
the backbone runs them). A dry forward on one probe image reads each stage's channels and keeps the last
``levels`` stages whose outputs are feature maps (B, C, h, w). torchvision builds the rest: the FPN
(``FeaturePyramidNetwork`` with ``LastLevelMaxPool``), the RPN, RoIAlign over the pyramid and the two-layer
box head. Its image transform normalises with the harness's ImageNet mean and std and resizes to the sizes
given (the images' own side by default: 64 px images are not blown up to 800 px).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ssl_bench.harness import IMAGENET_MEAN, IMAGENET_STD, Backbone, BenchError

FPN_ANCHORS_PX = (32.0, 64.0, 128.0, 256.0, 512.0)
"""[1]'s anchor sizes at an 800 px image side, P2..P6."""
FPN_SIDE_PX = 800
ASPECT_RATIOS = (0.5, 1.0, 2.0)
"""Anchor aspect ratios (height / width) at every level [1]."""


def _last_module(stage: nn.Module) -> nn.Module:
    """The module whose output is the stage's: the last leaf of nested ModuleLists (never called themselves)."""
    while isinstance(stage, nn.ModuleList | nn.ModuleDict) and len(stage) > 0:
        stage = list(stage.children())[-1]
    return stage


def name_of(backbone: nn.Module) -> str:
    """The registered name of a Backbone (its class name otherwise), for messages."""
    return str(getattr(backbone, "name", type(backbone).__name__))


def stage_ends(backbone: nn.Module) -> list[nn.Module]:
    """The last module of every stage of ``backbone``, input to output.

    Raises:
        BenchError: ``backbone`` is no Backbone or lists no stages (its one stage is the whole network).
    """
    name = name_of(backbone)
    stages = backbone.stage_modules() if isinstance(backbone, Backbone) else []
    if not stages or (len(stages) == 1 and stages[0] is backbone):
        raise BenchError(f"detection: backbone '{name}' has no stages (its stage_modules() is the whole network), "
                         "so there is no feature map for a pyramid; use one with stages (resnet18, resnet50, "
                         "alexnet_bn, convnet_small, timm CNNs)")
    return [_last_module(s) for s in stages]


class StagePyramid(nn.Module):
    """A Backbone's stage outputs -> FPN maps: images (B, 3, H, W) -> OrderedDict of (B, channels, h_l, w_l).

    ``frozen``: the backbone runs under ``no_grad`` and stays in eval mode (fixed batch-norm statistics)
    whatever mode the detector is in; only the FPN (and the heads around it) learn.
    """

    def __init__(self, backbone: nn.Module, levels: int, channels: int, probe: Tensor, frozen: bool) -> None:
        """Read the stage shapes with a dry forward of ``probe`` (1, 3, H, W) normalised, keep the last ``levels``."""
        super().__init__()
        self.backbone = backbone
        self.frozen = frozen
        shapes, rewritten = self._dry_run(probe)
        maps = [i for i, s in enumerate(shapes) if s is not None and len(s) == 4]
        if not maps:
            raise BenchError(f"detection: no stage of backbone '{name_of(backbone)}' outputs a feature map "
                             f"(B, C, h, w) (stage outputs: {shapes}); a pyramid needs convolutional stages")
        self.picked = maps[-levels:]
        self.copied = [i in rewritten for i in self.picked]
        """Levels whose output the backbone later changes in place (an in-place ReLU): captured as copies."""
        self.fpn = FeaturePyramidNetwork([int(shapes[i][1]) for i in self.picked],  # type: ignore[index]
                                         channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = channels
        self.train(self.training)

    @property
    def level_names(self) -> list[str]:
        """Names of the pyramid levels RoIAlign pools from (the max-pooled extra level is only for the RPN)."""
        return [str(k) for k in range(len(self.picked))]

    def _run(self, x: Tensor, wanted: Sequence[int], copy: Sequence[bool],
             versions: dict[int, int] | None = None) -> dict[int, Tensor]:
        """Run the backbone on ``x``; the outputs of stages ``wanted`` (copied where ``copy`` says), by index.

        ``versions``, when given, receives each output's in-place version counter as it was caught.
        """
        ends = stage_ends(self.backbone)
        out: dict[int, Tensor] = {}
        handles = []
        for i, c in zip(wanted, copy):
            def keep(_m: nn.Module, _in: Any, y: Any, i: int = i, c: bool = c) -> None:
                if isinstance(y, Tensor):
                    out[i] = y.clone() if c else y
                    if versions is not None:
                        versions[i] = y._version
            handles.append(ends[i].register_forward_hook(keep))
        try:
            self.backbone(x)
        finally:
            for h in handles:
                h.remove()
        missing = [i + 1 for i in wanted if i not in out]
        if missing:
            raise BenchError(f"detection: stage(s) {missing} of backbone '{name_of(self.backbone)}' never ran in its "
                             "forward (their last module is not called), so they give no feature map")
        return out

    def _dry_run(self, probe: Tensor) -> tuple[list[tuple[int, ...] | None], set[int]]:
        """Each stage's output shape (None when not a tensor) and the stages whose output is later rewritten."""
        n = len(stage_ends(self.backbone))
        was = self.backbone.training
        self.backbone.eval()
        versions: dict[int, int] = {}
        with torch.no_grad():
            out = self._run(probe, range(n), [False] * n, versions)
        self.backbone.train(was)
        shapes = [tuple(out[i].shape) if i in out else None for i in range(n)]
        return shapes, {i for i, t in out.items() if t._version != versions[i]}

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """Normalised images (B, 3, H, W) -> pyramid maps (B, channels, h, w), finest first, then ``pool``."""
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            caught = self._run(x, self.picked, self.copied)
        maps: OrderedDict[str, Tensor] = self.fpn(OrderedDict((str(k), caught[i]) for k, i in enumerate(self.picked)))
        return maps

    def train(self, mode: bool = True) -> StagePyramid:
        """Set train/eval mode; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self


def default_anchors(side_px: int, levels: int) -> tuple[float, ...]:
    """[1]'s anchor sizes scaled from an 800 px side to ``side_px``, one per level, finest first.

    Fewer than [1]'s five levels take its coarsest sizes (a shallow pyramid still sees objects of half the
    image); more double the last.
    """
    n = len(FPN_ANCHORS_PX)
    sizes = FPN_ANCHORS_PX[n - levels:] if levels <= n else (
        *FPN_ANCHORS_PX, *(FPN_ANCHORS_PX[-1] * 2 ** k for k in range(1, levels - n + 1)))
    return tuple(s * side_px / FPN_SIDE_PX for s in sizes)


def build_detector(backbone: nn.Module, num_classes: int, *, levels: int, channels: int, box_head_dim: int,
                   min_sizes: Sequence[int], max_size: int, anchors: Sequence[float] | None, frozen: bool,
                   probe: Tensor, **rcnn: Any) -> FasterRCNN:
    """torchvision's FasterRCNN over ``backbone``'s pyramid: ``num_classes`` object classes plus background.

    Args:
        backbone: the encoder (already a copy, on the device of ``probe``).
        num_classes: object classes; the predictor has ``num_classes + 1`` outputs (0 is background).
        levels: how many of the last stages feed the FPN.
        channels: FPN channels.
        box_head_dim: width of the two-layer box head.
        min_sizes: shorter image sides: training picks one per batch, evaluation uses the last.
        max_size: the longest side after resizing.
        anchors: one anchor size (px) per pyramid level (stages kept + the max-pooled level); None: [1]'s
            scaled to ``min_sizes[-1]`` (:func:`default_anchors`).
        frozen: freeze every backbone weight (see :class:`StagePyramid`).
        probe: one normalised image (1, 3, H, W) for the dry forward.
        rcnn: further keyword arguments of ``FasterRCNN`` (RPN and box-head settings).
    """
    body = StagePyramid(backbone, levels, channels, probe, frozen)
    n_maps = len(body.picked) + 1
    sizes = tuple(anchors) if anchors else default_anchors(int(min_sizes[-1]), n_maps)
    if len(sizes) != n_maps:
        raise BenchError(f"detection: anchor_sizes_px has {len(sizes)} sizes but the pyramid has {n_maps} levels "
                         f"({len(body.picked)} stages of '{name_of(backbone)}' and the max-pooled level)")
    generator = AnchorGenerator(sizes=tuple((float(s),) for s in sizes), aspect_ratios=(ASPECT_RATIOS,) * n_maps)
    pool = MultiScaleRoIAlign(featmap_names=body.level_names, output_size=7, sampling_ratio=2)
    return FasterRCNN(body, min_size=tuple(int(s) for s in min_sizes), max_size=max_size,
                      image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                      rpn_anchor_generator=generator, box_roi_pool=pool,
                      box_head=TwoMLPHead(channels * 7 * 7, box_head_dim),
                      box_predictor=FastRCNNPredictor(box_head_dim, num_classes + 1), **rcnn)
