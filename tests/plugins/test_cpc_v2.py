from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.harness.components import Batch
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.cpc_v2 import CPCv2, context_network, cpc_infonce, patch_grid


def naive_cpc_infonce(predictions, z, offsets):
    """Mean over images b, offsets k, rows i, columns j of -log softmax of pred . z over all patches."""
    b, d, g, _ = z.shape
    everything = [(bb, u, v) for bb in range(b) for u in range(g) for v in range(g)]
    total, count = 0.0, 0
    for k, pred in zip(offsets, predictions):
        for n in range(b):
            for i in range(g - k):
                for j in range(g):
                    p = pred[n, :, i, j]
                    scores = [float(p @ z[bb, :, u, v]) for bb, u, v in everything]
                    pos = float(p @ z[n, :, i + k, j])
                    top = max(scores)
                    log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
                    total += log_sum - pos
                    count += 1
    return total / count


def build(**params) -> CPCv2:
    """A tiny CPC v2; per-patch augmentation off unless asked for, so patch features are deterministic."""
    params = {"patch_jitter_strength": 0.0, "patch_grayscale_p": 0.0, **params}
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=4, stages=2))
    return CPCv2(CPCv2.Params(**params), backbone, num_classes=4)


@pytest.mark.parametrize("g,offsets", [(3, (1,)), (3, (1, 2)), (3, (2,)), (4, (2, 3))])
def test_infonce_matches_naive_loop(g, offsets):
    gen = torch.Generator().manual_seed(g * 10 + len(offsets))
    z = torch.randn(3, 5, g, g, generator=gen)
    preds = [torch.randn(3, 5, g - o, g, generator=gen) for o in offsets]
    assert cpc_infonce(preds, z, offsets).item() == pytest.approx(naive_cpc_infonce(preds, z, offsets), rel=1e-5)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_cosine_infonce_is_raw_infonce_of_normalised_inputs_over_t(t):
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(2, 4, 3, 3, generator=gen)
    preds = [torch.randn(2, 4, 1, 3, generator=gen)]
    unit = [torch.nn.functional.normalize(preds[0], dim=1) / t]
    expected = naive_cpc_infonce(unit, torch.nn.functional.normalize(z, dim=1), (2,))
    assert cpc_infonce(preds, z, (2,), temperature=t).item() == pytest.approx(expected, rel=1e-5)
    assert cpc_infonce([3 * preds[0]], 5 * z, (2,), temperature=t).item() == pytest.approx(expected, rel=1e-5)


def test_infonce_known_values():
    z = torch.zeros(2, 4, 3, 3)
    preds = [torch.zeros(2, 4, 2, 3)]
    assert cpc_infonce(preds, z, (1,)).item() == pytest.approx(math.log(18), rel=1e-6)  # all scores equal
    # one-hot embeddings, each prediction a large multiple of its target: the loss vanishes
    z = torch.eye(18).reshape(2, 3, 3, 18).permute(0, 3, 1, 2).contiguous()
    preds = [50 * z[:, :, 1:], 50 * z[:, :, 2:]]
    assert cpc_infonce(preds, z, (1, 2)).item() == pytest.approx(0.0, abs=1e-6)
    # ... and a wrong target (the row itself instead of the row below) is heavily penalised
    assert cpc_infonce([50 * z[:, :, :2]], z, (1,)).item() > 40


def test_patch_grid_positions():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    p = patch_grid(x, 16, 8)
    assert p.shape == (2, 3, 3, 3, 16, 16)
    assert torch.equal(p[1, 2, 1], x[1, :, 16:32, 8:24])
    assert patch_grid(x, 8, 4).shape == (2, 7, 7, 3, 8, 8)
    with pytest.raises(ValueError):
        patch_grid(x[..., :30], 16, 8)


@pytest.mark.parametrize("row", [0, 1, 2, 3])
def test_context_is_causal_over_rows(row):
    torch.manual_seed(0)
    net = context_network(6, 8, blocks=2, kernel=3)
    z = torch.randn(2, 6, 5, 5, requires_grad=True)
    c = net(z)
    c[:, :, row].sum().backward()
    grad_rows = z.grad.abs().sum(dim=(0, 1, 3))  # (G,)
    assert torch.all(grad_rows[row + 1:] == 0), "context of a row depends on rows below it"
    assert torch.all(grad_rows[: row + 1] > 0), "context ignores rows above it"
    # perturbation: changing rows below `row` leaves the contexts up to `row` unchanged
    z2 = z.detach().clone()
    z2[:, :, row + 1:] += torch.randn_like(z2[:, :, row + 1:])
    with torch.no_grad():
        assert torch.allclose(net(z2)[:, :, : row + 1], net(z.detach())[:, :, : row + 1], atol=1e-6)


