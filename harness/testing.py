"""Conformance checks for components, shipped to plugin authors.

The ``bench_registry`` fixture comes with ssl-bench (see :mod:`ssl_bench.harness.pytest_plugin`), so a
third-party package's tests can write::

    from ssl_bench.harness.testing import check_method
    def test_my_method(bench_registry):
        check_method(bench_registry, "my_method")

Every check raises AssertionError with a message naming the component.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from ssl_bench.harness.components import Batch, EvalTask, instantiate_method
from ssl_bench.harness.data import ImageSet, normalize, to_float
from ssl_bench.harness.plugins import Registry

TINY_BACKBONE = "convnet_small"


def tiny_images(n: int = 8, size: int = 32, seed: int = 0, num_classes: int = 4) -> ImageSet:
    """Random uint8 images (n, 3, size, size) with balanced labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % num_classes
    return ImageSet(images, labels, tuple(str(i) for i in range(num_classes)), f"tiny:{n}:{size}:{seed}")


def build_method(registry: Registry, name: str, backbone: str = TINY_BACKBONE, seed: int = 0,
                 params: dict[str, Any] | None = None, num_classes: int = 4, num_samples: int = 64) -> Any:
    torch.manual_seed(seed)
    bb_cls = registry.get("backbones", backbone)
    cls = registry.get("methods", name)
    return instantiate_method(cls, cls.Params.model_validate(params or {}), bb_cls(bb_cls.Params()),
                              num_classes=num_classes,
                        num_samples=num_samples)


def method_batch(registry: Registry, method: Any, data: ImageSet, seed: int = 0) -> Batch:
    """Views of ``data`` made by the method's own pipelines."""
    g = torch.Generator().manual_seed(seed)
    x = to_float(data.images)
    views = []
    for name in method.views:
        cls = registry.get("augmentations", name)
        views.append(normalize(cls(cls.Params())(x, generator=g)))
    return Batch(views=views, labels=data.labels, indices=torch.arange(len(data)))


def method_loss(registry: Registry, method: Any, data: ImageSet, seed: int = 0) -> torch.Tensor:
    loss: torch.Tensor = method.loss(method_batch(registry, method, data, seed))
    return loss


def check_method(registry: Registry, name: str, backbone: str = TINY_BACKBONE) -> None:
    """Builds, takes one CPU step with a finite loss, is seed-deterministic, round-trips a checkpoint."""
    cls = registry.get("methods", name)
    params = cls.Params()
    assert cls.Params.model_validate(params.model_dump()) == params, f"{name}: Params do not round-trip"
    method = build_method(registry, name, backbone)
    assert method.backbone.feature_dim > 0, f"{name}: backbone feature_dim missing"
    if not cls.trains:
        return
    data = tiny_images()
    method.train()
    loss = method_loss(registry, method, data)
    assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss is not a finite scalar: {loss}"
    opt = torch.optim.SGD(method.parameters(), lr=0.01)
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for p in method.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no gradient reaches the backbone"
    opt.step()
    method.on_step_end(1, 10)
    again = build_method(registry, name, backbone)
    again.train()
    l1 = method_loss(registry, again, data, seed=1)
    again2 = build_method(registry, name, backbone)
    again2.train()
    l2 = method_loss(registry, again2, data, seed=1)
    assert torch.equal(l1, l2), f"{name}: the same seed gives different losses ({l1} vs {l2})"
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = build_method(registry, name, backbone, seed=123)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    method.eval()
    restored.eval()
    with torch.no_grad():
        x = normalize(to_float(data.images))
        assert torch.allclose(method.backbone(x), restored.backbone(x)), f"{name}: checkpoint does not round-trip"


def check_augmentation(registry: Registry, name: str) -> None:
    """Per-sample parameters, seed determinism, float output in [0, 1] on the input's device."""
    cls = registry.get("augmentations", name)
    aug = cls(cls.Params())
    x = to_float(tiny_images(n=1).images).repeat(6, 1, 1, 1)
    a = aug(x, generator=torch.Generator().manual_seed(0))
    b = aug(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b), f"{name}: the same seed gives different outputs"
    assert a.dtype == torch.float32 and a.device == x.device, f"{name}: output must stay float32 on the input device"
    assert a.min() >= 0 and a.max() <= 1, f"{name}: output leaves [0, 1]"
    assert a.shape[0] == 6, f"{name}: batch size changed"


def check_backbone(registry: Registry, name: str) -> None:
    """(B, C, H, W) -> (B, feature_dim) at two input sizes."""
    cls = registry.get("backbones", name)
    model = cls(cls.Params()).eval()
    for size in (32, 64):
        with torch.no_grad():
            out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, model.feature_dim), f"{name}: output {tuple(out.shape)} at {size}px"


def check_evaluator(registry: Registry, name: str) -> None:
    """Well-formed metrics in [0, 100], identical under the same seed."""
    cls = registry.get("evaluators", name)
    evaluator = cls(cls.Params())
    fit, target = tiny_images(40, seed=1), tiny_images(20, seed=2)
    feats = {fit.key: torch.nn.functional.one_hot(fit.labels, 4).float(),
             target.key: torch.nn.functional.one_hot(target.labels, 4).float()}
    task = EvalTask(encoder=torch.nn.Flatten(), fit=fit, target=target, num_classes=4,
                    features=lambda s: feats[s.key], device=torch.device("cpu"), seed=0)
    hp = {k: v[0] for k, v in cls.search_space.items()}
    m1, m2 = evaluator.evaluate(task, hp), evaluator.evaluate(task, hp)
    assert m1 == m2, f"{name}: not deterministic under one seed"
    assert "top1" in m1 and all(0 <= v <= 100 for v in m1.values()), f"{name}: malformed metrics {m1}"
