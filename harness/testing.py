"""Conformance checks for components, shipped to plugin authors.

The ``bench_registry`` fixture comes with ssl-bench (see :mod:`ssl_bench.harness.pytest_plugin`), so a
third-party package's tests can write::

    from ssl_bench.harness.testing import check_dataset, check_evaluator, check_method

    def test_my_method(bench_registry):
        check_method(bench_registry, "my_method", params={"temperature": 0.2})

Every check raises AssertionError with a message that names the component and says what to fix. They
run on tiny data in seconds, and catch the bugs a first plugin has:

- :func:`check_method`: params round-trip; several optimizer steps (on CUDA when present), each with
  a finite scalar Tensor loss (alone or as a :class:`~ssl_bench.harness.components.LossTerms` whose
  terms are scalar Tensors) on the inputs' device reaching the backbone; no collapse of the
  backbone's features; seed determinism; a checkpoint round-trip.
- :func:`check_evaluator`: percent metrics with ``top1``, deterministic, on imperfect features (noisy
  one-hot colour codes, a quarter of the target images coloured as another class), where a correct
  evaluator scores strictly between chance and the ~75% the features allow. An evaluator whose
  ``selection_metric`` is a box AP (:data:`BOX_METRICS`) is checked on :func:`box_task` instead: COCO AP,
  AP50 and AP75 in percent, deterministic, its encoder left as it was.
- :func:`check_dataset`, :func:`check_augmentation`, :func:`check_backbone`: the other contracts.

Devices: a tensor a loss creates on the CPU (``torch.arange(n)`` without ``device=``) is only caught
when the check runs on CUDA, because on a CPU-only machine every tensor is on the CPU; ``device=None``
therefore means CUDA whenever torch sees a GPU.
"""

from __future__ import annotations

import copy
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness.components import Batch, DataContext, EvalTask, instantiate_method, loss_parts
from ssl_bench.harness.data import IMAGENET_MEAN, IMAGENET_STD, BoxTargets, ImageSet, normalize, to_float
from ssl_bench.harness.plugins import Registry

TINY_BACKBONE = "convnet_small"
SMALL_VIT = {"width": 48, "depth": 2, "heads": 2}
"""``backbone_params`` of a narrow two-block ``vit_tiny_cifar``: the checks of ViT-only methods run on it in a
fraction of the default ViT's time, with the same patch size and token layout."""
COLLAPSE_RATIO = 0.4
"""A method collapses when the spread of its backbone's features stays below this share of the start's."""
COLLAPSE_WINDOW = 5
"""The last steps the collapse check looks at: it fails when the spread is below the share at every one of them.
A collapse stays collapsed, while a healthy method's spread swings from step to step under Adam at lr 3e-3 on 16
images, and where one step lands depends on the CPU's kernels (AVX2 and AVX-512 round differently): one step's
value is a draw of the numerics, not a verdict."""


def default_device() -> torch.device:
    """CUDA when torch sees a GPU (the only place a stray CPU tensor shows), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tiny_images(n: int = 8, size: int = 32, seed: int = 0, num_classes: int = 4) -> ImageSet:
    """Random uint8 images (n, 3, size, size) with balanced labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % num_classes
    return ImageSet(images, labels, tuple(str(i) for i in range(num_classes)), f"tiny:{n}:{size}:{seed}")


def structured_images(n: int = 16, size: int = 32, seed: int = 0, num_classes: int = 4) -> ImageSet:
    """Smooth random colour patterns (n, 3, size, size), uint8: images that differ, unlike pixel noise.

    A random network maps pixel noise to nearly one feature vector, so the collapse check trains on
    these: 4x4 random colours upsampled bilinearly.
    """
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    images = (F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False) * 255).round()
    labels = torch.arange(n) % num_classes
    return ImageSet(images.to(torch.uint8), labels, tuple(str(i) for i in range(num_classes)),
                    f"structured:{n}:{size}:{seed}")


