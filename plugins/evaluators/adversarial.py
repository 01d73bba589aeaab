"""White-box FGSM and PGD attacks on a linear probe over the frozen encoder, accuracy per epsilon."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_bench.harness import EvalTask, Evaluator, ImageSet, balanced_subset, hookimpl, to_float
from ssl_bench.harness.kit.metrics import classification_metrics, topk_accuracy
from ssl_bench.plugins.evaluators._probe import FeatureMemo, ProbeNet, check_hparams, encode, fit_head
from ssl_bench.plugins.evaluators.linear import Linear

SEED_EPSILONS = (0.0, 0.031, 0.061, 0.092, 0.122, 0.153, 0.183, 0.214, 0.244, 0.275)
"""The SimCLR-vs-RotNet study's grid, 10 linearly spaced epsilons in [0, 0.275] (0.275 k / 9), 3 decimals."""


def metric_name(attack: str, eps: float) -> str:
    """``fgsm_eps0.031``: the attack and its epsilon (pixel scale [0, 1]) with 3 decimals."""
    return f"{attack}_eps{eps:.3f}"


def attack_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """A sum over rows whose input gradient points, row by row, where cross-entropy's does.

    Rows with ``p_y < 1/2`` contribute their cross-entropy ``-log p_y``; confident rows contribute
    ``log(1 - p_y) = logsumexp_{j != y} log p_j``, whose gradient is cross-entropy's times
    ``p_y / (1 - p_y) > 0``. So the sign of every row's gradient, all FGSM and PGD use, is the
    cross-entropy's of [0] and [1], but it does not vanish where float32 softmax saturates (logit gaps
    above ~100 make ``p - onehot`` exactly 0, which would leave confident rows unattacked).

    Args:
        logits: Shape: (B, C), C >= 2.
        labels: int64 classes. Shape: (B,).
    """
    log_p = logits.float().log_softmax(dim=1)
    log_py = log_p.gather(1, labels.view(-1, 1)).squeeze(1)
    log_rest = log_p.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), -math.inf).logsumexp(dim=1)
    return torch.where(log_py.detach() > math.log(0.5), log_rest, -log_py).sum()


