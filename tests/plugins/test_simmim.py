"""SimMIM: the loss against a naive loop over pixels, the exact mask ratio on a grid of mask patches, the
loss only on masked pixels, mask tokens in the encoder's input, refusal of non-ViT backbones.
(Its conformance check runs in tests/test_conformance.py with every other method.)
"""

from __future__ import annotations

import pytest
import torch

from ssl_bench.harness.kit.patches import patchify
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.backbones.vit import IncompatibleBackboneError, ViTTinyCifar
from ssl_bench.plugins.methods.simmim import SimMIM, simmim_loss
from tests.plugins.method_inputs import batch


def naive_simmim(pred_img, img, pixel_mask) -> float:
    """[0]'s code as loops over pixels: sum |x - x_rec| over masked pixels and channels / (masked pixels) / C."""
    b, c, h, w = img.shape
    total, masked = 0.0, 0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if pixel_mask[i, y, x]:
                    masked += 1
                    total += sum(abs(float(pred_img[i, ch, y, x]) - float(img[i, ch, y, x])) for ch in range(c))
    return total / (masked + 1e-5) / c


def unpatchify(p: torch.Tensor, patch: int, h: int, w: int) -> torch.Tensor:
    b = p.shape[0]
    x = p.reshape(b, h // patch, w // patch, patch, patch, 3).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, 3, h, w)


def build(**params) -> SimMIM:
    torch.manual_seed(0)
    vit = ViTTinyCifar(ViTTinyCifar.Params(width=16, depth=2, heads=2))
    return SimMIM(SimMIM.Params(**params), vit, num_classes=4)


def images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_loss_matches_naive_loop_over_pixels():
    g = torch.Generator().manual_seed(0)
    img, rec = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mask = torch.rand(2, 4, generator=g) < 0.5  # 2 x 2 grid of 4 px patches
    pixel_mask = mask.view(2, 2, 1, 2, 1).expand(2, 2, 4, 2, 4).reshape(2, 8, 8)
    got = simmim_loss(patchify(rec, 4), patchify(img, 4), mask).item()
    assert got == pytest.approx(naive_simmim(rec, img, pixel_mask), rel=1e-5)
    assert torch.equal(unpatchify(patchify(img, 4), 4, 8, 8), img)


def test_mask_ratio_is_exact_on_the_mask_patch_grid():
    m = build()
    mask = m.mask(8, (8, 8), torch.device("cpu"))
    assert (mask.sum(dim=1) == 39).all()  # ceil(64 * 0.6)
    coarse = build(mask_patch_px=8).mask(8, (8, 8), torch.device("cpu"))
    assert (coarse.sum(dim=1) == 4 * 10).all()  # ceil(16 * 0.6) cells of 2 x 2 patches
    blocks = coarse.view(8, 4, 2, 4, 2).sum(dim=(2, 4))
    assert ((blocks == 0) | (blocks == 4)).all()


def test_mask_tokens_replace_the_masked_patch_embeddings_before_positions():
    m = build()
    x = images()
    mask = m.mask(4, (8, 8), torch.device("cpu"))
    captured = []
    m.backbone.blocks[0].register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    m.reconstruct(x, mask)
    seq = captured[0]
    assert seq.shape == (4, 65, 16), "the encoder sees every patch"
    patches, _ = m.backbone.embed.patches(x)
    pos = m.backbone.embed.positions((8, 8))
    want = torch.where(mask.unsqueeze(-1), m.mask_token.expand(4, 64, 16), patches) + pos
    assert torch.allclose(seq[:, 1:], want, atol=1e-6)
    assert torch.allclose(seq[:, 0], m.backbone.embed.cls(4)[:, 0])


def test_the_loss_reads_masked_pixels_only():
    m = build()
    x = images()
    mask = m.mask(4, (8, 8), torch.device("cpu"))
    pred, target = m.reconstruct(x, mask).detach(), patchify(x, 4)
    loss = simmim_loss(pred, target, mask)
    visible_moved = torch.where(mask.unsqueeze(-1), pred, pred - 3.0)
    assert simmim_loss(visible_moved, target, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    masked_moved = torch.where(mask.unsqueeze(-1), pred + 1.0, pred)
    assert simmim_loss(masked_moved, target, mask).item() != pytest.approx(loss.item(), rel=1e-3)
    assert build().loss(batch([x])).item() == pytest.approx(loss.item(), rel=1e-5)


def test_gradients_reach_the_mask_token_the_encoder_and_the_head():
    m = build()
    m.loss(batch([images()])).backward()
    assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0
    assert m.head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.backbone.blocks.parameters())


def test_defaults_and_refusals():
    p = SimMIM.Params()
    assert (p.mask_ratio, p.mask_patch_px, p.views) == (0.6, None, ("crop_flip",))
    with pytest.raises(IncompatibleBackboneError, match="method 'simmim' needs a vision transformer"):
        SimMIM(SimMIM.Params(), ConvNetSmall(ConvNetSmall.Params(width=4)), num_classes=4)
    with pytest.raises(IncompatibleBackboneError, match="mask_patch_px 6 must be a multiple"):
        build(mask_patch_px=6)

