"""Attacks: one threat-model API for k-space, image-domain, sparse, FNAF, transfer and adaptive attacks.

A :class:`ThreatModel` states the budget (domain, norm, eps, relative or absolute, support); an
:class:`Attack` maximises an :class:`AttackLoss` inside it and returns an :class:`AttackResult`
that always carries the same-norm Gaussian-noise baseline.
"""

from reconguard.attacks.base import Attack, AttackContext, AttackResult, frozen
from reconguard.attacks.losses import AttackLoss, reconstruction_error
from reconguard.attacks.noise import same_norm_noise, scaled_noise
from reconguard.attacks.pgd import PGD, fgsm
from reconguard.attacks.threat import ThreatModel, keep_largest

__all__ = [
    "PGD",
    "Attack",
    "AttackContext",
    "AttackLoss",
    "AttackResult",
    "ThreatModel",
    "fgsm",
    "frozen",
    "keep_largest",
    "reconstruction_error",
    "same_norm_noise",
    "scaled_noise",
]