def build_method(registry: Registry, name: str, backbone: str = TINY_BACKBONE, seed: int = 0,
                 params: dict[str, Any] | None = None, num_classes: int = 4, num_samples: int = 64,
                 backbone_params: dict[str, Any] | None = None) -> Any:
    """``name`` built as the harness builds it, on ``backbone`` (with ``backbone_params``, default its defaults),
    after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    bb_cls = registry.get("backbones", backbone)
    cls = registry.get("methods", name)
    return instantiate_method(cls, cls.Params.model_validate(params or {}),
                              bb_cls(bb_cls.Params.model_validate(backbone_params or {})),
                              num_classes=num_classes, num_samples=num_samples)


def method_batch(registry: Registry, method: Any, data: ImageSet, seed: int = 0,
                 device: torch.device | None = None) -> Batch:
    """Views of ``data`` made by the method's own pipelines, on ``device`` (default: the images')."""
    device = device or data.images.device
    g = torch.Generator(device=device).manual_seed(seed)
    x = to_float(data.images.to(device))
    views = []
    for name in method.views:
        cls = registry.get("augmentations", name)
        views.append(normalize(cls(cls.Params())(x, generator=g)))
    return Batch(views=views, labels=data.labels.to(device), indices=torch.arange(len(data), device=device))


def method_loss(registry: Registry, method: Any, data: ImageSet, seed: int = 0) -> torch.Tensor:
    """The total loss of ``method`` on views of ``data`` (a :class:`LossTerms`' total)."""
    loss: torch.Tensor = loss_parts(method.loss(method_batch(registry, method, data, seed)))[0]
    return loss


def check_method(registry: Registry, name: str, params: dict[str, Any] | None = None, steps: int = 5,
                 device: torch.device | str | None = None, *, backbone: str = TINY_BACKBONE,
                 collapse_steps: int = 20, backbone_params: dict[str, Any] | None = None) -> None:
    """Check a method: it builds, trains, does not collapse, is deterministic and round-trips a checkpoint.

    One run of ``max(steps, collapse_steps)`` Adam steps (lr 3e-3) on 16 tiny images, every step of it
    checked: the loss is a scalar Tensor (not a float) on the views' device, finite, and (first step)
    its gradient reaches the backbone. The collapse check compares the spread of the backbone's
    L2-normalised features over the images before the run and at each of its last :data:`COLLAPSE_WINDOW`
    steps: below :data:`COLLAPSE_RATIO` of the start's at every one of them, the loss has a constant
    solution (an invariance-only loss) and the check fails.

    Args:
        registry: the registry (the ``bench_registry`` fixture).
        name: the method's registered name.
        params: the method's params (validated by its ``Params``); None: the defaults.
        steps: optimizer steps whose loss is checked, at least 5 recommended (a loss that turns NaN at
            step 3 passes a one-step check).
        device: where to run; None: CUDA when present (see the module docstring), else the CPU.
        backbone: the registered backbone to build the method on.
        collapse_steps: length of the run the collapse check looks at; 0 skips the collapse check.
        backbone_params: the backbone's params (e.g. :data:`SMALL_VIT`); None: its defaults.
    """
    cls = registry.get("methods", name)
    try:
        p = cls.Params.model_validate(params or {})
    except ValueError as exc:
        raise AssertionError(f"{name}: params {params} do not validate: {exc}") from None
    assert cls.Params.model_validate(p.model_dump()) == p, (
        f"{name}: Params do not round-trip through model_dump(); keep every field a plain value (no objects)")
    method = build_method(registry, name, backbone, params=params, backbone_params=backbone_params)
    assert method.backbone.feature_dim > 0, f"{name}: backbone feature_dim missing"
    if not cls.trains:
        return
    device = torch.device(device) if device is not None else default_device()
    data = structured_images(16)
    _train_checked(registry, name, method, data, max(steps, collapse_steps), device,
                   collapse=collapse_steps > 0)
    _check_deterministic(registry, name, backbone, params, data, device, backbone_params)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = build_method(registry, name, backbone, seed=123, params=params,
                            backbone_params=backbone_params).to(device)
    restored.load_state_dict(torch.load(buffer, weights_only=True, map_location=device))
    method.eval()
    restored.eval()
    with torch.no_grad():
        x = normalize(to_float(data.images.to(device)))
        assert torch.allclose(method.backbone(x), restored.backbone(x), atol=1e-5), (
            f"{name}: checkpoint does not round-trip: keep all state in parameters and buffers (register_buffer)")


def _train_checked(registry: Registry, name: str, method: Any, data: ImageSet, steps: int,
                   device: torch.device, *, collapse: bool) -> None:
    """``steps`` optimizer steps of ``method`` on ``data``, each loss checked; then the collapse check."""
    method.to(device).train()
    x = normalize(to_float(data.images.to(device)))
    before = _spread(method.backbone, x)
    optimizer = torch.optim.Adam([q for q in method.parameters() if q.requires_grad], lr=3e-3)
    spreads: list[float] = []
    for step in range(1, steps + 1):
        batch = method_batch(registry, method, data, seed=step, device=device)
        loss = _checked_loss(name, method, batch, step, steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == 1:
            grads = [q.grad for q in method.backbone.parameters() if q.requires_grad]
            assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), (
                f"{name}: no gradient reaches the backbone: the loss must depend on self.backbone(view) "
                "without .detach() or torch.no_grad() on the online branch")
        optimizer.step()
        method.on_step_end(step, steps)
        if collapse and step > steps - COLLAPSE_WINDOW:
            spreads.append(_spread(method.backbone, x))
    if collapse and before > 1e-8:
        after = max(spreads)
        assert after >= COLLAPSE_RATIO * before, (
            f"{name}: the backbone's features collapse: their spread over 16 different images fell from "
            f"{before:.4f} to at most {after:.4f} ({after / before:.0%}) over the last {len(spreads)} of {steps} "
            "steps. A loss that only pulls views "
            "together is minimised by a constant; add what keeps features apart (negatives, a variance or "
            "covariance term, or a predictor with stop-gradient against a momentum target)")


def _checked_loss(name: str, method: Any, batch: Batch, step: int, steps: int) -> Tensor:
    """``method.loss(batch)`` (a LossTerms' total), asserted a finite scalar Tensor on the views' device."""
    want = batch.views[0].device if batch.views else batch.labels.device
    try:
        loss, terms = loss_parts(method.loss(batch))
    except RuntimeError as exc:
        if "device" not in str(exc):
            raise
        raise AssertionError(
            f"{name}: loss mixes devices at step {step} ({' '.join(str(exc).split())[:200]}); create every tensor "
            f"inside loss on the inputs' device, e.g. torch.arange(n, device=z.device)") from None
    if not isinstance(loss, Tensor):
        raise AssertionError(f"{name}: loss returned a {type(loss).__name__}, not a Tensor; return the scalar "
                             "tensor itself (no .item() or float()) so the harness can back-propagate it")
    for term, part in terms.items():
        assert isinstance(part, Tensor) and part.ndim == 0, (
            f"{name}: LossTerms term '{term}' must be a scalar (0-dim) Tensor, got "
            f"{tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__}")
        assert term and "/" not in term, f"{name}: LossTerms term name {term!r} must be non-empty, without '/'"
    assert loss.ndim == 0, f"{name}: loss must be a scalar (0-dim) Tensor, got shape {tuple(loss.shape)}; reduce it"
    assert loss.device == want, (
        f"{name}: loss is on {loss.device} but the views are on {want}: a tensor made inside loss without "
        "device= (torch.zeros(n) -> torch.zeros(n, device=z.device))")
    assert loss.requires_grad, f"{name}: loss has no gradient (computed under no_grad, or detached)"
    value = float(loss.detach())
    assert math.isfinite(value), (
        f"{name}: loss is not finite at step {step} of {steps} ({value}); guard divisions and logs (clamp a "
        "norm or a probability away from 0), or lower a temperature that overflows exp()")
    return loss


@torch.no_grad()
def _spread(backbone: nn.Module, x: Tensor) -> float:
    """Mean over dimensions of the std over images of L2-normalised features (a copy: buffers untouched)."""
    features = copy.deepcopy(backbone).train()(x).float()
    return float(F.normalize(features, dim=1).std(0).mean())


def _check_deterministic(registry: Registry, name: str, backbone: str, params: dict[str, Any] | None,
                         data: ImageSet, device: torch.device, backbone_params: dict[str, Any] | None) -> None:
    losses = []
    for _ in range(2):
        method = build_method(registry, name, backbone, params=params, backbone_params=backbone_params)
        method = method.to(device).train()
        total = loss_parts(method.loss(method_batch(registry, method, data, seed=1, device=device)))[0]
        losses.append(total.detach())
    first, second = losses
    same = torch.equal(first, second) if device.type == "cpu" else torch.allclose(first, second, rtol=1e-4, atol=1e-6)
    assert same, (f"{name}: the same seed gives different losses ({first} vs {second}): draw randomness "
                  "from torch (seeded), never from Python's random or numpy, nor from the clock")


def check_augmentation(registry: Registry, name: str) -> None:
    """Per-sample parameters, seed determinism, float output in [0, 1] on the input's device."""
    cls = registry.get("augmentations", name)
    aug = cls(cls.Params())
    x = to_float(tiny_images(n=1).images).repeat(6, 1, 1, 1)
    a = aug(x, generator=torch.Generator().manual_seed(0))
    b = aug(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b), f"{name}: the same seed gives different outputs; draw only from `generator`"
    assert a.dtype == torch.float32 and a.device == x.device, f"{name}: output must stay float32 on the input device"
    assert a.min() >= 0 and a.max() <= 1, f"{name}: output leaves [0, 1]; clamp it (the harness normalises later)"
    assert a.shape[0] == 6, f"{name}: batch size changed"


def check_backbone(registry: Registry, name: str) -> None:
    """(B, C, H, W) -> (B, feature_dim) at two input sizes."""
    cls = registry.get("backbones", name)
    model = cls(cls.Params()).eval()
    for size in (32, 64):
        with torch.no_grad():
            out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, model.feature_dim), (
            f"{name}: output {tuple(out.shape)} at {size}px, expected (2, feature_dim={model.feature_dim}); "
            "pool globally so any input size works")


