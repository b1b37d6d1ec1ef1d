"""The defense protocol: a defense wraps a reconstructor and is itself a reconstructor.

Because a :class:`Defense` has the reconstructor call signature, every attack in
:mod:`reconguard.attacks` runs against the whole defended pipeline unchanged -- the adaptive attack
of Athalye et al.: white-box PGD through the defense when it is differentiable, BPDA
(:class:`~reconguard.attacks.BPDA`) when it is not, EOT when it is random. A defense must therefore
be honest about ``differentiable`` and ``stochastic``.

References:
    Athalye, Carlini, Wagner, "Obfuscated gradients give a false sense of security",
    arXiv:1802.00420.
"""

from __future__ import annotations

from torch import nn

from reconguard.errors import ConfigError
from reconguard.models.base import ReconstructorModule


class Defense(ReconstructorModule):
    """Base class of defenses: ``model`` is the protected reconstructor.

    A defense is a :class:`~reconguard.models.base.ReconstructorModule` (input validation happens
    once, there); subclasses set :attr:`name` and the two flags (as class attributes or in
    ``__init__``) and implement ``_reconstruct``.

    Attributes:
        differentiable: Gradients through the defense are meaningful (else attack with BPDA).
        stochastic: Two calls on the same input may differ (attack with EOT).
    """

    def __init__(self, model: nn.Module, **config):
        super().__init__(**config)
        if not callable(model):
            raise ConfigError(f"a defense wraps a reconstructor, got {type(model).__name__}")
        self.model = model
