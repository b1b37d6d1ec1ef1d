"""Adaptive attacks on defended reconstructors.

A defense in reconguard is itself a reconstructor, so the first and strongest evaluation of a
defense needs no new machinery: run white-box :class:`~reconguard.attacks.pgd.PGD` (or any
attack) *through the whole defended pipeline*. Two properties of the defended model decide
whether plain gradients can be trusted, and each has a standard fix (Athalye et al.):

- ``differentiable = False`` -- the pipeline contains a step whose gradient is missing, zero
  almost everywhere or useless (quantisation, a non-differentiable solver, a call into NumPy or a
  scanner's black box). Wrap it in :class:`BPDA`: the forward pass stays exact, the backward pass
  goes through a differentiable approximation (typically the undefended model inside the
  defense), and PGD runs on the wrapper unchanged;
- ``stochastic = True`` -- randomised defenses (random transforms, dropout at test time,
  diffusion sampling) give a different gradient at every call. PGD then averages the loss over
  ``eot_samples`` draws per step (expectation over transformation); this happens automatically
  for models that declare ``stochastic = True``, including :class:`BPDA` wrappers of them.

A defense evaluated only by attacks that ignore these two points is not shown to be robust.

References:
    Athalye, Carlini, Wagner, "Obfuscated gradients give a false sense of security: circumventing
    defenses to adversarial examples", arXiv:1802.00420; Athalye et al., "Synthesizing robust
    adversarial examples" (EOT), arXiv:1707.07397.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from reconguard.attacks.base import call_model
from reconguard.attacks.losses import AttackLoss
from reconguard.attacks.perturbation import AttackContext
from reconguard.attacks.pgd import PGD
from reconguard.attacks.threat import ThreatModel
from reconguard.errors import ConfigError
from reconguard.models.base import Reconstructor

Penalty = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]


class BPDA(nn.Module):
    """Backward-pass differentiable approximation: exact outputs, approximate gradients.

    ``BPDA(forward, backward)(y, mask)`` returns exactly ``forward(y, mask)`` (computed without
    autograd), but its gradient w.r.t. ``y`` is that of ``backward(y, mask)``: the output is
    ``exact + (approx - approx.detach())``, the straight-through form of
    ``approx + (exact - approx).detach()`` that keeps the exact values bit for bit.

    There is no default ``backward``: the identity used for image classifiers' pre-processing
    makes no sense for a map from k-space to images. The usual choice is the undefended
    reconstructor inside a defense, or a differentiable surrogate of a classical solver.

    Args:
        forward: The model to attack (may be non-differentiable).
        backward: A differentiable reconstructor approximating ``forward``.

    Attributes:
        differentiable: Always ``True``.
        stochastic: ``True`` when either model is stochastic (random outputs or random
            gradients both call for EOT).

    Shapes:
        masked_kspace ``(B, C, H, W)`` -> ``(B, 1, H, W)``; both models must agree on the output.

    References:
        Athalye, Carlini, Wagner, "Obfuscated gradients give a false sense of security",
        arXiv:1802.00420.
    """

    differentiable = True

    def __init__(self, forward: Reconstructor, backward: Reconstructor):
        super().__init__()
        for label, model in (("forward", forward), ("backward", backward)):
            if not callable(model):
                raise ConfigError(f"BPDA {label} must be a reconstructor, got {type(model).__name__}")
        if not getattr(backward, "differentiable", True):
            raise ConfigError("the BPDA backward approximation must be differentiable")
        self.exact = forward
        self.approx = backward
        self.stochastic = bool(getattr(forward, "stochastic", False) or getattr(backward, "stochastic", False))
        self.accepts_input_delta = all(getattr(m, "accepts_input_delta", False) for m in (forward, backward))

    def forward(self, masked_kspace: Tensor, mask: Tensor, *, coil_maps: Tensor | None = None,
                input_delta: Tensor | None = None) -> Tensor:
        """Exact reconstruction with the approximation's gradient (a reconstructor's call); see :class:`BPDA`."""
        with torch.no_grad():
            exact = call_model(self.exact, masked_kspace, mask, coil_maps, input_delta)
        approx = call_model(self.approx, masked_kspace, mask, coil_maps, input_delta)
        if exact.shape != approx.shape:
            raise ConfigError(
                f"BPDA: forward gives shape {tuple(exact.shape)} but backward gives {tuple(approx.shape)}"
            )
        return exact.to(approx.dtype) + (approx - approx.detach())


class PenalizedPGD(PGD):
    """PGD on ``loss(recon) - weight * penalty(input)``: an attack that knows a detector.

    An attacker who knows that a defense scores its inputs (e.g. the cyclic-consistency loss of
    :class:`~reconguard.defenses.CyclicMitigation`, whose mitigation minimises that score) keeps
    the score low while doing damage, so the input already looks consistent and the mitigation
    has little to undo. The penalty is differentiated like the loss; the reported
    :attr:`AttackResult.loss` is the damage alone.

    Args:
        threat, loss: As :class:`PGD`.
        penalty: ``(model_kspace, mask, coil_maps, input_delta) -> (B,)``, differentiable, on what
            the model is given under ``delta`` (see :meth:`ThreatModel.model_input`).
        weight: Weight of the penalty.
        **options: The other :class:`PGD` options.

    References:
        Athalye, Carlini, Wagner, arXiv:1802.00420 (adaptive attacks on detectors); Carlini,
        Wagner, "Adversarial examples are not easily detected", arXiv:1705.07263.
    """

    def __init__(self, threat: ThreatModel, loss: AttackLoss | None = None, *, penalty: Penalty,
                 weight: float = 1.0, **options):
        super().__init__(threat, loss, **options)
        if not callable(penalty):
            raise ConfigError(f"penalty must be callable, got {type(penalty).__name__}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"weight must be a finite number >= 0, got {weight!r}")
        self.penalty, self.weight = penalty, float(weight)

    def _context(self, *args) -> AttackContext:
        ctx = super()._context(*args)

        def penalty(delta: torch.Tensor) -> torch.Tensor:
            kspace, input_delta = ctx.threat.model_input(ctx.masked_kspace, ctx.mask, delta, ctx.coil_maps)
            return self.weight * self.penalty(kspace, ctx.mask, ctx.coil_maps, input_delta)

        ctx.penalty = penalty
        return ctx
