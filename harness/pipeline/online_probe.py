"""The online linear probe: a linear head trained beside pretraining on the backbone's detached features.

solo-learn [0] reports, beside every method's offline linear evaluation, the accuracy of a linear classifier
trained *during* pretraining: at every step ``nn.Linear(D, C)`` takes the backbone's features of the step's
batch, detached (no gradient reaches the encoder), and one SGD step on the cross-entropy with the batch's
labels. Its accuracy at the end, on the final encoder's features of the un-augmented test images, is what the
``online_linear`` evaluator reports (a protocol of its own: the offline ``linear`` probe fits a fresh head on
frozen features of un-augmented images, with a sweep on validation data; this one saw augmented training
features of a moving encoder, once each, with a fixed learning rate).

- [0] da Costa et al., solo-learn: A Library of Self-supervised Methods for Visual Representation Learning,
  JMLR 2022 (``BaseMethod``: the online classifier on detached features, lr 0.1, no weight decay)

How it reads the features without a forward pass of its own: a forward hook on ``method.backbone`` keeps the
first B rows (B the process's share of the step's batch) of the first call of the step on images of the first
view's size: the first view's features where the method runs the backbone on each view (SimCLR, BYOL, VICReg,
...), on same-sized views concatenated in order (DINO, SwAV) or on the un-rotated images first (RotNet). A
method that never calls its backbone on such images (MAE runs its blocks itself; Jigsaw and CPC feed it tiles)
trains no head: a warning says so once, and no head is saved.

What it never changes is the encoder's training: the features are detached; the head and its optimizer are
not part of the method (not in its optimizer, its state dict or its checkpoint entry); the head's initial
weights come from a generator of its own (the global RNG is not drawn from); its loss is computed outside
autocast, in float32.

Learning rate: solo-learn puts the head in the method's optimizer as a parameter group (lr 0.1, weight decay
0), so its lr follows the method's schedule (warm-up, cosine decay to 0). Here the head has its own SGD
(momentum 0.9 by default) at a constant lr (``schedule = "constant"``, the default: on the CPU speedrun it
scored no lower than the annealed head, leaderboard/findings.toml); ``schedule = "method"`` scales each
step's lr by the factor the method's schedule gives that step, as solo-learn's. Deviation from [0]: the
head reads the first view only (solo-learn averages its loss over the large crops).
Rows whose label is outside [0, C) (unlabelled data) are ignored, as solo-learn's ``ignore_index=-1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.hooks import RemovableHandle

from ssl_bench.harness.errors import BenchError
from ssl_bench.harness.pipeline.logs import logger
from ssl_bench.harness.record.atomic import atomic_torch_save
from ssl_bench.harness.scale.distributed import is_main, world_size

SCHEDULES = ("method", "constant")
"""How the head's lr moves over the run (:attr:`OnlineProbeSpec.schedule`)."""

HEAD_FILE = "online_head.pt"
"""The trained head in a pretraining job's artifact folder, beside ``encoder.pt``: ``{"weight": (C, D),
"bias": (C,)}``, float32 on the CPU; absent where the job trained no head."""


@dataclass(frozen=True)
class OnlineProbeSpec:
    """The optimiser of an online probe (from the evaluator's params); part of its pretraining job's key."""

    lr: float
    """SGD learning rate (constant)."""
    momentum: float = 0.9
    """SGD momentum (heavy ball)."""
    weight_decay: float = 0.0
    """L2 coefficient of the head's weights (solo-learn: 0)."""
    schedule: str = "constant"
    """``"constant"``: ``lr`` throughout; ``"method"``: each step's lr is ``lr`` times the method's schedule
    factor of that step (solo-learn)."""

    def payload(self) -> dict[str, float | str]:
        return asdict(self)

    @classmethod
    def of(cls, params: object) -> OnlineProbeSpec:
        """The probe an online evaluator's ``Params`` ask for: its ``lr`` and, where it has them, ``momentum``,
        ``weight_decay`` and ``schedule``.

        Raises:
            BenchError: the params have no ``lr`` (an online evaluator must declare one), or a ``schedule``
                other than ``"method"`` or ``"constant"``.
        """
        lr = getattr(params, "lr", None)
        if not isinstance(lr, (int, float)):
            raise BenchError(f"an online-probe evaluator's Params need a float 'lr', got {type(params).__name__}")
        schedule = str(getattr(params, "schedule", "constant"))
        if schedule not in SCHEDULES:
            raise BenchError(f"an online probe's schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        return cls(float(lr), float(getattr(params, "momentum", 0.9)), float(getattr(params, "weight_decay", 0.0)),
                   schedule)


