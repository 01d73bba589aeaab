"""Gaussian blur and solarize: per-sample parameters, seeds, and agreement with torchvision."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from ssl_bench.harness.kit import augment as A


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 8, h: int = 32, w: int = 32, seed: int = 0) -> Tensor:
    return torch.rand(b, 3, h, w, generator=gen(seed))


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 9, 23])
@pytest.mark.parametrize("shape", [(32, 32), (24, 30)])
def test_gaussian_blur_matches_torchvision_per_sample_sigma(kernel_size: int, shape: tuple[int, int]) -> None:
    x = images(6, *shape)
    sigma = torch.tensor([0.1, 0.3, 0.7, 1.0, 1.6, 2.0])
    out = A.gaussian_blur(x, sigma, kernel_size)
    assert out.shape == x.shape and out.dtype == torch.float32
    for i in range(6):
        ref = TF.gaussian_blur(x[i], [kernel_size, kernel_size], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=2e-6, rtol=0)


def test_gaussian_kernels_are_normalised_symmetric_and_widen_with_sigma() -> None:
    k = A.gaussian_kernels(torch.tensor([0.5, 1.0, 2.0]), 7)
    torch.testing.assert_close(k.sum(1), torch.ones(3))
    assert torch.equal(k, k.flip(1))
    assert k[0, 3] > k[1, 3] > k[2, 3]


def test_gaussian_blur_rejects_even_or_too_large_kernels() -> None:
    with pytest.raises(ValueError):
        A.gaussian_blur(images(2), 1.0, 4)
    with pytest.raises(ValueError):
        A.gaussian_blur(images(2, 8, 8), 1.0, 17)


def test_blur_kernel_size_is_ten_percent_and_odd() -> None:
    assert [A.blur_kernel_size(s) for s in (224, 96, 64, 32, 16)] == [23, 9, 7, 3, 1]


def test_random_blur_replays_its_draws_against_torchvision() -> None:
    """Draw order: apply mask (B,), then sigma (B,) uniform in the range."""
    b, p, (lo, hi) = 24, 0.6, (0.1, 2.0)
    x = images(b)
    out = A.random_gaussian_blur(x, p, (lo, hi), 5, generator=gen(3))
    g = gen(3)
    apply = torch.rand(b, generator=g) < p
    sigma = torch.rand(b, generator=g) * (hi - lo) + lo
    for i in range(b):
        if apply[i]:
            ref = TF.gaussian_blur(x[i], [5, 5], [float(sigma[i])] * 2)
            torch.testing.assert_close(out[i], ref, atol=2e-6, rtol=0)
        else:
            assert torch.equal(out[i], x[i])
    assert 0 < int(apply.sum()) < b


def test_random_blur_draws_sigma_per_sample() -> None:
    x = images(1).expand(16, -1, -1, -1).contiguous()
    out = A.random_gaussian_blur(x, 1.0, generator=gen(0))  # default kernel: 3 px at 32 px
    assert len({tuple(v.flatten()[:50].tolist()) for v in out}) == 16
    assert torch.equal(out, A.random_gaussian_blur(x, 1.0, generator=gen(0)))
    assert out.min() >= 0 and out.max() <= 1


def test_random_blur_with_p_zero_is_identity() -> None:
    x = images()
    assert torch.equal(A.random_gaussian_blur(x, 0.0, generator=gen(0)), x)
    with pytest.raises(ValueError):
        A.random_gaussian_blur(x, 0.5, (2.0, 0.1), generator=gen(0))


def test_solarize_matches_torchvision() -> None:
    x = images()
    x[0, 0, 0, :3] = torch.tensor([0.5, 0.4999, 1.0])  # the threshold itself is inverted
    for t in (0.5, 0.25, 1.0):
        ref = torch.stack([TF.solarize(img, t) for img in x])
        assert torch.equal(A.solarize(x, t), ref)


def test_random_solarize_acts_per_sample() -> None:
    b = 64
    x = images(b)
    out = A.random_solarize(x, 0.5, generator=gen(1))
    apply = torch.rand(b, generator=gen(1)) < 0.5
    ref = torch.where(apply.view(-1, 1, 1, 1), A.solarize(x), x)
    assert torch.equal(out, ref)
    assert 10 < int(apply.sum()) < 54
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(A.random_solarize(x, 0.0, generator=gen(1)), x)
    assert torch.equal(A.random_solarize(x, 1.0, generator=gen(1)), A.solarize(x))
