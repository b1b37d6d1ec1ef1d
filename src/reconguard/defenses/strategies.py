"""The robust-training strategies by name (``robust=`` of a training run) and how one is built.

``clean``, ``pgd`` and ``fnaf`` are in :mod:`reconguard.defenses.training`; ``smooth`` (training
through :class:`~reconguard.defenses.smoothing.RandomizedSmoothing`) is here, with the registry,
because its options are the smoothing defense's own keyword parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from reconguard.defenses.smoothing import RandomizedSmoothing
from reconguard.defenses.training import AdversarialTraining, CleanTraining, FNAFTraining, derive_seed
from reconguard.errors import ConfigError, require
from reconguard.keywords import keyword_parameters
from reconguard.models.base import Reconstructor


@dataclass(frozen=True, kw_only=True)
class SmoothingTraining(CleanTraining):
    """Smoothing-aware training (``robust="smooth"``): train the smoothed reconstruction.

    Each step reconstructs through
    ``RandomizedSmoothing(model, **options, seed=derive_seed(seed, epoch, step, replay))``, whose
    ``.model`` shares the weights being trained; validation runs through it as well (fixed seed), so
    the best checkpoint is the best *smoothed* model. The options are ``RandomizedSmoothing``'s
    keyword hyper-parameters except ``seed`` (e.g. ``sigma``, ``samples``, ``mode``), its
    defaults filled in.

    References:
        Cohen et al., arXiv:1902.02918; Li et al. (SMUG), arXiv:2303.12735.
    """

    name: ClassVar[str] = "smooth"
    settings: dict[str, Any]

    def options(self) -> dict[str, Any]:
        return dict(self.settings)

    def wrap(self, model, *, seed) -> Reconstructor:
        return RandomizedSmoothing(model, **self.settings, seed=derive_seed(*seed))


STRATEGIES: dict[str, type[CleanTraining]] = {
    cls.name: cls for cls in (CleanTraining, AdversarialTraining, FNAFTraining, SmoothingTraining)
}
ROBUST_MODES = tuple(STRATEGIES)


def build_strategy(robust: str, options: dict[str, Any] | None = None, *, loss: str = "l1") -> CleanTraining:
    """The strategy ``robust`` with ``options``; unknown modes, keys and values raise ConfigError.

    Args:
        robust: One of :data:`ROBUST_MODES`.
        options: The mode's options (see its class); missing ones take their defaults.
        loss: The run's loss (``l1``, ``mse``, ``ssim``).
    """
    require(robust in STRATEGIES, f"unknown robust training {robust!r}; choose one of {list(ROBUST_MODES)}")
    require(isinstance(options, dict) or options is None, f"robust_config must be a dict, got {options!r}")
    options = dict(options or {})
    if robust == "smooth":
        return SmoothingTraining(settings=_smoothing_settings(options), loss=loss)
    cls = STRATEGIES[robust]
    allowed = sorted(f.name for f in fields(cls) if f.name != "loss")
    unknown = sorted(set(options) - set(allowed))
    require(not unknown, f"unknown {robust} training option(s) {unknown}; it accepts {allowed}")
    try:
        return cls(**options, loss=loss)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {robust} training options {options}: {exc}") from None


def _smoothing_settings(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against RandomizedSmoothing's keyword parameters, defaults filled in."""
    params = {n: p for n, p in keyword_parameters(RandomizedSmoothing).items() if n != "seed"}
    unknown = sorted(set(options) - set(params))
    require(not unknown, f"unknown smooth training option(s) {unknown}; it accepts {sorted(params)}")
    missing = sorted(n for n, p in params.items() if p.default is p.empty and n not in options)
    require(not missing, f"smooth training needs option(s) {missing}")
    return {n: options.get(n, p.default) for n, p in params.items()}
