"""Accuracy of a linear probe over the frozen encoder on degraded images: blur, down-sampling, JPEG, noise."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from ssl_bench.harness import EvalTask, Evaluator, balanced_subset, hookimpl
from ssl_bench.harness.kit.augment import gaussian_blur
from ssl_bench.harness.kit.metrics import classification_metrics, topk_accuracy
from ssl_bench.plugins.evaluators._probe import FeatureMemo, check_hparams, encode, fit_head
from ssl_bench.plugins.evaluators.linear import Linear

Degradation = Literal["blur", "downsample", "jpeg", "noise"]


def blur(images: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """Gaussian blur of std ``sigma`` px (kernel 2 ceil(3 sigma) + 1, capped by the image); 0: none."""
    half = min(math.ceil(3 * sigma), min(images.shape[-2:]) - 1)
    return images if sigma == 0 or half < 1 else gaussian_blur(images, sigma, 2 * half + 1)


def downsample(images: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """Down-sample each side by ``scale`` (antialiased bilinear, at least 1 px), then back up (bilinear)."""
    size = images.shape[-2:]
    if scale == 1:
        return images
    small = F.interpolate(images, size=[max(1, round(s * scale)) for s in size], mode="bilinear",
                          antialias=True, align_corners=False)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False).clamp_(0.0, 1.0)


def jpeg(images: Tensor, quality: float, generator: torch.Generator) -> Tensor:
    """Round to uint8, JPEG-encode at ``quality`` (1-100) and decode (``torchvision.io``, on the CPU)."""
    pixels = images.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu()
    with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs as moving to TorchCodec
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        # imported here, not at the top: importing torchvision takes about a second
        from torchvision.io import decode_jpeg, encode_jpeg

        decoded = decode_jpeg(encode_jpeg(list(pixels), quality=int(quality)))
    return torch.stack(decoded).to(images.device).float().div_(255)


def noise(images: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """Add Gaussian noise of std ``std`` (pixel scale [0, 1]) drawn from ``generator``, clip to [0, 1]."""
    draw = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + std * draw).clamp_(0.0, 1.0)


DEGRADATIONS: dict[str, Callable[[Tensor, float, torch.Generator], Tensor]] = {
    "blur": blur, "downsample": downsample, "jpeg": jpeg, "noise": noise,
}
"""Name -> ``fn(images float (B, C, H, W) in [0, 1], level, generator) -> same shape``."""


def degrade(images: Tensor, kind: str, severity: int, levels: tuple[float, ...], *,
            generator: torch.Generator) -> Tensor:
    """``images`` (B, C, H, W) in [0, 1] degraded by ``kind`` at ``levels[severity - 1]``; severity 0: unchanged."""
    if severity == 0:
        return images
    return DEGRADATIONS[kind](images, levels[severity - 1], generator)


class Robustness(Evaluator):
    """Top-1 of a linear probe on degraded target images, per degradation and severity.

    - [0] the pretrained-inference study (a SimCLR classifier fails on low-quality, blurry, low-resolution
      images)
    - [1] Hendrycks and Dietterich, Benchmarking Neural Network Robustness to Common Corruptions and
      Perturbations, 2019, arXiv:1903.12261 (corruptions at graded severities, CIFAR-10-C levels)

    The probe is the ``linear`` evaluator's (same ``Params`` and ``lr`` x ``weight_decay`` grid),
    fitted on clean float32 features of ``task.fit`` from ``task.encoder`` (see ``_probe``). Target
    images (all, or a class-balanced subset of ``max_images`` seeded by ``task.seed``) are degraded in
    [0, 1] float pixel space, batch by batch on ``task.device``, and go through the same encoder and
    probe. Metrics, in percent, on those rows: clean ``classification_metrics`` (``top1``, ...),
    ``{degradation}_s{k}`` for severity k = 1 .. len(levels) (a by-severity table on the
    leaderboard), ``{degradation}_mean`` over its severities and ``degraded_mean`` over every
    degradation and severity. Degraded features do not depend on the probe, so a sweep extracts them
    once.

    Default levels, for 32 px images: blur sigma 0.5 / 1 / 2 px (CIFAR-10-C's blur reaches 1 px);
    down-sampling to 3/4, 1/2, 1/4 of the side ([0]'s low-resolution images; CIFAR-10-C's pixelate
    stops at 0.65); JPEG quality 75 / 30 / 10 (CIFAR-10-C: 80 .. 40); noise std 0.04 /
    0.08 / 0.16 (CIFAR-10-C: 0.04 .. 0.10). Stronger last levels than CIFAR-10-C so that three
    severities span mild to severe. Deviations from [1]: four corruptions, not fifteen; no mCE
    normalisation by a reference network.
    """

    name = "robustness"

    class Params(Linear.Params):
        degradations: tuple[Degradation, ...] = ("blur", "downsample", "jpeg", "noise")
        """Degradations to score, each at every level of its table."""
        blur_sigmas: tuple[Annotated[float, Field(ge=0)], ...] = (0.5, 1.0, 2.0)
        """Gaussian blur std in pixels per severity (0: none)."""
        downsample_scales: tuple[Annotated[float, Field(gt=0, le=1)], ...] = (0.75, 0.5, 0.25)
        """Side scale of the down-sampling per severity (1: none)."""
        jpeg_qualities: tuple[Annotated[int, Field(ge=1, le=100)], ...] = (75, 30, 10)
        """JPEG quality per severity."""
        noise_stds: tuple[Annotated[float, Field(ge=0)], ...] = (0.04, 0.08, 0.16)
        """Gaussian noise std per severity, pixel scale [0, 1] (0: none)."""
        max_images: Annotated[int, Field(gt=0)] | None = None
        """Class-balanced target rows scored; None: all."""

    params: Params
    search_space: ClassVar[Mapping[str, tuple[float, ...]]] = Linear.search_space

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self.memo = FeatureMemo()

    def levels(self, kind: str) -> tuple[float, ...]:
        """The level table of degradation ``kind`` (severity k uses entry k - 1)."""
        p = self.params
        table = {"blur": p.blur_sigmas, "downsample": p.downsample_scales, "jpeg": p.jpeg_qualities,
                 "noise": p.noise_stds}
        return tuple(float(v) for v in table[kind])

    def evaluate(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """Fit the probe on clean ``task.fit`` features, score clean and degraded ``task.target`` rows.

        Args:
            task: uint8 images (N, C, H, W) and the frozen encoder; compute on ``task.device``.
            hparams: ``lr`` and/or ``weight_decay`` of the probe; missing ones fall back to ``Params``.

        Returns:
            Clean ``classification_metrics`` plus ``{degradation}_s{k}``, ``{degradation}_mean`` and
            ``degraded_mean`` (percent).
        """
        check_hparams(self.name, hparams, ("lr", "weight_decay"))
        p, device = self.params, task.device
        fit = self.memo(task, "fit", lambda: encode(task.encoder, task.fit, device))
        head = fit_head(fit, task.fit.labels, num_classes=task.num_classes, hparams=hparams, params=p,
                        seed=task.seed).to(device)
        rows = torch.arange(len(task.target))
        if p.max_images is not None and p.max_images < len(rows):
            rows = balanced_subset(task.target.labels, p.max_images, task.seed)
        images = task.target.subset(rows)  # a mapped target stays in its file
        labels = images.labels.long()

        def features(kind: str, severity: int) -> Tensor:
            generator = torch.Generator(device=device).manual_seed(task.seed)  # noise: the same draw per call
            return self.memo(task, f"{kind}_s{severity}", lambda: encode(
                task.encoder, images, device,
                transform=lambda x: degrade(x, kind, severity, self.levels(kind), generator=generator)))

        with torch.no_grad():
            clean = self.memo(task, "clean", lambda: encode(task.encoder, images, device))
            metrics = classification_metrics(head(clean).cpu(), labels, task.num_classes)
            every = []
            for kind in p.degradations:
                accs = [topk_accuracy(head(features(kind, k)).cpu(), labels, 1)
                        for k in range(1, len(self.levels(kind)) + 1)]
                metrics |= {f"{kind}_s{k}": acc for k, acc in enumerate(accs, 1)}
                if accs:
                    metrics[f"{kind}_mean"] = sum(accs) / len(accs)
                every += accs
            if every:
                metrics["degraded_mean"] = sum(every) / len(every)
        return metrics


@hookimpl
def bench_register_evaluators(register: Callable[[type], None]) -> None:
    register(Robustness)
