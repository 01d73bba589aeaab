"""ssl_bench.harness.kit.pixels: the inverse of normalize, and jitter in normalised space."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.harness.data import IMAGENET_MEAN, IMAGENET_STD, normalize
from ssl_bench.harness.kit.augment import color_jitter, random_grayscale
from ssl_bench.harness.kit.pixels import denormalize, jitter_normalized


def rgb(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_denormalize_inverts_normalize() -> None:
    x = rgb()
    torch.testing.assert_close(denormalize(normalize(x)), x, atol=1e-6, rtol=0)


def test_denormalize_is_x_times_std_plus_mean_clamped() -> None:
    z = 3 * torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = denormalize(z)
    assert torch.equal(out, (z * std + mean).clamp(0, 1))
    assert out.min() == 0 and out.max() == 1 and out.dtype == z.dtype and out.shape == z.shape


@pytest.mark.parametrize(("strength", "p", "grayscale_p"), [(0.4, 0.8, 0.2), (0.1, 1.0, None), (0.0, 0.8, 0.5)])
def test_jitter_equals_the_hand_written_sequence(strength: float, p: float, grayscale_p: float | None) -> None:
    x = normalize(rgb())
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    got = jitter_normalized(x, strength, p, grayscale_p=grayscale_p, generator=g1)
    want = color_jitter(denormalize(x), strength, strength, strength, strength / 4, p, generator=g2)
    if grayscale_p is not None:
        want = random_grayscale(want, grayscale_p, generator=g2)
    assert torch.equal(got, normalize(want))
    assert torch.equal(g1.get_state(), g2.get_state())  # the same draws, in the same order


def test_none_skips_an_op_and_its_draws_zero_draws_without_changing_pixels() -> None:
    x = normalize(rgb())
    skipped, zero = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    grey_only = jitter_normalized(x, None, grayscale_p=1.0, generator=skipped)
    want = normalize(random_grayscale(denormalize(x), 1.0, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(grey_only, want)
    unchanged = jitter_normalized(x, 0.0, generator=zero)
    assert torch.equal(unchanged, normalize(denormalize(x)))
    assert not torch.equal(zero.get_state(), torch.Generator().manual_seed(3).get_state())  # strength 0 drew
    assert torch.equal(jitter_normalized(x, None, generator=torch.Generator()), normalize(denormalize(x)))
