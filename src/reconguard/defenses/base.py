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

from typing import ClassVar

import torch
from torch import nn

from reconguard.errors import ConfigError
from reconguard.physics.operators import validate_kspace


class Defense(nn.Module):
    """Base class of defenses: ``model`` is the protected reconstructor.

    Subclasses set :attr:`name` and the two flags (as class attributes or in ``__init__``) and
    implement :meth:`_defend`; input validation happens once here.

    Attributes:
        differentiable: Gradients through the defense are meaningful (else attack with BPDA).
        stochastic: Two calls on the same input may differ (attack with EOT).
    """

    name: ClassVar[str] = ""
    differentiable: bool = True
    stochastic: bool = False

    def __init__(self, model: nn.Module):
        super().__init__()
        if not callable(model):
            raise ConfigError(f"a defense wraps a reconstructor, got {type(model).__name__}")
        self.model = model

    def forward(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        *,
        coil_maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Defended reconstruction; same shapes as :class:`~reconguard.models.base.Reconstructor`."""
        validate_kspace(masked_kspace, mask, name=f"{self.name or type(self).__name__} input")
        return self._defend(masked_kspace, mask.to(torch.bool), coil_maps)

    def _defend(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError
