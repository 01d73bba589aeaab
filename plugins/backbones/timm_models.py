"""`timm:<name>`: any model of the timm library as a randomly initialised backbone.

- [0] Wightman, PyTorch Image Models, https://github.com/huggingface/pytorch-image-models

``backbone = { name = "timm:convnext_atto" }`` builds ``timm.create_model("convnext_atto",
pretrained=False, num_classes=0)``: never a download, the classifier removed, so the model returns its
pooled features (B, num_features). ``params.model_kwargs`` go to ``create_model`` as they are (for
example ``{ img_size = 32 }`` or ``{ dynamic_img_size = true }`` for vision transformers, which are
not size-agnostic otherwise; CNNs pool adaptively and take any size).

Stages for :meth:`~ssl_bench.harness.components.Backbone.freeze_stages` follow timm's ``feature_info``: stage k
runs from the end of stage k - 1 to the k-th module timm reports features from (ResNet: the stem,
then layer1..layer4; ConvNeXt: stem + stages.0, then stages.1..3; ViT: patch embedding + blocks.0, then
one block each). Parameters held by the model itself rather than a submodule (a ViT's position
embedding and class token) belong to no stage and are never frozen.

timm is optional (``pip install timm``); without it, naming a ``timm:`` backbone is an error that
says so.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from ssl_bench.harness import Backbone, BenchError, UnknownComponentError, hookimpl
from ssl_bench.harness import Params as BaseParams

FAMILY = "timm:"


class TimmParams(BaseParams):
    """Parameters of every ``timm:`` backbone."""

    model_kwargs: dict[str, bool | int | float | str] = {}
    """Extra keyword arguments of ``timm.create_model`` (``img_size``, ``drop_path_rate``, ...)."""


def stage_groups(model: nn.Module) -> list[nn.Module]:
    """Group ``model``'s submodules into stages ending at each of timm's ``feature_info`` modules."""
    ends = [info["module"] for info in getattr(model, "feature_info", [])]
    containers = {end.rsplit(".", 1)[0] for end in ends if "." in end}
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in containers:
            units += [(f"{name}.{sub}", module) for sub, module in child.named_children()]
        else:
            units.append((name, child))
    stages: list[nn.Module] = []
    current: list[nn.Module] = []
    for name, module in units:
        current.append(module)
        if name in ends:
            stages.append(nn.ModuleList(current))
            current = []
    return stages


class TimmFamily(Backbone):
    """The ``timm:`` family; :meth:`variant` builds the class of one timm model."""

    name: ClassVar[str] = FAMILY
    Params: ClassVar[type[BaseParams]] = TimmParams
    model_name: ClassVar[str] = ""

    def __init__(self, params: TimmParams) -> None:
        super().__init__(params)
        if not self.model_name:
            raise BenchError("'timm:' needs a model name, for example 'timm:resnet18'")
        timm = _import_timm()
        self.net = timm.create_model(self.model_name, pretrained=False, num_classes=0, **params.model_kwargs)
        self.feature_dim = int(self.net.num_features)

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, 3, H, W) to pooled features (B, feature_dim)."""
        features: Tensor = self.get_submodule("net")(x)
        return features

    def stage_modules(self) -> list[nn.Module]:
        """timm's feature stages (see the module docstring); the whole model when it reports none."""
        return stage_groups(self.get_submodule("net")) or [self]

    @classmethod
    def variant(cls, member: str) -> type[Backbone]:
        """The backbone class ``timm:<member>``; an unknown timm model is an UnknownComponentError."""
        return _variant(member)


@functools.cache
def _variant(member: str) -> type[Backbone]:
    timm = _import_timm()
    models = timm.list_models()
    if member not in models:  # name the nearest models only: timm has over a thousand
        near = difflib.get_close_matches(member, models, n=8, cutoff=0.6)
        raise UnknownComponentError("backbone", FAMILY + member, [FAMILY + m for m in near])
    title = "Timm_" + member.replace("-", "_").replace(".", "_")
    return type(title, (TimmFamily,), {"name": FAMILY + member, "model_name": member, "__module__": __name__,
                                        "__qualname__": title, "__doc__": f"timm's {member}, randomly initialised."})


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise BenchError("'timm:' backbones need the timm package: pip install timm") from None
    return timm


@hookimpl
def bench_register_backbones(register: Callable[[type], None]) -> None:
    register(TimmFamily)
