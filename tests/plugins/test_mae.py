"""MAE: the loss against a naive loop, the exact mask ratio, the loss only on masked patches, the encoder on
the visible patches only, refusal of non-ViT backbones, resumable masks.
(Its conformance check runs in tests/test_conformance.py with every other method.)
"""

from __future__ import annotations

import io

import pytest
import torch

from ssl_bench.harness.kit.patches import patchify
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.backbones.vit import IncompatibleBackboneError, ViTTinyCifar
from ssl_bench.plugins.methods.mae import MAE, mae_loss
from tests.plugins.method_inputs import batch


def naive_mae(pred, target, mask, norm_pix) -> float:
    """[0]'s loss as loops: per masked patch, the mean squared error to its (normalised) pixels; mean over them."""
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for n in range(pred.shape[1]):
            if not mask[b, n]:
                continue
            t = [float(v) for v in target[b, n]]
            if norm_pix:
                mean = sum(t) / len(t)
                var = sum((v - mean) ** 2 for v in t) / (len(t) - 1)
                t = [(v - mean) / (var + 1e-6) ** 0.5 for v in t]
            total += sum((float(p) - v) ** 2 for p, v in zip(pred[b, n], t)) / len(t)
            count += 1
    return total / count


def build(**params) -> MAE:
    torch.manual_seed(0)
    vit = ViTTinyCifar(ViTTinyCifar.Params(width=16, depth=2, heads=2))
    return MAE(MAE.Params(**{"decoder_width": 8, "decoder_heads": 2, "decoder_depth": 1, **params}), vit,
               num_classes=4)


def images(n: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_matches_naive_loop(norm_pix):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 6, 12, generator=g), 2 * torch.randn(3, 6, 12, generator=g) + 1
    mask = torch.rand(3, 6, generator=g) < 0.6
    got = mae_loss(pred, target, mask, norm_pix=norm_pix).item()
    assert got == pytest.approx(naive_mae(pred, target, mask, norm_pix), rel=1e-5)


def test_the_mask_ratio_is_exact_and_the_masks_differ_per_sample():
    m = build()
    mask = m.mask(16, (8, 8), torch.device("cpu"))
    assert (mask.sum(dim=1) == 48).all()
    assert len({tuple(r.tolist()) for r in mask}) == 16
    assert (build(mask_ratio=0.5).mask(4, (8, 8), torch.device("cpu")).sum(dim=1) == 32).all()


def test_masks_are_a_resumable_stream_of_the_build_seed():
    a, b = build(), build()
    first = a.mask(4, (8, 8), torch.device("cpu"))
    assert torch.equal(first, b.mask(4, (8, 8), torch.device("cpu")))
    assert not torch.equal(first, a.mask(4, (8, 8), torch.device("cpu"))), "each step draws new masks"
    state = io.BytesIO()
    torch.save(a.state_dict(), state)
    state.seek(0)
    resumed = build()
    resumed.load_state_dict(torch.load(state, weights_only=True))
    assert torch.equal(resumed.mask(4, (8, 8), torch.device("cpu")), a.mask(4, (8, 8), torch.device("cpu")))


def test_the_encoder_sees_the_class_token_and_the_visible_patches_only():
    m = build()
    seen = []
    m.backbone.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    m.loss(batch([images()]))
    assert seen == [torch.Size([4, 1 + 16, 16])]


def test_the_visible_tokens_are_the_backbones_embeddings_of_the_unmasked_patches():
    m = build()
    x = images()
    mask = m.mask(4, (8, 8), torch.device("cpu"))
    captured = []
    m.backbone.blocks[0].register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    _, keep = m.encode_visible(x, mask)
    full = m.backbone.embed(x)  # (B, 1 + 64, D)
    for b in range(4):
        assert torch.equal(keep[b], (~mask[b]).nonzero().flatten())
        assert torch.allclose(captured[0][b, 1:], full[b, 1 + keep[b]], atol=1e-6)
        assert torch.allclose(captured[0][b, 0], full[b, 0])


def test_the_loss_reads_masked_patches_only():
    m = build()
    x = images()
    mask = m.mask(4, (8, 8), torch.device("cpu"))
    latent, keep = m.encode_visible(x, mask)
    pred = m.decode(latent, keep, (8, 8)).detach()
    target = patchify(x, 4)
    loss = mae_loss(pred, target, mask)
    changed = torch.where(mask.unsqueeze(-1), pred, pred + 5.0)  # visible predictions moved
    assert mae_loss(changed, target, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    moved = torch.where(mask.unsqueeze(-1), pred + 0.5, pred)
    assert mae_loss(moved, target, mask).item() != pytest.approx(loss.item(), rel=1e-3)
    # the method's loss is that loss with this step's mask
    again = build()
    assert again.loss(batch([x])).item() == pytest.approx(loss.item(), rel=1e-5)


def test_gradients_reach_encoder_and_decoder():
    m = build()
    m.loss(batch([images()])).backward()
    assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.backbone.blocks.parameters())
    assert m.decoder_pred.weight.grad.abs().sum() > 0


def test_defaults_and_refusal_of_other_backbones():
    p = MAE.Params()
    assert (p.mask_ratio, p.norm_pix_loss, p.views) == (0.75, True, ("crop_flip",))
    with pytest.raises(IncompatibleBackboneError, match="method 'mae' needs a vision transformer.*'convnet_small'"):
        MAE(MAE.Params(), ConvNetSmall(ConvNetSmall.Params(width=4)), num_classes=4)
    with pytest.raises(ValueError, match="multiple of decoder_heads"):
        MAE.Params(decoder_width=12, decoder_heads=5)

