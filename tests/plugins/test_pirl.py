"""Tests of PIRL: the NCE/InfoNCE loss against loops, the lambda mix, the memory bank, the tile branch."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.nn import functional as F

from ssl_bench.harness import BenchError
from ssl_bench.harness.components import Batch, instantiate_method
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.methods.pirl import PIRL, pirl_nce

NUM_SAMPLES = 20


def naive_nce(q, pos, negs, t, objective, keep):
    """Eq. 3-4 of PIRL ("nce", Z = mean of exp over the kept negatives) or InfoNCE, as plain loops."""
    q, pos, negs = F.normalize(q, dim=1), F.normalize(pos, dim=1), F.normalize(negs, dim=1)
    sims = [[float(q[i] @ n) / t for n in negs] for i in range(len(q))]
    kept = [math.exp(s) for i, row in enumerate(sims) for j, s in enumerate(row) if keep[i][j]]
    z = sum(kept) / len(kept)
    total = 0.0
    for i in range(len(q)):
        e_pos = math.exp(float(q[i] @ pos[i]) / t)
        e_negs = [math.exp(s) for j, s in enumerate(sims[i]) if keep[i][j]]
        if objective == "infonce":
            total += -math.log(e_pos / (e_pos + sum(e_negs)))
        else:
            c = len(negs) * z
            total += -math.log(e_pos / (e_pos + c)) - sum(math.log(1 - e / (e + c)) for e in e_negs)
    return total / len(q)


def build(**params) -> PIRL:
    torch.manual_seed(0)
    backbone = ConvNetSmall(ConvNetSmall.Params(width=8, stages=2))
    p = {"num_negatives": 8, "proj_dim": 16, "negatives": "bank", **params}  # most tests check [0]'s bank form
    return instantiate_method(PIRL, PIRL.Params(**p), backbone, num_classes=4, num_samples=NUM_SAMPLES)


def batch(n: int = 6, seed: int = 0, indices=None) -> Batch:
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(n) if indices is None else torch.as_tensor(indices)
    return Batch(views=[torch.randn(n, 3, 32, 32, generator=g) for _ in range(2)],
                 labels=torch.zeros(n, dtype=torch.long), indices=idx)


@pytest.mark.parametrize("objective", ["infonce", "nce"])
@pytest.mark.parametrize("t", [0.07, 0.5])
def test_loss_matches_naive_loop(objective, t):
    g = torch.Generator().manual_seed(1)
    q, pos, negs = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), torch.randn(7, 4, generator=g)
    keep = torch.rand(5, 7, generator=g) > 0.3
    expected = naive_nce(q.double(), pos.double(), negs.double(), t, objective, keep.tolist())
    assert pirl_nce(q, pos, negs, t, objective, keep).item() == pytest.approx(expected, rel=1e-4)


def test_infonce_known_value_and_masked_negatives_do_not_count():
    q = torch.ones(3, 4)
    negs = torch.ones(9, 4)
    assert pirl_nce(q, q, negs, 0.5).item() == pytest.approx(math.log(10), rel=1e-6)
    keep = torch.zeros(3, 9, dtype=torch.bool)
    keep[:, :4] = True
    assert pirl_nce(q, q, negs, 0.5, "infonce", keep).item() == pytest.approx(math.log(5), rel=1e-6)


def naive_batch_loss(z_t, f, t, lam):
    """Symmetric InfoNCE between the branches, one image at a time."""
    def direction(a, b):
        total = 0.0
        for i in range(len(a)):
            sims = [float(F.cosine_similarity(a[i], b[j], dim=0)) / t for j in range(len(b))]
            total += -sims[i] + math.log(sum(math.exp(s) for s in sims))
        return total / len(a)
    return lam * direction(z_t, f) + (1 - lam) * direction(f, z_t)


@pytest.mark.parametrize("lam", [0.5, 0.2])
def test_batch_negatives_are_the_symmetric_infonce_between_branches(monkeypatch, lam):
    m = build(negatives="batch", loss_lambda=lam, temperature=0.3)
    embedded = {}
    real_f, real_tiles = m.f.forward, m.embed_tiles
    monkeypatch.setattr(m.f, "forward", lambda x: embedded.setdefault("f", real_f(x)))
    monkeypatch.setattr(m, "embed_tiles", lambda tiles: embedded.setdefault("z_t", real_tiles(tiles)))
    loss = m.loss(batch())
    expected = naive_batch_loss(embedded["z_t"].detach().double(), embedded["f"].detach().double(), 0.3, lam)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()
    m.on_step_end(1, 10)
    assert m.f[0].weight.grad.abs().sum() > 0 and m.g.weight.grad.abs().sum() > 0  # both branches learn
    assert m.bank.numel() == 0 and m.seen.numel() == 0  # no bank in this form, none allocated


def test_lambda_limits_give_the_single_terms(monkeypatch):
    calls: list[torch.Tensor] = []
    import ssl_bench.plugins.methods.pirl as mod

    real = mod.pirl_nce

    def spy(query, *args):
        value = real(query, *args)
        calls.append(value.detach())
        return value

    monkeypatch.setattr(mod, "pirl_nce", spy)
    for lam in (0.0, 1.0, 0.3):
        calls.clear()
        m = build(loss_lambda=lam)
        total = m.loss(batch())
        jigsaw_term, image_term = calls
        assert not torch.allclose(jigsaw_term, image_term)
        assert total.item() == pytest.approx((lam * jigsaw_term + (1 - lam) * image_term).item(), rel=1e-6)
    # lambda = 1: no gradient reaches f's weights (f only enters through the image term)
    m = build(loss_lambda=1.0)
    m.loss(batch()).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.f.parameters())
    assert m.g.weight.grad is not None and m.g.weight.grad.abs().sum() > 0
    m = build(loss_lambda=0.0)
    m.loss(batch()).backward()
    assert m.g.weight.grad is None or m.g.weight.grad.abs().sum() == 0


def test_bank_ema_update():
    m = build(bank_momentum=0.5)
    idx = torch.tensor([3, 7])
    first = F.normalize(torch.randn(2, 16), dim=1)
    untouched = m.bank.clone()
    m.update_bank(idx, 2 * first)  # unseen rows: written, normalised
    assert torch.allclose(m.bank[idx], first, atol=1e-6) and m.seen[idx].all() and m.seen.sum() == 2
    keep = torch.ones(NUM_SAMPLES, dtype=torch.bool)
    keep[idx] = False
    assert torch.equal(m.bank[keep], untouched[keep])
    second = F.normalize(torch.randn(2, 16), dim=1)
    m.update_bank(idx, second)
    assert torch.allclose(m.bank[idx], F.normalize(0.5 * first + 0.5 * second, dim=1), atol=1e-6)
    assert torch.allclose(m.bank.norm(dim=1), torch.ones(NUM_SAMPLES), atol=1e-5)


def test_step_updates_the_rows_of_batch_indices_with_f_features():
    m = build()
    b = batch(n=4, indices=[5, 11, 2, 17])
    before = m.bank.clone()
    with torch.no_grad():  # train-mode BN depends on the batch only: the f(v_I) the step computes
        f = F.normalize(m.f(m.backbone(b.views[0])), dim=1)
    m.loss(b).backward()
    m.on_step_end(1, 10)
    rows = torch.tensor([5, 11, 2, 17])
    assert m.seen.nonzero().flatten().tolist() == sorted(rows.tolist())
    others = torch.ones(NUM_SAMPLES, dtype=torch.bool)
    others[rows] = False
    assert torch.equal(m.bank[others], before[others])
    assert torch.allclose(m.bank[rows], f, atol=1e-5)  # row i holds sample i's features, in order
    assert not torch.allclose(m.bank[rows.flip(0)], f, atol=1e-2)


def test_indices_honoured_positive_is_the_bank_row():
    m = build(num_negatives=NUM_SAMPLES)
    m.seen.fill_(True)
    b = batch(n=4, indices=[1, 2, 3, 4])
    l1 = m.loss(b)
    m.draws[1] -= 1  # the same draw again (same negatives, same tiles)
    m.bank[[1, 2, 3, 4]] = F.normalize(torch.randn(4, 16), dim=1)
    assert not torch.allclose(l1, m.loss(b))
    m.draws[1] -= 1
    l2 = m.loss(b)
    m.draws[1] -= 1
    m.bank[[10, 11]] = F.normalize(torch.randn(2, 16), dim=1)  # negatives only
    assert not torch.allclose(l2, m.loss(b))
    with pytest.raises(BenchError):
        m.loss(Batch(views=b.views, labels=b.labels))


def test_own_row_is_never_a_negative():
    m = build(num_negatives=NUM_SAMPLES)
    neg = m.negatives(0, torch.device("cpu"))
    assert sorted(neg.tolist()) == list(range(NUM_SAMPLES))  # all rows, each once
    assert torch.equal(m.negatives(3, torch.device("cpu")), m.negatives(3, torch.device("cpu")))
    assert not torch.equal(m.negatives(3, torch.device("cpu")), m.negatives(4, torch.device("cpu")))


def test_tiles_are_shuffled_and_fed_tile_wise():
    m = build(jitter_strength=0.0, grayscale_p=0.0, tile_resize_px=12)
    x = torch.randn(2, 3, 32, 32)
    tiles = m.jigsaw(x, torch.Generator().manual_seed(0))
    assert tiles.shape == (2, 9, 3, 8, 8)
    # every tile is a crop of the image at a place inside one of the 9 cells of 10 px (grid origin 1)
    found = set()
    for j in range(9):
        hits = [(r, c) for r in range(1, 24) for c in range(1, 24)
                if torch.equal(x[0, :, r:r + 8, c:c + 8], tiles[0, j])]
        assert len(hits) == 1
        found.add(((hits[0][0] - 1) // 10, (hits[0][1] - 1) // 10))
    assert len(found) == 9
    seen_shapes = []
    handle = m.backbone.register_forward_hook(lambda mod, inp, out: seen_shapes.append(tuple(inp[0].shape)))
    try:
        assert m.embed_tiles(tiles).shape == (2, 16)
    finally:
        handle.remove()
    assert seen_shapes == [(18, 3, 12, 12)]


def test_same_seed_reproduces_and_checkpoint_round_trips_the_bank():
    m = build()
    b = batch()
    m.loss(b).backward()
    m.on_step_end(1, 10)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    other = PIRL(m.params, ConvNetSmall(ConvNetSmall.Params(width=8, stages=2)), num_classes=4,
                 num_samples=NUM_SAMPLES)
    assert not torch.equal(other.bank, m.bank)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(other.bank, m.bank) and torch.equal(other.seen, m.seen)
    assert torch.equal(other.draws, m.draws)
    m.eval(), other.eval()  # resumed run: the next step draws and computes exactly the same
    assert torch.equal(m.loss(batch(seed=2)), other.loss(batch(seed=2)))


@pytest.mark.parametrize("fresh", [True, False])
def test_positive_is_the_bank_row_before_or_after_this_steps_update(monkeypatch, fresh):
    import ssl_bench.plugins.methods.pirl as mod

    positives: list[torch.Tensor] = []
    real = mod.pirl_nce
    monkeypatch.setattr(mod, "pirl_nce", lambda q, pos, *a: positives.append(pos) or real(q, pos, *a))
    m = build(fresh_positive=fresh)
    b = batch(n=4, indices=[0, 3, 6, 9])
    m.update_bank(torch.tensor([0, 3]), torch.randn(2, 16))  # rows 0, 3 seen; 6, 9 not
    old = m.bank.clone()
    with torch.no_grad():
        f = F.normalize(m.f(m.backbone(b.views[0])), dim=1)
    m.loss(b)
    expected = torch.cat([F.normalize(0.5 * old[[0, 3]] + 0.5 * f[:2], dim=1) if fresh else old[[0, 3]], f[2:]])
    for pos in positives:  # unseen rows take f(v_I) in both orders
        assert torch.allclose(pos, expected, atol=1e-5)


@pytest.mark.parametrize("tile_bn_stats", [False, True])
def test_tile_pass_leaves_bn_running_stats_to_whole_images(tile_bn_stats):
    m = build(tile_bn_stats=tile_bn_stats)
    bn = next(x for x in m.backbone.modules() if isinstance(x, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    m.embed_tiles(m.jigsaw(torch.randn(2, 3, 32, 32), torch.Generator().manual_seed(0)))
    assert torch.equal(bn.running_mean, before) != tile_bn_stats
    assert bn.momentum == 0.1  # restored
    m.backbone(torch.randn(2, 3, 32, 32))
    assert not torch.equal(bn.running_mean, before)


def test_mlp_head_option():
    m = build(head="mlp")
    assert isinstance(m.f, torch.nn.Sequential) and isinstance(m.tile_proj, torch.nn.Sequential)
    assert isinstance(build(head="linear").f, torch.nn.Linear)
    loss = m.loss(batch())
    loss.backward()
    assert torch.isfinite(loss) and m.f[0].weight.grad.abs().sum() > 0
