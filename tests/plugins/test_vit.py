"""vit_tiny_cifar: the Backbone contract, its parts (patches, positions, class token, blocks), stages, and
that every method takes a step on it."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from ssl_bench.harness.testing import SMALL_VIT, build_method, check_backbone, method_loss, tiny_images
from ssl_bench.plugins.backbones.convnet import ConvNetSmall
from ssl_bench.plugins.backbones.vit import IncompatibleBackboneError, ViTTinyCifar, require_vit, sincos_table


def small(**params) -> ViTTinyCifar:
    torch.manual_seed(0)
    return ViTTinyCifar(ViTTinyCifar.Params(**{"width": 16, "depth": 2, "heads": 2, **params}))


def test_defaults_are_vit_tiny_width_and_heads_at_half_depth():
    m = ViTTinyCifar(ViTTinyCifar.Params())
    assert (m.feature_dim, len(m.blocks), m.blocks[0].heads, m.patch_px) == (192, 6, 3, 4)
    assert m.embed.pos_embed.shape == (1, 1 + 64, 192) and isinstance(m.embed.pos_embed, nn.Parameter)
    assert m.params.pool == "mean"


@pytest.mark.parametrize("size", [32, 64, 14])
def test_forward_shape_and_gradients_at_any_size(size):
    m = small()
    x = torch.randn(3, 3, size, size, requires_grad=True)
    out = m(x)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.parameters())


def test_the_feature_is_the_mean_patch_token_or_the_class_token():
    x = torch.randn(2, 3, 32, 32)
    for pool in ("mean", "cls"):
        m = small(pool=pool)
        tokens = m.encode(m.embed(x))
        assert tokens.shape == (2, 65, 16)
        want = tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(dim=1)
        assert torch.allclose(m(x), want)


def test_embedding_is_patches_plus_positions_behind_the_class_token():
    m = small()
    x = torch.randn(2, 3, 32, 32)
    patches, grid = m.embed.patches(x)
    assert grid == (8, 8) and patches.shape == (2, 64, 16)
    # the projection is a per-patch linear map of the patch's pixels
    w = m.embed.proj.weight  # (D, 3, 4, 4)
    by_hand = torch.einsum("dcij,bcij->bd", w, x[:, :, 4:8, 8:12]) + m.embed.proj.bias
    assert torch.allclose(patches[:, 1 * 8 + 2], by_hand, atol=1e-5)
    tokens = m.embed(x)
    assert torch.allclose(tokens[:, 1:], patches + m.embed.pos_embed[:, 1:])
    assert torch.allclose(tokens[:, 0], (m.embed.cls_token + m.embed.pos_embed[:, 0]).expand(2, 1, 16)[:, 0])


def test_other_sizes_resize_the_table_and_pad_to_whole_patches():
    m = small()
    assert torch.equal(m.embed.positions((8, 8)), m.embed.pos_embed[:, 1:])
    assert m.embed.positions((4, 4)).shape == (1, 16, 16)
    padded = m.embed.pad(torch.ones(1, 3, 14, 13))
    assert padded.shape == (1, 3, 16, 16) and padded[..., 14:, :].abs().sum() == 0 and padded[..., 13:].abs().sum() == 0
    fixed = small(pos_embed="sincos")
    assert "embed.pos_embed" not in fixed.state_dict() and not isinstance(fixed.embed.pos_embed, nn.Parameter)
    assert torch.allclose(fixed.embed.positions((4, 6)), sincos_table(16, 4, 6).unsqueeze(0))


def test_sincos_table_known_values():
    t = sincos_table(8, 2, 3)  # quarter 2: omega = (1, 1/100)
    assert t.shape == (6, 8)
    r, c = 1, 2
    omega = [1.0, 0.01]
    expected = ([math.sin(r * o) for o in omega] + [math.cos(r * o) for o in omega]
                + [math.sin(c * o) for o in omega] + [math.cos(c * o) for o in omega])
    assert t[r * 3 + c].tolist() == pytest.approx(expected, rel=1e-6)


def test_attention_block_matches_torch_multihead_attention():
    torch.manual_seed(0)
    m = small()
    block = m.blocks[0]
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.qkv.weight)
        mha.in_proj_bias.copy_(block.qkv.bias)
        mha.out_proj.weight.copy_(block.proj.weight)
        mha.out_proj.bias.copy_(block.proj.bias)
    x = torch.randn(2, 5, 16)
    h = block.norm1(x)
    mid = x + mha(h, h, h, need_weights=False)[0]
    assert torch.allclose(block(x), mid + block.mlp(block.norm2(mid)), atol=1e-5)


def test_stages_partition_the_parameters_and_freeze_in_order():
    m = small(depth=3)
    stages = m.stage_modules()
    assert len(stages) == 4 and stages[0] is m.embed
    seen: set[int] = set()
    for stage in stages:
        ids = {id(p) for p in stage.parameters()}
        assert ids and not ids & seen
        seen |= ids
    assert seen == {id(p) for p in m.parameters()}
    m.freeze_stages(2)
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for s in stages[:2] for p in s.parameters())
    assert all(p.grad is not None for s in stages[2:] for p in s.parameters())


def test_params_are_checked():
    with pytest.raises(ValidationError, match="multiple of heads"):
        ViTTinyCifar.Params(width=100, heads=3)
    with pytest.raises(ValidationError):
        ViTTinyCifar.Params(image_px=30)


def test_require_vit_refuses_another_backbone_in_one_line():
    assert require_vit("mae", small()) is not None
    with pytest.raises(IncompatibleBackboneError) as info:
        require_vit("mae", ConvNetSmall(ConvNetSmall.Params(width=4)))
    message = str(info.value)
    assert "\n" not in message and "'mae'" in message and "'convnet_small'" in message and "vit_tiny_cifar" in message
    assert info.value.exit_code == 2


def test_conformance(bench_registry):
    check_backbone(bench_registry, "vit_tiny_cifar")
    assert bench_registry.get("backbones", "vit_tiny_cifar") is ViTTinyCifar


def test_every_method_takes_a_step_on_the_vit(bench_registry, one_thread):
    data = tiny_images(8)
    trained = 0
    for name in bench_registry.names("methods"):
        cls = bench_registry.get("methods", name)
        if name == "pretrained" or not cls.trains:
            continue
        m = build_method(bench_registry, name, "vit_tiny_cifar", backbone_params=SMALL_VIT).train()
        loss = method_loss(bench_registry, m, data)
        loss.backward()
        assert torch.isfinite(loss), name
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters()), name
        trained += 1
    assert trained >= 20
