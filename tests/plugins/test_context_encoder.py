"""Tests of the context encoder: the masked L2 loss, mask placement, the decoder, the adversarial term."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from ssl_bench.harness import Backbone, Batch
from ssl_bench.harness.plugins import collect, make_plugin_manager
from ssl_bench.harness.testing import build_method
from ssl_bench.plugins.methods.context_encoder import (
    ContextEncoder,
    image_decoder,
    inpainting_loss,
    region_weights,
)


class Recorder(Backbone):
    """Per-sample features; records its inputs."""

    name = "recorder"

    def __init__(self, dim: int = 5) -> None:
        super().__init__(Backbone.Params())
        self.conv = nn.Conv2d(3, dim, 3, padding=1)
        self.feature_dim = dim
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return self.conv(x).mean(dim=(-2, -1))


def square_mask(b: int, size: int, top: int, left: int, side: int) -> torch.Tensor:
    mask = torch.zeros(b, 1, size, size, dtype=torch.bool)
    mask[..., top:top + side, left:left + side] = True
    return mask


def naive_inpainting_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> float:
    num, den = 0.0, 0.0
    b, c, h, w = pred.shape
    for i in range(b):
        for y in range(h):
            for x in range(w):
                wt = float(weights[i, 0, y, x])
                den += wt * c
                num += wt * sum(float(pred[i, k, y, x] - target[i, k, y, x]) ** 2 for k in range(c))
    return num / den


def small_params(**kw: object) -> ContextEncoder.Params:
    return ContextEncoder.Params.model_validate({"decoder_width": 16, "decoder_px": 8, **kw})


def test_loss_matches_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 6, 6, generator=g), torch.randn(2, 3, 6, 6, generator=g)
    weights = torch.rand(2, 1, 6, 6, generator=g) * (torch.rand(2, 1, 6, 6, generator=g) > 0.5)
    assert inpainting_loss(pred, target, weights).item() == pytest.approx(
        naive_inpainting_loss(pred, target, weights), rel=1e-5)


def test_loss_ignores_pixels_outside_the_mask() -> None:
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    mask = square_mask(3, 8, 2, 3, 4)
    w = region_weights(mask)
    base = inpainting_loss(pred, target, w)
    outside = torch.where(mask, pred, pred + 100 * torch.randn(3, 3, 8, 8, generator=g))
    assert torch.equal(inpainting_loss(outside, target, w), base)
    inside = torch.where(mask, pred + 1, pred)
    assert inpainting_loss(inside, target, w) != base
    pred.requires_grad_()
    inpainting_loss(pred, target, w).backward()
    assert pred.grad is not None
    assert (pred.grad[~mask.expand_as(pred)] == 0).all() and (pred.grad[mask.expand_as(pred)] != 0).all()
    # a perfect reconstruction of the region scores zero whatever the rest of the image
    assert inpainting_loss(torch.where(mask, target, pred), target, w).item() == 0.0


@pytest.mark.parametrize("overlap", [1, 2])
def test_overlap_ring_weights(overlap: int) -> None:
    mask = square_mask(1, 12, 4, 3, 4)
    w = region_weights(mask, overlap, 10.0)
    for y in range(12):
        for x in range(12):
            dy = max(4 - y, 0, y - 7)  # Chebyshev distance to the region (rows 4..7, cols 3..6)
            dx = max(3 - x, 0, x - 6)
            d = max(dy, dx)
            assert float(w[0, 0, y, x]) == (1.0 if d == 0 else 10.0 if d <= overlap else 0.0)
    assert torch.equal(region_weights(mask, 0, 10.0), mask.float())


@pytest.mark.parametrize("mode", ["center", "random"])
def test_backbone_sees_the_view_with_one_block_filled_with_the_mean(mode: str) -> None:
    torch.manual_seed(0)
    method = ContextEncoder(small_params(mask_mode=mode, mask_fraction=0.5), Recorder(), num_classes=10)
    x = torch.randn(16, 3, 8, 8) + 3  # no pixel is 0 before masking
    method.loss(Batch(views=[x], labels=torch.zeros(16, dtype=torch.long)))
    (seen,) = method.backbone.seen
    holes = (seen == 0).all(dim=1)  # (B, H, W): the fill is 0, the normalised dataset mean
    assert torch.equal(seen[~holes.unsqueeze(1).expand_as(x)], x[~holes.unsqueeze(1).expand_as(x)])
    places = set()
    for i in range(16):
        ys, xs = holes[i].nonzero(as_tuple=True)
        assert len(ys) == 16 and ys.max() - ys.min() == 3 and xs.max() - xs.min() == 3  # one 4x4 block
        places.add((int(ys.min()), int(xs.min())))
    if mode == "center":
        assert places == {(2, 2)}
    else:
        assert len(places) > 3  # drawn per image


def test_decoder_shapes_and_sizes() -> None:
    dec = image_decoder(7, 32, 16)
    assert dec(torch.randn(2, 7)).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="power of two"):
        image_decoder(7, 32, 12)
    # a view of another side than decoder_px: the drawing is resized to the view
    method = ContextEncoder(small_params(), Recorder(), num_classes=10)
    assert method.reconstruct(torch.randn(2, 3, 12, 12)).shape == (2, 3, 12, 12)


REGISTRY = collect(make_plugin_manager(load_entrypoints=False))


@pytest.mark.parametrize("backbone", ["convnet_small", "resnet18", "resnet18_cifar", "alexnet_bn"])
def test_decodes_from_the_feature_vector_of_every_backbone(backbone: str) -> None:
    method = build_method(REGISTRY, "context_encoder", backbone, params={"decoder_width": 16})
    x = torch.randn(2, 3, 16, 16)
    assert method.reconstruct(x).shape == x.shape
    loss = method.loss(Batch(views=[x], labels=torch.zeros(2, dtype=torch.long)))
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())


def test_adversarial_term_trains_the_discriminator_on_its_own_loss_only() -> None:
    torch.manual_seed(0)
    assert ContextEncoder(small_params(), Recorder(), num_classes=10).discriminator is None
    method = ContextEncoder(small_params(adversarial_weight=0.5), Recorder(), num_classes=10)
    assert method.discriminator is not None
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g).requires_grad_()
    g_loss, d_loss = method.adversarial(real, fake)
    g_loss.backward(retain_graph=True)
    assert all(p.grad is None for p in method.discriminator.parameters())  # generator term: D frozen
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    fake.grad = None
    d_loss.backward()
    assert fake.grad is None  # discriminator term: the inpainting is detached
    assert all(p.grad is not None for p in method.discriminator.parameters())
    loss = method.loss(Batch(views=[real], labels=torch.zeros(4, dtype=torch.long)))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_params() -> None:
    p = ContextEncoder.Params()
    assert p.views == ("crop_flip",) and p.adversarial_weight == 0 and p.overlap_px == 0
    for bad in ({"mask_mode": "edge"}, {"mask_fraction": 1.0}, {"adversarial_weight": 1.0}, {"overlap_px": -1}):
        with pytest.raises(ValidationError):
            ContextEncoder.Params.model_validate(bad)