def head_seed(seed: int) -> int:
    """Seed of the head's initial weights (a stream of its own, apart from the job's other draws)."""
    return (seed * 2_654_435_761 + 97) % (2**63)


class ProbeHead(nn.Module):
    """``features @ weight.T + bias``: features (B, D) -> logits (B, C), float32."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, features: Tensor) -> Tensor:
        return F.linear(features, self.weight, self.bias)


class OnlineProbe:
    """An online linear head, its optimizer and the hook that feeds it (see the module docstring).

    Use: :meth:`attach` to the backbone, then each step :meth:`expect` with the first view before the
    method's loss and :meth:`step` with the batch's labels after it (outside autocast); :meth:`detach` at
    the end. :meth:`state_dict` / :meth:`load_state_dict` go into and out of the resumable checkpoint.

    Args:
        spec: the optimiser.
        feature_dim: D, the backbone's feature dimension.
        num_classes: C, the pretraining dataset's classes.
        seed: the job's seed; the head's initial weights are drawn from a generator seeded by it
            (uniform in +-1/sqrt(D), the scale of ``nn.Linear``'s default).
        device: where the head trains.
    """

    def __init__(self, spec: OnlineProbeSpec, feature_dim: int, num_classes: int, *, seed: int,
                 device: torch.device) -> None:
        g = torch.Generator().manual_seed(head_seed(seed))
        bound = 1.0 / math.sqrt(feature_dim)
        weight = torch.empty(num_classes, feature_dim).uniform_(-bound, bound, generator=g)
        bias = torch.empty(num_classes).uniform_(-bound, bound, generator=g)
        self.spec, self.feature_dim, self.num_classes = spec, feature_dim, num_classes
        self.head = ProbeHead(weight.to(device), bias.to(device))
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=spec.lr, momentum=spec.momentum,
                                         weight_decay=spec.weight_decay)
        self.problem = ""
        """Why it trains no head ('' while it does)."""
        self._backbone: nn.Module | None = None
        self._handle: RemovableHandle | None = None
        self._want: tuple[int, int, int] | None = None
        self._features: Tensor | None = None

    def attach(self, backbone: nn.Module) -> None:
        """Hook ``backbone``'s forward pass (once; a second call is a no-op)."""
        if self._handle is None:
            self._backbone = backbone
            self._handle = backbone.register_forward_hook(self._capture)

    def detach(self) -> None:
        """Remove the hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def expect(self, first_view: Tensor) -> None:
        """Before a step's loss: the features to keep are of ``first_view``'s rows and image size (B, C, H, W)."""
        self._want = (int(first_view.shape[0]), int(first_view.shape[-2]), int(first_view.shape[-1]))
        self._features = None

    def _capture(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        """Forward hook: keep the detached first B rows of the step's first call on whole images."""
        if self._features is not None or self._want is None or module is not self._backbone or not inputs:
            return
        x, (b, h, w) = inputs[0], self._want
        if (isinstance(x, Tensor) and x.ndim == 4 and tuple(x.shape[-2:]) == (h, w) and x.shape[0] >= b
                and x.shape[0] % b == 0 and isinstance(output, Tensor) and output.ndim == 2
                and output.shape[0] == x.shape[0]):
            self._features = output.detach()[:b]

    def step(self, labels: Tensor, lr_factor: float = 1.0) -> None:
        """One SGD step of the head on the features the hook kept and ``labels`` (B,), int64.

        ``lr_factor`` is the method's schedule factor of this step (its lr over its base lr); with
        ``schedule = "method"`` the head steps at ``spec.lr * lr_factor``, with ``"constant"`` at ``spec.lr``.

        Call it outside autocast: the logits and the loss are float32. Under several processes the head's
        gradients are averaged, so every process keeps the same head. Rows with a label outside [0, C) are
        ignored (no host sync: the loss is a sum over the kept rows divided by their count, at least 1).
        """
        features, self._features, self._want = self._features, None, None
        if self.problem:
            return
        if features is None or features.shape[1] != self.feature_dim:
            got = "never ran its backbone on whole images of the first view's size" if features is None else \
                f"gave features of width {features.shape[1]}, not the backbone's feature_dim {self.feature_dim}"
            self.problem = f"the method {got}"
            if is_main():
                logger().warning(f"  online linear probe: no head is trained: {self.problem}")
            return
        labels = labels.to(features.device)
        keep = (labels >= 0) & (labels < self.num_classes)
        target = torch.where(keep, labels, torch.full_like(labels, -1))
        logits = self.head(features.float())
        loss = F.cross_entropy(logits, target, ignore_index=-1, reduction="sum") / keep.sum().clamp_min(1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world_size() > 1:
            for p in self.head.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad.div_(world_size())
        for group in self.optimizer.param_groups:
            group["lr"] = self.spec.lr * (lr_factor if self.spec.schedule == "method" else 1.0)
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """What a resumable checkpoint keeps: the head, its optimizer and ``problem``."""
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict(), "problem": self.problem}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (read back with ``weights_only=True``)."""
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.problem = str(state["problem"])

    def mismatch(self, state: object) -> str | None:
        """Why ``state`` is not a :meth:`state_dict` of this probe (None when it is)."""
        if not isinstance(state, dict) or set(state) != {"head", "optimizer", "problem"}:
            return "its online probe entry is not a probe's state"
        head = state["head"]
        if not isinstance(head, dict) or set(head) != {"weight", "bias"}:
            return "its online probe entry has other parameters than the head"
        for name, tensor in self.head.state_dict().items():
            if not isinstance(head[name], Tensor) or head[name].shape != tensor.shape:
                return f"its online probe has another shape for {name}"
        return None

    def head_state(self) -> dict[str, Tensor] | None:
        """The trained head, ``{"weight": (C, D), "bias": (C,)}`` float32 on the CPU; None if it trains none."""
        if self.problem:
            return None
        return {name: t.detach().float().cpu().clone() for name, t in self.head.state_dict().items()}

    def save(self, folder: Path) -> Path | None:
        """Write :meth:`head_state` to ``folder/HEAD_FILE`` atomically; returns the path (None: no head)."""
        state = self.head_state()
        if state is None:
            return None
        path = folder / HEAD_FILE
        atomic_torch_save(state, path)
        return path


def read_head(path: Path) -> dict[str, Tensor] | None:
    """The head saved at ``path`` (``weights_only``: nothing in a run folder runs code when read); None if absent.

    Raises:
        BenchError: the file is not a head (another structure, shapes that do not fit together).
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise BenchError(f"{path}: not a readable online head ({type(exc).__name__})") from None
    ok = (isinstance(state, dict) and set(state) == {"weight", "bias"}
          and all(isinstance(v, Tensor) for v in state.values())
          and state["weight"].ndim == 2 and state["bias"].shape == (state["weight"].shape[0],))
    if not ok:
        raise BenchError(f"{path}: not an online head (expected weight (C, D) and bias (C,))")
    return {"weight": state["weight"].float(), "bias": state["bias"].float()}
