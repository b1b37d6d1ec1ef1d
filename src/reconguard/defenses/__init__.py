"""Defenses: each wraps a reconstructor and is itself a reconstructor (so attacks can target it).

- :class:`CyclicMitigation`: training-free cyclic measurement-consistency mitigation with an
  attack detector (Saberi, Zhang, Akçakaya, arXiv:2501.01908).
- :class:`RandomizedSmoothing`: SMUG denoiser smoothing of unrolled networks, or input smoothing.
- Robust training (PGD-AT, free AT, FNAF-robust, smoothing-aware) lives in
  :mod:`reconguard.defenses.training` and runs through ``reconguard train --robust``;
  :class:`TrainedWeights` presents its result as a defense of the model it started from.
"""

from reconguard.defenses.base import Defense
from reconguard.defenses.cyclic import CyclicMitigation
from reconguard.defenses.cyclic_batch import CyclicResult
from reconguard.defenses.registry import DEFENSES, build_defense
from reconguard.defenses.smoothing import DENOISER_PATHS, RandomizedSmoothing, SmoothedDenoiser
from reconguard.defenses.weights import TrainedWeights

__all__ = [
    "DEFENSES",
    "DENOISER_PATHS",
    "CyclicMitigation",
    "CyclicResult",
    "Defense",
    "RandomizedSmoothing",
    "SmoothedDenoiser",
    "TrainedWeights",
    "build_defense",
]