def input_gradient(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """Gradient of :func:`attack_loss` w.r.t. ``images`` (B, C, H, W); zeros where the model ignores its
    input (a constant encoder) or has a single class."""
    x = images.detach().requires_grad_(True)
    logits = model(x)
    if not logits.requires_grad or logits.shape[1] < 2:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(attack_loss(logits, labels), x)
    return grad


def fgsm(model: nn.Module, images: Tensor, labels: Tensor, eps: float) -> Tensor:
    """FGSM [0]: ``clip_[0,1](x + eps * sign(grad_x CE(model(x), y)))`` (the sign via :func:`attack_loss`).

    Shape: (B, C, H, W) in [0, 1]."""
    return (images + eps * input_gradient(model, images, labels).sign()).clamp_(0.0, 1.0)


def pgd(model: nn.Module, images: Tensor, labels: Tensor, eps: float, *, steps: int, step_size: float,
        random_start: bool, generator: torch.Generator) -> Tensor:
    """PGD [1] in the L-inf ball: optional uniform start in the eps-ball, then ``steps`` signed-gradient
    steps of ``step_size`` (absolute, pixel scale), each projected onto the ball and [0, 1].
    Returns the last iterate. Shape: (B, C, H, W) in [0, 1]."""
    adv = images.clone()
    if random_start:
        noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        adv = (adv + (2 * noise - 1) * eps).clamp_(0.0, 1.0)
    for _ in range(steps):
        adv = adv + step_size * input_gradient(model, adv, labels).sign()
        adv = torch.minimum(torch.maximum(adv, images - eps), images + eps).clamp_(0.0, 1.0)
    return adv


class Adversarial(Evaluator):
    """White-box FGSM and PGD on encoder + linear probe, end to end in pixel space, per epsilon.

    - [0] Goodfellow et al., Explaining and Harnessing Adversarial Examples, 2015, arXiv:1412.6572
    - [1] Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, 2018,
      arXiv:1706.06083 (PGD with random start, step 2.5 eps / steps)
    - [2] the SimCLR-vs-RotNet study (FGSM and PGD over 10 epsilons linearly spaced in [0, 0.275], 10 PGD
      iterations)

    The probe is the ``linear`` evaluator's (same ``Params``, same ``lr`` x ``weight_decay`` grid),
    fitted on float32 features of ``task.fit`` from ``task.encoder`` (see ``_probe``). Attacks maximise
    the cross-entropy of ``ProbeNet`` = probe(encoder(normalize(x))) over images ``x`` in [0, 1], so
    ``epsilon`` is in that scale (8/255 = 0.031) and normalisation is inside the attacked function.
    Every metric is on the same rows: ``task.target``, or a class-balanced subset of ``max_images``
    of them (seeded by ``task.seed``): ``top1`` etc. (``classification_metrics``, clean) and, per
    attack and epsilon, ``{attack}_eps{epsilon:.3f}`` (for example ``fgsm_eps0.031``, ``pgd_eps0.275``;
    at epsilon 0 the clean top-1; the leaderboard's ``<family>_<param><number>`` pattern turns them
    into accuracy-by-epsilon tables) and ``{attack}_mean``, the mean over the grid's epsilons, all in
    percent.

    Defaults and deviations: [2] attacks fine-tuned networks; here the encoder stays frozen (fine-tune
    first for that protocol) and only a linear head is trained. [2]'s PGD step is "alpha = 1.85" without
    a scale; in [0, 1] pixels that exceeds every epsilon (each step jumps to the ball's corner), so
    ``step_size`` is relative to epsilon and defaults to Madry's 2.5 / steps = 0.25 (set
    ``step_size >= 2`` for the saturated steps). Random start ([2]'s PGD) is on. The last PGD iterate
    is scored, not the worst over iterations. Signs come from :func:`attack_loss`, equal in
    direction to cross-entropy's but free of its float32 underflow on confident rows (in a test, plain
    cross-entropy left 30% of a linear model's images unattacked at an epsilon that flips them all).
    Attacks run in float32 with batch-norm in eval mode.
    """

    name = "adversarial"

    class Params(Linear.Params):
        attacks: tuple[Literal["fgsm", "pgd"], ...] = ("fgsm", "pgd")
        """Attacks to run, each over every epsilon."""
        epsilons: tuple[Annotated[float, Field(ge=0, le=1)], ...] = SEED_EPSILONS
        """L-inf radii in the [0, 1] pixel scale (the SimCLR-vs-RotNet study's grid), named with 3 decimals."""
        pgd_steps: Annotated[int, Field(gt=0)] = 10
        """PGD iterations (the SimCLR-vs-RotNet study: 10)."""
        step_size: Annotated[float, Field(gt=0)] = 0.25
        """PGD step as a multiple of epsilon (Madry: 2.5 / steps)."""
        random_start: bool = True
        """Start PGD at a uniform draw in the epsilon ball (the SimCLR-vs-RotNet study, Madry)."""
        max_images: Annotated[int, Field(gt=0)] | None = 500
        """Class-balanced target rows attacked and scored (attacks are costly on a CPU); None: all."""
        attack_batch_size: Annotated[int, Field(gt=0)] = 256
        """Images per attack forward/backward pass."""

        @model_validator(mode="after")
        def _distinct_names(self) -> Adversarial.Params:
            names = [metric_name("a", e) for e in self.epsilons]
            if len(set(names)) != len(names) or len(set(self.attacks)) != len(self.attacks):
                raise ValueError("attacks and epsilons (rounded to 3 decimals) must be distinct")
            return self

    params: Params
    search_space: ClassVar[Mapping[str, tuple[float, ...]]] = Linear.search_space

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self.memo = FeatureMemo()

    def evaluate(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """Fit the probe on ``task.fit``, attack the chosen rows of ``task.target``.

        Args:
            task: uint8 images (N, C, H, W) and the frozen encoder; compute on ``task.device``.
            hparams: ``lr`` and/or ``weight_decay`` of the probe; missing ones fall back to ``Params``.

        Returns:
            Clean ``classification_metrics`` plus ``{attack}_eps{eps:.3f}`` and ``{attack}_mean`` (percent).
        """
        check_hparams(self.name, hparams, ("lr", "weight_decay"))
        with torch.inference_mode(False), torch.enable_grad():  # the caller may be in either mode
            return self.attack_all(task, hparams)

    def attack_all(self, task: EvalTask, hparams: Mapping[str, float]) -> dict[str, float]:
        """``evaluate``'s work, with autograd on."""
        p, device = self.params, task.device
        fit = self.memo(task, "fit", lambda: encode(task.encoder, task.fit, device))
        head = fit_head(fit, task.fit.labels, num_classes=task.num_classes, hparams=hparams, params=p, seed=task.seed)
        model = ProbeNet(task.encoder, head.to(device)).eval()
        rows = torch.arange(len(task.target))
        if p.max_images is not None and p.max_images < len(rows):
            rows = balanced_subset(task.target.labels, p.max_images, task.seed)
        images = task.target.subset(rows)  # a mapped target stays in its file
        labels = images.labels.long()
        clean = self.logits(model, images, labels, device, lambda x, y: x)
        metrics = classification_metrics(clean.cpu(), labels, task.num_classes)
        for attack in p.attacks:
            accs = []
            for eps in p.epsilons:  # epsilon 0 leaves every image as it is: the clean top-1
                accs.append(metrics["top1"] if eps == 0 else topk_accuracy(self.logits(
                    model, images, labels, device, self.perturbation(model, attack, eps, task.seed, device)).cpu(),
                    labels, 1))
                metrics[metric_name(attack, eps)] = accs[-1]
            metrics[f"{attack}_mean"] = sum(accs) / len(accs)
        return metrics

    def perturbation(self, model: nn.Module, attack: str, eps: float, seed: int,
                     device: torch.device) -> Callable[[Tensor, Tensor], Tensor]:
        """``(images, labels) -> adversarial images`` of one attack at one epsilon; PGD's random start
        is drawn from a generator on ``device`` seeded with ``seed``."""
        p = self.params
        generator = torch.Generator(device=device).manual_seed(seed)
        if attack == "fgsm":
            return lambda x, y: fgsm(model, x, y, eps)
        return lambda x, y: pgd(model, x, y, eps, steps=p.pgd_steps, step_size=p.step_size * eps,
                                random_start=p.random_start, generator=generator)

    def logits(self, model: nn.Module, images: ImageSet, labels: Tensor, device: torch.device,
               perturb: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Logits (N, C) of ``model`` on ``perturb(images in [0, 1], labels)``, batch by batch."""
        out = []
        size = self.params.attack_batch_size
        for x, y in zip(images.chunks(size, device), labels.split(size)):
            adv = perturb(to_float(x), y.to(device)).detach()
            with torch.no_grad():
                out.append(model(adv))
        return torch.cat(out)


@hookimpl
def bench_register_evaluators(register: Callable[[type], None]) -> None:
    register(Adversarial)
