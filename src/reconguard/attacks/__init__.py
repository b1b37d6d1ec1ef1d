"""Attacks: one threat-model API for k-space, image-domain, sparse, FNAF, transfer and adaptive attacks.

Every attack is an :class:`Attack`: one call on one batch returning an :class:`AttackResult`. A
:class:`ThreatModel` states a perturbation's budget (domain, norm, eps, relative or absolute,
support); a :class:`PerturbationAttack` maximises an :class:`AttackLoss` inside it and its
result carries a random-noise baseline matched to it in every norm that matters; :class:`FNAF`
inserts small features instead and adds its hit and feature scores (:class:`FNAFResult`).
"""

from reconguard.attacks.adaptive import BPDA, PenalizedPGD
from reconguard.attacks.base import Attack, AttackInputs, AttackResult, Baseline, frozen
from reconguard.attacks.features import Features, make_features
from reconguard.attacks.fnaf import FNAF, FNAFResult
from reconguard.attacks.hits import HitCounter, HitRate, summarize_hits
from reconguard.attacks.losses import AttackLoss, reconstruction_error
from reconguard.attacks.noise import gaussian_noise, matched_noise, scaled_noise
from reconguard.attacks.perturbation import AttackContext, PerturbationAttack, keep_best
from reconguard.attacks.pgd import PGD, fgsm
from reconguard.attacks.sparse import SparseKSpace
from reconguard.attacks.threat import ThreatModel, keep_largest
from reconguard.attacks.transfer import TransferOutcome, evaluate_transfer, transfer

__all__ = [
    "BPDA",
    "PenalizedPGD",
    "FNAF",
    "PGD",
    "PerturbationAttack",
    "Attack",
    "AttackContext",
    "AttackInputs",
    "AttackLoss",
    "AttackResult",
    "Baseline",
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
    "gaussian_noise",
    "matched_noise",
    "scaled_noise",
    "evaluate_transfer",
    "summarize_hits",
    "transfer",
]