def check_dataset(registry: Registry, name: str, params: dict[str, Any] | None = None,
                  ctx: DataContext | None = None) -> None:
    """Every split of ``splits`` loads as a labelled ImageSet with a stable, split-specific key.

    A dataset whose ``labelled`` is False (pretraining data only) may have a single class.

    Args:
        registry: the registry.
        name: the dataset's registered name.
        params: its params (validated by its ``Params``); None: the defaults. Keep the data small.
        ctx: where data lives; None: ``$BENCH_DATA_ROOT`` (else ``./data``), decode cache in a new
            temporary folder.
    """
    cls = registry.get("datasets", name)
    try:
        dataset = cls(cls.Params.model_validate(params or {}))
    except ValueError as exc:
        raise AssertionError(f"{name}: params {params} do not validate: {exc}") from None
    if ctx is None:
        ctx = DataContext(root=Path(os.environ.get("BENCH_DATA_ROOT", "data")),
                          cache_dir=Path(tempfile.mkdtemp(prefix="bench-check-")))
    assert cls.splits and "train" in cls.splits, f"{name}: `splits` must list the splits, 'train' among them"
    keys = {}
    for split in cls.splits:
        data = dataset.load(split, ctx)
        where = f"{name}: load({split!r})"
        assert isinstance(data, ImageSet), f"{where} returned {type(data).__name__}; return an ImageSet"
        assert len(data) > 0, f"{where} is empty"
        assert data.images.shape[1] == 3, (
            f"{where}: images have {data.images.shape[1]} channels; views are normalised with ImageNet's 3-channel "
            "mean and std, so convert to RGB (grey: repeat the channel)")
        labels = data.labels
        assert labels.dtype == torch.int64, f"{where}: labels are {labels.dtype}, not int64 class indices"
        least = 2 if getattr(dataset, "labelled", True) else 1  # unlabelled (pretraining only): one class
        assert len(data.classes) >= least, f"{where}: `classes` must name every class (got {data.classes})"
        assert bool(((labels >= 0) & (labels < len(data.classes))).all()), (
            f"{where}: a label is outside 0..{len(data.classes) - 1}, the indices of `classes`")
        assert isinstance(data.key, str) and data.key, f"{where}: `key` must be a non-empty string"
        keys[split] = data.key
    assert len(set(keys.values())) == len(keys), (
        f"{name}: splits share a key ({keys}); the key is the split's identity (feature caches use it): put the "
        "dataset name, the params that change the data and the split in it")
    again = dataset.load(cls.splits[0], ctx)
    assert again.key == keys[cls.splits[0]], (
        f"{name}: load({cls.splits[0]!r}) gives another key on a second call ({again.key!r} vs "
        f"{keys[cls.splits[0]]!r}); the key must not depend on time or chance")


