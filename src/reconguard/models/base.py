"""The reconstructor protocol and the base class of trainable reconstructors."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from reconguard.errors import ConfigError, DataError
from reconguard.physics.operators import validate_kspace


@runtime_checkable
class Reconstructor(Protocol):
    """Anything that maps under-sampled k-space to an image.

    Attributes:
        differentiable: Gradients w.r.t. ``masked_kspace`` are meaningful (white-box attacks).
        stochastic: Two calls on the same input may differ (attacks should use EOT).

    Reconstructors whose network starts from an image (``accepts_input_delta = True``) also take
    ``input_delta``: an image added to that input image ``A^H y`` wherever the model uses it, the
    unprojected *network-input* perturbation of Saberi et al. (its part outside the measured
    k-space reaches the network too, unlike any change of ``y``). Others raise a ``ConfigError``.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64, zero where not acquired
        mask: bool, broadcastable to ``masked_kspace`` (``(B, 1, 1, W)`` or ``(B, 1, H, W)``)
        coil_maps: ``(B, C, H, W)`` complex64 or ``None``
        input_delta: ``(B, 1, H, W)`` complex64 or ``None``
        output: ``(B, 1, H, W)`` complex64 (magnitude-only models return zero phase)
    """

    differentiable: bool
    stochastic: bool

    def __call__(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        *,
        coil_maps: torch.Tensor | None = None,
        input_delta: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class ReconstructorModule(nn.Module):
    """Base class of the reconstructors in :mod:`reconguard.models`.

    Subclasses set :attr:`name`, store their keyword-only hyper-parameters in :attr:`config`
    (so :func:`reconguard.models.registry.save` can rebuild them) and implement :meth:`_reconstruct`.
    :meth:`forward` validates the input once, so every model rejects malformed k-space the same way.
    Models that set :attr:`accepts_input_delta` take ``input_delta`` as a fourth argument of
    :meth:`_reconstruct` (only when one is given).
    """

    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    accepts_input_delta: ClassVar[bool] = False

    def __init__(self, **config: Any):
        super().__init__()
        self.config: dict[str, Any] = dict(config)

    def forward(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        *,
        coil_maps: torch.Tensor | None = None,
        input_delta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstruct an image; see :class:`Reconstructor` for shapes."""
        validate_kspace(masked_kspace, mask, name=f"{self.name} input")
        if input_delta is None:
            return self._reconstruct(masked_kspace, mask.to(torch.bool), coil_maps)
        validate_input_delta(self, masked_kspace, input_delta)
        return self._reconstruct(masked_kspace, mask.to(torch.bool), coil_maps, input_delta)

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def validate_input_delta(model: object, masked_kspace: torch.Tensor, input_delta: torch.Tensor) -> None:
    """Refuse an ``input_delta`` that ``model`` cannot take or that does not fit the data."""
    if not getattr(model, "accepts_input_delta", False):
        raise ConfigError(
            f"{getattr(model, 'name', '') or type(model).__name__} does not take a network-input perturbation "
            f"(input_delta); models that do: {', '.join(INPUT_DELTA_MODELS)}"
        )
    batch, _, height, width = masked_kspace.shape
    if not input_delta.is_complex() or tuple(input_delta.shape) != (batch, 1, height, width):
        raise DataError(
            f"input_delta must be complex of shape {(batch, 1, height, width)}, got {input_delta.dtype} "
            f"{tuple(input_delta.shape)}"
        )


# Kept in step with the classes that set accepts_input_delta (a test checks it).
INPUT_DELTA_MODELS = ("zero_filled", "unet", "resunet", "modl")


class SeededNoise:
    """Mixin: reproducible noise for random reconstructors and defenses.

    One ``torch.Generator`` per device, seeded with :attr:`seed` on first use;
    :meth:`manual_seed` restarts the sequence (the audit calls it per work unit, so a unit's draws
    do not depend on which process runs it).
    """

    seed: int

    def manual_seed(self, seed: int) -> None:
        """Restart the noise sequence from ``seed`` (on every device)."""
        self.seed = seed
        self.__dict__.setdefault("_generators", {}).clear()

    def _generator(self, device: torch.device) -> torch.Generator:
        generators = self.__dict__.setdefault("_generators", {})
        if device not in generators:
            generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return generators[device]
