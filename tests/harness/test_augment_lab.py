"""CIE L*a*b*: known values, round trip, channel split."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ssl_bench.harness.kit import augment as A


def pixels(*rgb: tuple[float, float, float]) -> Tensor:
    """Colours as a (1, 3, 1, N) image."""
    return torch.tensor(rgb, dtype=torch.float32).T.reshape(1, 3, 1, -1)


# Published L*a*b* values (D65, 2 degree observer) of sRGB colours, rounded to 3 decimals.
KNOWN = [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((0.5, 0.5, 0.5), (53.389, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.241, 80.092, 67.203)),
    ((0.0, 1.0, 0.0), (87.735, -86.183, 83.179)),
    ((0.0, 0.0, 1.0), (32.297, 79.188, -107.860)),
]


@pytest.mark.parametrize(("rgb", "lab"), KNOWN)
def test_rgb_to_lab_known_values(rgb: tuple[float, float, float], lab: tuple[float, float, float]) -> None:
    out = A.rgb_to_lab(pixels(rgb)).flatten()
    torch.testing.assert_close(out, torch.tensor(lab), atol=2e-3, rtol=0)


def test_greys_have_no_colour_and_lightness_grows() -> None:
    levels = torch.linspace(0, 1, 11)
    lab = A.rgb_to_lab(levels.view(1, 1, 1, -1).expand(1, 3, 1, -1))
    assert lab[:, 1:].abs().max() < 1e-3
    assert (lab[0, 0, 0].diff() > 0).all()


def test_lab_round_trip_on_a_batch() -> None:
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    lab = A.rgb_to_lab(x)
    assert lab.shape == x.shape and lab.dtype == torch.float32
    assert lab[:, 0].min() >= 0 and lab[:, 0].max() <= 100
    torch.testing.assert_close(A.lab_to_rgb(lab), x, atol=2e-5, rtol=0)


def test_lab_to_rgb_clips_colours_outside_srgb() -> None:
    out = A.lab_to_rgb(torch.tensor([[100.0, 120.0, -120.0], [0.0, -100.0, 100.0]]).T.reshape(1, 3, 1, 2))
    assert out.min() >= 0 and out.max() <= 1


def test_split_and_merge_lab() -> None:
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[0, :, 0, :6] = pixels(*(rgb for rgb, _ in KNOWN))[0, :, 0]  # extremes of the gamut
    lab = A.rgb_to_lab(x)
    light, ab = A.split_lab(lab)
    assert light.shape == (3, 1, 8, 8) and ab.shape == (3, 2, 8, 8)
    assert light.min() >= -1 and light.max() <= 1 and ab.abs().max() <= 1
    torch.testing.assert_close(A.merge_lab(light, ab), lab, atol=1e-4, rtol=0)
    raw_l, raw_ab = A.split_lab(lab, scaled=False)
    assert torch.equal(raw_l, lab[:, :1]) and torch.equal(raw_ab, lab[:, 1:])
    assert torch.equal(A.merge_lab(raw_l, raw_ab, scaled=False), lab)
    l2, ab2 = A.rgb_to_l_ab(x)
    assert torch.equal(l2, light) and torch.equal(ab2, ab)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lab_runs_on_cuda() -> None:
    x = torch.rand(2, 3, 8, 8, device="cuda")
    torch.testing.assert_close(A.lab_to_rgb(A.rgb_to_lab(x)), x, atol=2e-5, rtol=0)
