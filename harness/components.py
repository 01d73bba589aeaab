"""Base classes of the five component kinds a plugin can register.

A component is a class with a ``name`` and a nested pydantic ``Params`` model. The core validates
``{name, params}`` in a benchmark file; the component's ``Params`` validates its own fields, so a
plugin's options never leak into the core's schema.

Kinds:
    Dataset:       loads a split as an :class:`~ssl_bench.harness.data.ImageSet` of uint8 tensors.
    Augmentation:  a batched, per-sample random transform ``(images, *, generator) -> images``.
    Backbone:      an ``nn.Module`` mapping ``(B, C, H, W)`` images to ``(B, feature_dim)`` features.
    Method:        an ``nn.Module`` owning a backbone plus heads, with ``loss(batch) -> Tensor | LossTerms``.
    Evaluator:     scores a frozen encoder on labelled data, with a declared search space.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ssl_bench.harness.data import ImageSet
from ssl_bench.harness.errors import BenchError, UnknownComponentError


class Params(BaseModel):
    """Base of every component's parameters: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


AnyParams = Params
"""Alias for annotations inside component classes, whose own ``Params`` shadows the base."""


class MethodParams(Params):
    """Base of method parameters. ``views`` names the augmentation pipelines, one per view."""

    views: tuple[str, ...] = ()
    """Augmentation pipelines (registered names) producing the views, in order."""


@dataclass(frozen=True)
class DataContext:
    """Where datasets live and what they may do to get there."""

    root: Path
    """Data root (``--data-root`` or ``BENCH_DATA_ROOT``)."""
    cache_dir: Path
    """Folder for decoded-tensor caches."""
    download: bool = False
    """Whether a dataset may download its files."""


