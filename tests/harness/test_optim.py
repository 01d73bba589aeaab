from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.harness.pipeline.optim import LARS, build_optimizer, lr_factor
from ssl_bench.harness.pipeline.specs import OptimizerSpec, ScheduleSpec


def test_step_schedule_is_x09_every_10_epochs():
    spec = ScheduleSpec(name="step", step_epochs=10, gamma=0.9)
    spe = 5
    assert lr_factor(spec, 0, 1000, spe) == 1.0
    assert lr_factor(spec, 49, 1000, spe) == 1.0
    assert lr_factor(spec, 50, 1000, spe) == pytest.approx(0.9)
    assert lr_factor(spec, 100, 1000, spe) == pytest.approx(0.81)


def test_cosine_with_warmup():
    spec = ScheduleSpec(name="cosine", warmup_epochs=1)
    spe, total = 10, 100
    assert lr_factor(spec, 0, total, spe) == pytest.approx(0.1)
    assert lr_factor(spec, 9, total, spe) == pytest.approx(1.0)
    mid = 10 + (total - 10) // 2
    assert lr_factor(spec, mid, total, spe) == pytest.approx(0.5, abs=0.02)
    assert lr_factor(spec, total, total, spe) == pytest.approx(0.0, abs=1e-9)


def test_constant():
    assert lr_factor(ScheduleSpec(name="constant"), 77, 100, 10) == 1.0


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "lars"])
def test_every_optimizer_descends(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    opt = build_optimizer(OptimizerSpec(name=name, lr=0.01 if name.startswith("adam") else 0.1), model)
    first = None
    for _ in range(50):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert math.isfinite(loss.item())


def test_lars_scales_the_update_by_the_trust_ratio():
    w = torch.nn.Parameter(torch.full((2, 2), 2.0))
    w.grad = torch.full((2, 2), 100.0)
    LARS([w], lr=1.0, momentum=0.0, trust_coefficient=0.01).step()
    # trust = 0.01 * |w| / |g| = 0.01 * 4 / 200 -> update = trust * g = 0.02 per element
    assert torch.allclose(w, torch.full((2, 2), 2.0 - 0.02))
