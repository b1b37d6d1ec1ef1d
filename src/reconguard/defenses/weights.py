"""A defense by training: the protected model's architecture with robustly trained weights.

Robust training (``reconguard train --robust pgd|fnaf|smooth``, :mod:`reconguard.defenses.training`)
produces a new set of weights, not a wrapper. :class:`TrainedWeights` presents those weights as a
defense of the model they were fine-tuned from, so that an audit pairs the two like any defended
and undefended model: the clean cost, the gain under the attack crafted on the original model
(non-adaptive: a transfer to the robust weights) and under the attack on the robust weights
themselves (adaptive: white-box, the attacker has them), and the change of the FNAF hit rate.
"""

from __future__ import annotations

from torch import nn

from reconguard.attacks.base import call_model
from reconguard.defenses.base import Defense
from reconguard.errors import require


class TrainedWeights(Defense):
    """``weights`` in place of ``model`` (same architecture): differentiable, stochastic and
    network-input capable exactly when ``weights`` is.

    Args:
        model: The protected (original) model; kept for reference, never called.
        weights: The robustly trained model that reconstructs.

    Shapes:
        As :class:`~reconguard.models.base.Reconstructor`.
    """

    name = "trained"

    def __init__(self, model: nn.Module, *, weights: nn.Module):
        super().__init__(model)
        require(callable(weights), f"weights must be a reconstructor, got {type(weights).__name__}")
        self.weights = weights
        self.differentiable = bool(getattr(weights, "differentiable", True))
        self.stochastic = bool(getattr(weights, "stochastic", False))
        self.accepts_input_delta = bool(getattr(weights, "accepts_input_delta", False))
        if hasattr(weights, "manual_seed"):  # random weights draw the unit's numbers (experiment._reseed)
            self.manual_seed = weights.manual_seed

    def _reconstruct(self, masked_kspace, mask, coil_maps, input_delta=None):
        return call_model(self.weights, masked_kspace, mask, coil_maps, input_delta)
