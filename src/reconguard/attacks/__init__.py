"""Attacks: one threat-model API for k-space, image-domain, sparse, FNAF, transfer and adaptive attacks.

A :class:`ThreatModel` states the budget (domain, norm, eps, relative or absolute, support); an
:class:`Attack` maximises an :class:`AttackLoss` inside it and returns an :class:`AttackResult`
that always carries the same-norm Gaussian-noise baseline.
"""

from reconguard.attacks.adaptive import BPDA, PenalizedPGD
from reconguard.attacks.base import Attack, AttackContext, AttackResult, frozen, keep_best
from reconguard.attacks.features import Features, make_features
from reconguard.attacks.fnaf import FNAF, FNAFResult
from reconguard.attacks.hits import HitCounter, HitRate, summarize_hits
from reconguard.attacks.losses import AttackLoss, reconstruction_error
from reconguard.attacks.noise import same_norm_noise, scaled_noise
from reconguard.attacks.pgd import PGD, fgsm
from reconguard.attacks.sparse import SparseKSpace
from reconguard.attacks.threat import ThreatModel, keep_largest
from reconguard.attacks.transfer import TransferOutcome, transfer, transfer_matrix

__all__ = [
    "BPDA",
    "PenalizedPGD",
    "FNAF",
    "PGD",
    "Attack",
    "AttackContext",
    "AttackLoss",
    "AttackResult",
    "FNAFResult",
    "Features",
    "HitCounter",
    "HitRate",
    "SparseKSpace",
    "ThreatModel",
    "TransferOutcome",
    "fgsm",
    "frozen",
    "keep_best",
    "keep_largest",
    "make_features",
    "reconstruction_error",
    "same_norm_noise",
    "scaled_noise",
    "summarize_hits",
    "transfer",
    "transfer_matrix",
]
