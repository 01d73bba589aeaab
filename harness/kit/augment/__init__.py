"""Batched, on-device augmentation ops with random parameters drawn per sample.

Every op takes float images in [0, 1] of shape (B, C, H, W) on any device and returns a new tensor
on the same device (inputs are never modified). Random ops draw all their parameters from an
explicit ``generator`` that must live on the images' device; the number of draws depends only on
the batch size, so the same seed gives the same output whatever the image content.

Submodules, one concept each:
    geometry:  random resized crop, flip, quarter-turn rotations, multi-crop.
    colour:    grayscale, brightness / contrast / saturation / hue, colour jitter.
    filters:   Gaussian blur with per-sample sigma, solarize.
    tiles:     2 x 2 jigsaw shuffle, jittered tile grids, region masking.
    lab:       CIE L*a*b* conversion and the L / ab split.

Pipelines (``plugins/augmentations/``) compose these ops; there is no composition class, a
pipeline's ``__call__`` is the composition. Normalisation lives in :func:`ssl_bench.harness.data.normalize`.
"""

from __future__ import annotations

from ssl_bench.harness.kit.augment._common import bernoulli_mask, random_permutations
from ssl_bench.harness.kit.augment.colour import (
    LUMA_WEIGHTS,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    hcv_to_rgb,
    random_grayscale,
    rgb_to_grayscale,
    rgb_to_hcv,
)
from ssl_bench.harness.kit.augment.filters import (
    blur_kernel_size,
    gaussian_blur,
    gaussian_kernels,
    random_gaussian_blur,
    random_solarize,
    solarize,
)
from ssl_bench.harness.kit.augment.geometry import (
    all_rotations,
    crop_resize,
    horizontal_flip,
    multi_crop,
    random_resized_crop,
    random_rotation,
    rotate90,
    sample_crop_boxes,
)
from ssl_bench.harness.kit.augment.lab import (
    AB_SCALE,
    SRGB_TO_XYZ,
    lab_to_rgb,
    merge_lab,
    rgb_to_l_ab,
    rgb_to_lab,
    split_lab,
)
from ssl_bench.harness.kit.augment.tiles import (
    NOROOZI_TILE_FRACTION,
    jigsaw_2x2,
    mask_region,
    merge_tiles,
    permute_tiles,
    split_tiles,
    tile_grid,
)

__all__ = [
    "AB_SCALE",
    "LUMA_WEIGHTS",
    "NOROOZI_TILE_FRACTION",
    "SRGB_TO_XYZ",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "all_rotations",
    "bernoulli_mask",
    "blur_kernel_size",
    "color_jitter",
    "crop_resize",
    "gaussian_blur",
    "gaussian_kernels",
    "hcv_to_rgb",
    "horizontal_flip",
    "jigsaw_2x2",
    "lab_to_rgb",
    "mask_region",
    "merge_lab",
    "merge_tiles",
    "multi_crop",
    "permute_tiles",
    "random_gaussian_blur",
    "random_grayscale",
    "random_permutations",
    "random_resized_crop",
    "random_rotation",
    "random_solarize",
    "rgb_to_grayscale",
    "rgb_to_hcv",
    "rgb_to_l_ab",
    "rgb_to_lab",
    "rotate90",
    "sample_crop_boxes",
    "solarize",
    "split_lab",
    "split_tiles",
    "tile_grid",
]