COLOURS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0))
"""The four classes of :func:`colour_task`: red, green, blue, black."""
MISLEADING = 0.25
"""Share of target images coloured as another class: no evaluator that reads its features beats 75%."""


class ColourCode(nn.Module):
    """The encoder of :func:`colour_task`: normalised images (B, 3, H, W) -> noisy one-hot (B, 4) features.

    Features are 10 x (mean red, mean green, mean blue, 1 - max of the three) of the de-normalised
    pixels: one-hot for pure red, green, blue and black, with noise. Differentiable (attacks need
    gradients) and parameter-free (fine-tuning trains only its head).
    """

    feature_dim = 4

    def forward(self, x: Tensor) -> Tensor:
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        colour = (x * std + mean).mean(dim=(2, 3))
        return 10 * torch.cat([colour, 1 - colour.max(dim=1, keepdim=True).values], dim=1)


def colour_images(n: int, seed: int, misleading: float, key: str, size: int = 16) -> ImageSet:
    """``n`` flat-coloured images with pixel noise, of four balanced classes (:data:`COLOURS`).

    A share ``misleading`` of them (chosen by ``seed``) is coloured as another class than its label.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(COLOURS)
    shown = labels.clone()
    k = int(n * misleading)
    if k:
        rows = torch.randperm(n, generator=g)[:k]
        shown[rows] = (labels[rows] + 1 + torch.randint(0, len(COLOURS) - 1, (k,), generator=g)) % len(COLOURS)
    base = torch.tensor(COLOURS)[shown] * 0.7 + 0.15 + 0.1 * torch.randn(n, 3, generator=g)
    images = base.view(n, 3, 1, 1) + 0.08 * torch.randn(n, 3, size, size, generator=g)
    return ImageSet((images.clamp(0, 1) * 255).round().to(torch.uint8), labels, ("red", "green", "blue", "black"),
                    key)


def colour_task(device: torch.device | None = None, seed: int = 0) -> EvalTask:
    """An evaluation task with a known answer: 128 clean fit images, 64 target images of which a quarter mislead.

    ``task.features`` and ``task.encoder`` (a :class:`ColourCode`) agree, so evaluators that read cached
    features and those that run the encoder on images see the same noisy one-hot features.
    """
    device = device or torch.device("cpu")
    fit = colour_images(128, 1, 0.0, "colours:fit")
    target = colour_images(64, 2, MISLEADING, "colours:target")
    encoder = ColourCode().eval().to(device)
    with torch.no_grad():
        feats = {s.key: encoder(normalize(to_float(s.images.to(device)))) for s in (fit, target)}
    return EvalTask(encoder=encoder, fit=fit, target=target, num_classes=len(COLOURS),
                    features=lambda s: feats[s.key], device=device, seed=seed)


def check_evaluator(registry: Registry, name: str, params: dict[str, Any] | None = None,
                    hparams: dict[str, float] | None = None, device: torch.device | str | None = None) -> None:
    """Percent metrics with ``top1``, deterministic, that follow imperfect features (:func:`colour_task`).

    The features separate the classes but a quarter of the target images look like another class,
    so an evaluator that reads them scores about 75% top-1: it must beat chance (25%) by 10 points
    and stay below 87.5%. 100 means it ignores its features (or scores ``task.fit``); values in [0, 1]
    mean fractions where percent is the contract. A detection evaluator (``selection_metric`` in
    :data:`BOX_METRICS`) is checked on :func:`box_task` instead (pass ``params`` that keep its training short).

    Args:
        registry: the registry.
        name: the evaluator's registered name.
        params: its params; None: the defaults.
        hparams: the trial's hyper-parameters; None: the first value of each ``search_space`` grid.
        device: where to compute; None: CUDA when present, else the CPU.
    """
    cls = registry.get("evaluators", name)
    evaluator = cls(cls.Params.model_validate(params or {}))
    hp = hparams if hparams is not None else {k: v[0] for k, v in cls.search_space.items()}
    if cls.selection_metric in BOX_METRICS:
        _check_box_evaluator(registry, name, evaluator, hp, torch.device(device) if device else default_device())
        return
    task = colour_task(torch.device(device) if device is not None else default_device())
    if cls.online_probe:  # it scores the head trained beside pretraining: give it one, fitted to task.fit
        task.online_head = class_mean_head(task.features(task.fit), task.fit.labels, task.num_classes)
    m1, m2 = evaluator.evaluate(task, hp), evaluator.evaluate(task, hp)
    assert isinstance(m1, dict) and all(isinstance(v, float | int) for v in m1.values()), (
        f"{name}: evaluate must return a dict of metric name -> float, got {m1!r}")
    assert m1 == m2, f"{name}: not deterministic under one seed ({m1} vs {m2}); seed every draw from task.seed"
    assert "top1" in m1, f"{name}: metrics {sorted(m1)} lack 'top1' (the default selection metric)"
    assert all(math.isfinite(v) for v in m1.values()), f"{name}: metrics are not finite: {m1}"
    top1, chance, ceiling = m1["top1"], 100 / task.num_classes, 100 * (1 - MISLEADING)
    assert not (top1 <= 1 and all(0 <= v <= 1 for v in m1.values())), (
        f"{name}: metrics look like fractions ({m1}); report percent (0-100): multiply by 100, or use "
        "ssl_bench.harness.kit.metrics.classification_metrics")
    assert all(0 <= v <= 100 for v in m1.values()), f"{name}: metrics must be percentages in [0, 100]: {m1}"
    assert top1 < (ceiling + 100) / 2, (
        f"{name}: top1 = {top1:g} where the features allow about {ceiling:g}% (a quarter of the target images look "
        "like another class): the evaluator ignores its features, or scores task.fit instead of task.target")
    assert top1 > chance + 10, (
        f"{name}: top1 = {top1:g}, near or below chance ({chance:g}%), on features that separate the classes (about "
        f"{ceiling:g}% is possible): fit on task.features(task.fit) (or task.encoder) with task.fit.labels and "
        "score task.target")


def class_mean_head(features: Tensor, labels: Tensor, num_classes: int) -> dict[str, Tensor]:
    """A linear head that stands in for an online probe's: nearest class mean as ``x @ weight.T + bias``.

    Args:
        features: fit features. Shape: (N, D).
        labels: their classes, int64. Shape: (N,).
        num_classes: C.

    Returns:
        ``{"weight": (C, D), "bias": (C,)}`` float32 on the CPU: ``weight`` the class means mu_c, ``bias``
        ``-|mu_c|^2 / 2`` (the logit is ``-|x - mu_c|^2 / 2`` up to a term shared by the classes).
    """
    x = features.float().cpu()
    onehot = F.one_hot(labels.cpu().long(), num_classes).float()  # (N, C)
    means = (onehot.T @ x) / onehot.sum(dim=0).clamp_min(1).unsqueeze(1)  # (C, D)
    return {"weight": means, "bias": -0.5 * means.pow(2).sum(dim=1)}


BOX_METRICS = ("ap", "ap50", "ap75")
"""The metrics of a detection evaluator: COCO box AP over IoU 0.5:0.95, at 0.5 and at 0.75, in percent."""
BOX_COLOURS = ((220, 30, 30), (30, 30, 220))
"""The two classes of :func:`box_task`: red and blue squares."""


def box_task(registry: Registry, device: torch.device | None = None, seed: int = 0) -> EvalTask:
    """A detection task: 16 fit and 8 target 32 px images with one or two squares each, on :data:`TINY_BACKBONE`.

    A square's class is its colour (red 0, blue 1); images carry their boxes in ``targets`` (xyxy pixels) and
    the class of their first square as the label. ``task.features`` is unused (detectors run the encoder).
    """
    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(seed)

    def draw(high: int) -> int:
        return int(torch.randint(high, (1,), generator=g))

    def images(n: int, key: str) -> ImageSet:
        out = (96 + 24 * torch.rand(n, 3, 32, 32, generator=g)).to(torch.uint8)
        targets = []
        for i in range(n):
            count, boxes, labels = 1 + i % 2, [], []
            for k in range(count):  # one square anywhere, or one in each half of the image
                side, c = 8 + draw(6), draw(2)
                lo, width = (16 * k, 16) if count == 2 else (0, 32)
                x, y = lo + draw(width - side + 1), draw(32 - side + 1)
                out[i, :, y:y + side, x:x + side] = torch.tensor(BOX_COLOURS[c], dtype=torch.uint8)[:, None, None]
                boxes.append([float(x), float(y), float(x + side), float(y + side)])
                labels.append(c)
            targets.append(BoxTargets(torch.tensor(boxes), torch.tensor(labels), torch.zeros(count, dtype=torch.bool)))
        return ImageSet(out, torch.stack([t.labels[0] for t in targets]), ("red", "blue"), key, targets=tuple(targets))

    fit, target = images(16, f"boxes:fit:{seed}"), images(8, f"boxes:target:{seed}")
    cls = registry.get("backbones", TINY_BACKBONE)
    torch.manual_seed(seed)
    encoder = cls(cls.Params()).eval().to(device)
    return EvalTask(encoder=encoder, fit=fit, target=target, num_classes=2,
                    features=lambda s: torch.zeros(len(s), 1, device=device), device=device, seed=seed)


def _check_box_evaluator(registry: Registry, name: str, evaluator: Any, hparams: dict[str, float],
                         device: torch.device) -> None:
    """The :func:`check_evaluator` of a detection evaluator, on :func:`box_task`."""
    task = box_task(registry, device)
    before = copy.deepcopy(task.encoder.state_dict())
    m1, m2 = evaluator.evaluate(task, hparams), evaluator.evaluate(task, hparams)
    assert isinstance(m1, dict) and all(isinstance(v, float | int) for v in m1.values()), (
        f"{name}: evaluate must return a dict of metric name -> float, got {m1!r}")
    assert m1 == m2, f"{name}: not deterministic under one seed ({m1} vs {m2}); seed every draw from task.seed"
    assert set(BOX_METRICS) <= set(m1), f"{name}: metrics {sorted(m1)} lack {', '.join(BOX_METRICS)} (COCO box AP)"
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in m1.values()), (
        f"{name}: metrics must be finite percentages in [0, 100]: {m1}")
    after = task.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), (
        f"{name}: task.encoder changed; later evaluations share it: train a copy (copy.deepcopy)")
