"""The configuration of a training run: model, data, budget, optimiser, loss, robust mode."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from reconguard.defenses.strategies import ROBUST_MODES, build_strategy
from reconguard.defenses.training import CleanTraining
from reconguard.errors import ConfigError
from reconguard.models import registry
from reconguard.physics.masks import MASKS, MaskGenerator, build_mask

LOSSES = ("l1", "mse", "ssim")
TARGETS = ("magnitude", "complex")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
        model: Registered model name (``unet``, ``varnet``, ``modl``, ...).
        model_config: Hyper-parameters passed to the model constructor.
        data: Data set directory with ``train/`` and ``val/`` sub-directories of fastMRI files.
        out: Output directory of the run.
        acceleration: Under-sampling factor of the training and validation masks.
        center_fraction: Fully sampled centre fraction (default: fastMRI's pairing).
        mask: Mask type (``random``, ``equispaced``, ``variable_density``).
        epochs: Number of passes over the training split; ``None``: no epoch limit (then
            ``max_steps`` is the budget).
        max_steps: Stop after this many optimiser steps (batches) in total, even mid-epoch
            (the partial epoch is validated); ``None``: no step limit.
        batch_size: Slices per optimiser step.
        lr: Peak Adam learning rate, decayed by a half cosine to ``lr * final_lr_fraction``
            over ``epochs`` (set per epoch from the epoch index, so a resumed run follows the same
            schedule).
        final_lr_fraction: Learning rate at the last epoch relative to ``lr`` (1 = constant).
        loss: ``l1``, ``mse`` or ``ssim`` (1 - SSIM), on the magnitude image.
        target: ``"magnitude"``: the loss compares magnitudes with the data's magnitude target
            (fastMRI's); ``"complex"``: it compares the real and imaginary parts of the output
            with the fully sampled complex image (:func:`clean_images`), so the output phase is
            trained too -- what defenses that re-encode a reconstruction into k-space (cyclic
            mitigation) need, and how physics-based networks are trained (Aggarwal et al.,
            arXiv:1712.02862). ``l1`` or ``mse`` only, and only with ``robust="none"``.
        seed: Seeds weights, shuffling and training masks.
        max_minutes: Wall-clock cap: stop after this much training time (validation still runs).
            Never a default: a budget in minutes gives different models on fast and slow
            machines; when the cap cuts training short it is logged and recorded.
        device: ``cpu`` or ``cuda``.
        robust: Robust training: ``none``, ``pgd`` (adversarial training, Madry et al.
            arXiv:1706.06083, or ``method="free"``, Shafahi et al. arXiv:1904.12843), ``fnaf``
            (FNAF-robust training, Cheng et al. MIDL 2020, Calivá et al. arXiv:2011.00070) or
            ``smooth`` (training through randomized smoothing); see
            :mod:`reconguard.defenses.training`.
        robust_config: Options of the ``robust`` mode; unknown keys raise. Stored resolved (every
            default filled in), so ``config.json`` records the whole method.
        init: Saved model (``registry.save`` path) whose weights start the run, e.g. a clean model
            to fine-tune robustly; its name and hyper-parameters must match ``model`` and
            ``model_config``. Ignored when resuming (the run's own state wins).
    """

    model: str
    model_config: dict[str, Any] = field(default_factory=dict)
    data: str
    out: str
    acceleration: float = 4.0
    center_fraction: float | None = None
    mask: str = "random"
    epochs: int | None = 20
    max_steps: int | None = None
    batch_size: int = 8
    lr: float = 1e-3
    final_lr_fraction: float = 1.0
    loss: str = "l1"
    target: str = "magnitude"
    seed: int = 0
    max_minutes: float | None = None
    device: str = "cpu"
    robust: str = "none"
    robust_config: dict[str, Any] = field(default_factory=dict)
    init: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (_count(self.epochs), f"epochs must be an integer >= 1, got {self.epochs!r}"),
            (_count(self.max_steps), f"max_steps must be an integer >= 1, got {self.max_steps!r}"),
            (
                self.epochs is not None or self.max_steps is not None,
                "give a training budget: epochs, max_steps or both",
            ),
            (
                self.epochs is not None or self.final_lr_fraction == 1,
                "final_lr_fraction < 1 decays over the epochs: give epochs",
            ),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}"),
            (
                0 < self.final_lr_fraction <= 1,
                f"final_lr_fraction must be in (0, 1], got {self.final_lr_fraction}",
            ),
            (self.loss in LOSSES, f"unknown loss {self.loss!r}; choose one of {list(LOSSES)}"),
            (self.target in TARGETS, f"unknown target {self.target!r}; choose one of {list(TARGETS)}"),
            (
                self.target == "magnitude" or (self.loss != "ssim" and self.robust == "none"),
                "target='complex' needs loss 'l1' or 'mse' and robust='none'",
            ),
            (self.mask in MASKS, f"unknown mask type {self.mask!r}; choose one of {sorted(MASKS)}"),
            (
                self.max_minutes is None or (_real(self.max_minutes) and self.max_minutes > 0),
                f"max_minutes must be a positive number, got {self.max_minutes!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.robust == "none" and self.robust_config:
            raise ConfigError(f"robust_config {self.robust_config} needs a robust mode {list(ROBUST_MODES[1:])}")
        if self.robust != "none" and hasattr(registry.MODELS.get(self.model), "training_loss"):
            raise ConfigError(
                f"model {self.model!r} is an image prior trained unsupervised (training_loss on clean images); "
                f"robust training {self.robust!r} does not apply to it, use robust='none'"
            )
        object.__setattr__(self, "robust_config", self.strategy().options())

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of every field that has one (a resumed run compares its saved config with them)."""
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
        return out

    def strategy(self) -> CleanTraining:
        """The robust-training strategy of this run (validates ``robust`` and ``robust_config``)."""
        return build_strategy(self.robust, self.robust_config, loss=self.loss)

    def learning_rate(self, epoch: int) -> float:
        """Half-cosine decay from ``lr`` (epoch 0) to ``lr * final_lr_fraction`` (last epoch)."""
        if self.epochs is None:  # a step budget: constant (final_lr_fraction is 1, checked above)
            return self.lr
        progress = epoch / max(self.epochs - 1, 1)
        floor = self.lr * self.final_lr_fraction
        return floor + 0.5 * (self.lr - floor) * (1 + math.cos(math.pi * progress))

    def mask_fn(self) -> MaskGenerator:
        """The sampling-mask generator of this run."""
        return build_mask(self.mask, acceleration=self.acceleration, center_fraction=self.center_fraction)


def _count(value: Any) -> bool:
    """``None`` or an integer >= 1."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