class Dataset:
    """A dataset plugin. ``load(split)`` returns the split as uint8 tensors.

    Subclasses set ``name``, optionally ``Params`` and ``splits``, and implement :meth:`load`.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, params: AnyParams) -> None:
        self.params = params

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        """Return ``split`` as an ImageSet (images uint8 of shape (N, C, H, W), labels int64 (N,))."""
        raise NotImplementedError

    def fingerprint(self, split: str, ctx: DataContext) -> str:
        """The identity of the data ``load(split, ctx)`` would read, for job keys; '' when params say it all.

        The plan puts it in the content key of every job that reads ``split`` (beside the params), so a
        changed dataset (another ``--data-root``, a file fixed in place) is new work, not a ``[done]`` job.
        It must be cheap (the plan calls it for every dataset on every ``bench run``; never decode): a
        dataset read from files returns :func:`~ssl_bench.harness.data.file_fingerprint` of them (paths,
        sizes, modification times, what its decode cache keys on), an embedded one returns ''. Data
        that cannot be found yet returns '' too (``load`` reports it when the job runs).

        The default, for datasets that do not override it, is a digest of the resolved data root: the
        jobs are redone under another ``--data-root``, though not when a file changes in place.
        """
        return hashlib.sha256(str(ctx.root.resolve()).encode()).hexdigest()[:16]


class Augmentation:
    """A batched augmentation with random parameters drawn per sample.

    ``__call__(images, generator=g)`` takes float images in [0, 1] of shape (B, C, H, W) on any
    device and returns float images of shape (B, C, H', W') in [0, 1] on the same device.
    All randomness comes from ``generator`` (a ``torch.Generator`` on the images' device).
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: AnyParams) -> None:
        self.params = params

    def __call__(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


class Backbone(nn.Module):
    """An encoder: ``forward(x)`` maps normalised images (B, C, H, W) to features (B, feature_dim).

    A backbone lists its stages (input to output) in :meth:`stage_modules`, so evaluators can freeze
    the first K of them with :meth:`freeze_stages` (the pretext-tasks study freezes AlexNet up to
    conv3). A backbone registered under a family name ending in ``":"`` (``"timm:"``) builds its
    members by name through :meth:`variant` (``"timm:resnet18"``).
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    feature_dim: int
    frozen_stages: int = 0

    def __init__(self, params: AnyParams) -> None:
        super().__init__()
        self.params = params

    def stage_modules(self) -> list[nn.Module]:
        """The stages, input to output. The default is one stage, the whole network."""
        return [self]

    def freeze_stages(self, k: int) -> None:
        """Freeze stages 1..k: no gradients to their parameters, batch norms kept in eval mode."""
        stages = self.stage_modules()
        if not 0 <= k <= len(stages):
            raise BenchError(f"backbone '{self.name}' has {len(stages)} stage(s); cannot freeze {k}")
        for stage in stages[:k]:
            stage.requires_grad_(False)
        self.frozen_stages = k
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """Set train/eval mode; frozen stages stay in eval mode (fixed batch-norm statistics)."""
        super().train(mode)
        for stage in self.stage_modules()[: self.frozen_stages]:
            nn.Module.train(stage, False)
        return self

    @classmethod
    def variant(cls, member: str) -> type[Backbone]:
        """The class of family member ``member`` (families only: ``name`` ends with ``":"``)."""
        raise UnknownComponentError("backbone", f"{cls.name}{member}", [])


@dataclass
class Batch:
    """One pretraining step's input.

    Attributes:
        views: one tensor per entry of ``method.views``, each normalised float (B, C, H, W).
        labels: class labels (B,), int64; only supervised methods may read them.
        indices: positions (B,), int64, of the samples in the pretraining set, in [0, num_samples)
            (memory banks of PIRL and CMC key on them); None where there is no such set.
    """

    views: list[Tensor]
    labels: Tensor
    indices: Tensor | None = None


@dataclass(frozen=True)
class LossTerms:
    """A loss with its named parts: what :meth:`Method.loss` may return instead of a scalar Tensor.

    The harness back-propagates ``total`` and logs each term beside it (detached, as ``loss/<name>``;
    see the ``bench_step_logged`` hook). The terms are the method's to define and need not add up to
    the total: VICReg reports its three unweighted terms (the total weighs them), BYOL its two
    directions (the total is their sum). Where a scalar loss is expected it stands for its total:
    ``backward()``, ``item()``, ``detach()`` and ``float()`` act on ``total``.

    Attributes:
        total: the scalar training loss, with a gradient. Shape: ().
        terms: name -> scalar Tensor (shape ()), in the order to show them; a name is a short identifier
            (``invariance``) without ``/``.
    """

    total: Tensor
    terms: Mapping[str, Tensor] = field(default_factory=dict)

    def backward(self, *args: Any, **kwargs: Any) -> None:
        """Back-propagate ``total`` (the arguments are ``Tensor.backward``'s)."""
        self.total.backward(*args, **kwargs)

    def item(self) -> float:
        """``total`` as a Python float."""
        return float(self.total.item())

    def detach(self) -> Tensor:
        """``total`` without its graph."""
        return self.total.detach()

    def __float__(self) -> float:
        return float(self.total.detach())


def loss_parts(value: Any) -> tuple[Any, Mapping[str, Tensor]]:
    """What a method's loss returned, as ``(total, terms)``: a Tensor (or anything else) has no terms.

    The total is returned as it came; the caller checks it is a scalar Tensor."""
    if isinstance(value, LossTerms):
        return value.total, value.terms
    return value, {}


class Method(nn.Module):
    """A pretraining method: a backbone, the heads it adds, and a loss.

    Subclasses set ``name`` and ``Params`` (a :class:`MethodParams`) and implement :meth:`loss`.
    The harness builds ``cls(params, backbone, num_classes=...)`` (plus ``num_samples=``, the size
    of the pretraining set, when ``__init__`` takes that keyword), feeds :class:`Batch` objects
    whose views follow ``params.views``, steps the optimizer over ``self.parameters()`` and calls
    :meth:`on_step_end` after every optimizer step. Only ``self.backbone`` is evaluated downstream.
    """

    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    trains: ClassVar[bool] = True
    """False for methods with nothing to learn (random init): the harness skips the loop."""
    uses_labels: ClassVar[bool] = False
    """True for methods whose loss reads ``Batch.labels`` (the supervised baseline): the harness then keeps
    the validation rows that choose hyper-parameters out of their training data (see ``plan.Holdout``)."""

    def __init__(self, params: MethodParams, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__()
        self.params = params
        self.backbone = backbone
        self.num_classes = num_classes

    @property
    def views(self) -> tuple[str, ...]:
        """Names of the augmentation pipelines that make this method's views."""
        return self.params.views

    def loss(self, batch: Batch) -> Tensor | LossTerms:
        """Return the scalar training loss of one batch, alone or with its named terms (:class:`LossTerms`)."""
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Hook after each optimizer step (momentum encoders, queues). ``step`` counts from 1."""

    @classmethod
    def fingerprint(cls, params: MethodParams) -> str:
        """What the job's content key must cover beyond ``params`` (a checkpoint file's identity); '' = nothing."""
        return ""


def instantiate_method(cls: type[Method], params: MethodParams, backbone: Backbone, *, num_classes: int,
                 num_samples: int) -> Method:
    """``cls(params, backbone, num_classes=...)``, adding ``num_samples`` where ``cls`` takes it."""
    extra = {"num_samples": num_samples} if "num_samples" in inspect.signature(cls).parameters else {}
    return cls(params, backbone, num_classes=num_classes, **extra)


@dataclass
class EvalTask:
    """What an evaluator sees: a frozen encoder and two labelled splits.

    During a sweep ``fit`` is the training part and ``target`` the validation part carved from the
    training split; for the reported result ``fit`` is the whole training split and ``target`` the
    test split. Evaluators never learn which of the two they are in.

    Attributes:
        encoder: the frozen backbone in eval mode, on ``device``.
        fit: labelled images to fit on (read them with ``fit.batch(idx)`` / ``fit.chunks(size)``: a
            memory-mapped set's ``images`` is its whole file).
        target: labelled images to score.
        num_classes: number of classes of the target dataset.
        features: returns cached encoder features (N, feature_dim) of an ImageSet.
        device: where to compute.
        seed: seed for every random choice of the evaluator.
        out_dir: folder for files the evaluator writes beside its metrics (a gallery PNG), created on
            demand; None where nothing may be written.
        online_head: for an evaluator with ``online_probe`` set, the linear head trained beside the
            encoder's pretraining on its detached features, ``{"weight": (C, D), "bias": (C,)}`` float32 on
            the CPU; None where that pretraining trained none.
    """

    encoder: nn.Module
    fit: ImageSet
    target: ImageSet
    num_classes: int
    features: Callable[[ImageSet], Tensor]
    device: torch.device
    seed: int
    out_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    online_head: Mapping[str, Tensor] | None = None


class Evaluator:
    """An evaluation protocol.

    ``search_space`` maps hyper-parameter names to their default grid; a benchmark's ``sweep``
    table may replace any of these grids. :meth:`evaluate` is called once per trial on the
    validation split and once more, with the chosen values, on the test split.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    search_space: ClassVar[Mapping[str, tuple[float, ...]]] = {}
    sweepable: ClassVar[tuple[str, ...]] = ()
    """Further hyper-parameter names ``evaluate`` reads from ``hparams`` (no default grid)."""
    selection_metric: ClassVar[str] = "top1"
    online_probe: ClassVar[bool] = False
    """True for an evaluator that scores a linear head trained beside pretraining (an online probe, as solo-learn
    reports): the plan then has every pretraining that trains train one (SGD with its ``Params``' ``lr`` and, where
    they exist, ``momentum`` and ``weight_decay``), its ``evaluate`` gets it as ``EvalTask.online_head``, an
    untrained encoder (random init) gets no such evaluation, and it sweeps nothing."""

    def __init__(self, params: AnyParams) -> None:
        self.params = params

    def evaluate(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """Return metric name -> value (accuracies in percent) on ``task.target``."""
        raise NotImplementedError


COMPONENT_KINDS: dict[str, type] = {
    "methods": Method,
    "datasets": Dataset,
    "augmentations": Augmentation,
    "backbones": Backbone,
    "evaluators": Evaluator,
}
"""Registry kind (plural, as in ``bench list KIND``) -> base class."""