def test_predictions_use_only_rows_above_their_target():
    m = build(context_dim=8, min_offset=1, max_offset=2, target_dim=6)
    z = torch.randn(2, m.backbone.feature_dim, 4, 4, requires_grad=True)
    preds = m.predict(z)
    assert [tuple(p.shape) for p in preds] == [(2, 6, 3, 4), (2, 6, 2, 4)]
    preds[1][:, :, 1].sum().backward()  # predicts row 3 from the context of row 1
    assert torch.all(z.grad[:, :, 2:] == 0) and z.grad[:, :, :2].abs().sum() > 0
    assert m.targets(z).shape == (2, 6, 4, 4)


def test_emb_scale_scales_predictions():
    a, b = build(emb_scale=1.0), build(emb_scale=0.1)
    z = torch.randn(2, a.backbone.feature_dim, 3, 3)
    assert torch.allclose(b.predict(z)[0], 0.1 * a.predict(z)[0], atol=1e-6)


@pytest.mark.parametrize("resize", [None, 32])
def test_feature_grid_shape_and_backbone_per_patch(resize):
    m = build(patch_resize_px=resize).eval()
    x = torch.randn(2, 3, 32, 32)
    patches = patch_grid(x, 16, 8)
    z = m.encode_patches(patches)
    assert z.shape == (2, m.backbone.feature_dim, 3, 3)
    one = patches[1, 2, 0].unsqueeze(0)
    if resize:
        one = torch.nn.functional.interpolate(one, size=resize, mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(z[1, :, 2, 0], m.backbone(one)[0], atol=1e-5)


@pytest.mark.parametrize("directions", [1, 2, 4])
def test_loss_is_finite_and_trains_backbone_and_context(directions):
    m = build(directions=directions, patch_resize_px=None)
    batch = Batch(views=[torch.randn(4, 3, 32, 32)], labels=torch.zeros(4, dtype=torch.long))
    loss = m.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for module in (m.backbone, m.context, m.predictors, m.target):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_one_direction_equals_plain_infonce():
    m = build(directions=1, patch_resize_px=None).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        z = m.encode_patches(patch_grid(x, m.params.patch_px, m.params.stride_px))
        expected = cpc_infonce(m.predict(z), m.targets(z), (1, 2), temperature=0.2)
        raw = build(directions=1, temperature=None).eval()
        z_raw = raw.encode_patches(patch_grid(x, 20, 6))
        expected_raw = cpc_infonce(raw.predict(z_raw), raw.targets(z_raw), (1, 2))
        got_raw = raw.loss(Batch(views=[x], labels=torch.zeros(3, dtype=torch.long)))
        got = m.loss(Batch(views=[x], labels=torch.zeros(3, dtype=torch.long)))
    assert torch.allclose(got, expected)
    assert torch.allclose(got_raw, expected_raw)


def test_patch_jitter_changes_patches_and_is_resumable():
    m = build(patch_jitter_strength=0.5, patch_resize_px=None).eval()
    plain = build(patch_resize_px=None).eval()
    patches = patch_grid(torch.rand(2, 3, 32, 32), 16, 8)
    with torch.no_grad():
        assert not torch.allclose(m.encode_patches(patches), plain.encode_patches(patches))
        first = m.encode_patches(patches)
        assert int(m.draws[1]) == 2
        m.draws[1] = 1  # a restored counter replays the same draws
        assert torch.equal(m.encode_patches(patches), first)


def test_bad_offsets_are_errors():
    m = build(max_offset=3)
    with pytest.raises(ValueError, match="max_offset"):
        m.loss(Batch(views=[torch.randn(2, 3, 32, 32)], labels=torch.zeros(2, dtype=torch.long)))
    with pytest.raises(ValueError, match="min_offset"):
        build(min_offset=3, max_offset=2)


def test_patch_grayscale_one_turns_every_patch_grey():
    from ssl_bench.harness.data import normalize
    from ssl_bench.harness.kit.augment import rgb_to_grayscale
    from ssl_bench.plugins.methods.cpc_v2 import denormalize

    m = build(patch_grayscale_p=1.0, patch_resize_px=None).eval()
    patches = patch_grid(normalize(torch.rand(2, 3, 32, 32)), 16, 8)
    grey = normalize(rgb_to_grayscale(denormalize(patches.flatten(0, 2))).expand(-1, 3, -1, -1))
    with torch.no_grad():
        expected = m.backbone(grey).reshape(2, 3, 3, -1).permute(0, 3, 1, 2)
        assert torch.allclose(m.encode_patches(patches), expected, atol=1e-5)
