"""Linear MRI forward operators, built by composition.

An :class:`Operator` maps an image to k-space (``forward``) and back (``adjoint``); ``normal`` is
``adjoint(forward(x))``. :class:`MRIOperator` composes coil-sensitivity weighting, the centred
orthonormal FFT and Cartesian sampling. Operators are immutable: :meth:`MRIOperator.with_mask`
returns a new operator. Every operator passes an adjointness test
(``<A x, y> == <x, A^H y>``) in ``tests/physics/test_operators.py``.

References:
    Pruessmann et al., "SENSE: Sensitivity encoding for fast MRI", MRM 1999.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from reconguard.errors import DataError
from reconguard.physics.fft import fft2c, ifft2c


class Operator(nn.Module):
    """A linear operator with an explicit adjoint.

    Subclasses implement :meth:`forward` and :meth:`adjoint`.
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        """Apply ``A^H A``."""
        return self.adjoint(self.forward(image))


class CoilSensitivity(Operator):
    """Multiply a coil-combined image by coil maps (``(B,1,H,W) -> (B,C,H,W)``)."""

    def __init__(self, coil_maps: torch.Tensor):
        super().__init__()
        self.register_buffer("coil_maps", coil_maps, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image * self.coil_maps

    def adjoint(self, coil_images: torch.Tensor) -> torch.Tensor:
        return (coil_images * self.coil_maps.conj()).sum(dim=1, keepdim=True)


class FourierTransform(Operator):
    """Centred orthonormal 2-D FFT (unitary, so its adjoint is its inverse)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return fft2c(image)

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        return ifft2c(kspace)


class Sampling(Operator):
    """Keep the acquired k-space samples, zero the rest (self-adjoint projection)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool), persistent=False)

    def forward(self, kspace: torch.Tensor) -> torch.Tensor:
        return kspace * self.mask

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        return kspace * self.mask


class Compose(Operator):
    """``A = A_n ... A_1``: ``forward`` applies the parts in order, ``adjoint`` in reverse."""

    def __init__(self, parts: Sequence[Operator]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            image = part(image)
        return image

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        for part in reversed(self.parts):
            kspace = part.adjoint(kspace)
        return kspace


def sens_expand(image: torch.Tensor, coil_maps: torch.Tensor | None = None) -> torch.Tensor:
    """``F S x``: the fully sampled k-space of every coil (single-coil: ``F x``), the forward of
    :class:`MRIOperator` before sampling. Shapes: ``(B, 1, H, W)`` -> ``(B, C, H, W)``"""
    return fft2c(image if coil_maps is None else image * coil_maps)


def sens_reduce(kspace: torch.Tensor, coil_maps: torch.Tensor | None = None) -> torch.Tensor:
    """``S^H F^H y``: the coil-combined image of k-space (single-coil: ``F^H y``), the adjoint of
    :func:`sens_expand`. Shapes: ``(B, C, H, W)`` -> ``(B, 1, H, W)``"""
    images = ifft2c(kspace)
    return images if coil_maps is None else (images * coil_maps.conj()).sum(dim=1, keepdim=True)


class MRIOperator(Compose):
    """Cartesian MRI: ``y = M F S x`` (single-coil when ``coil_maps`` is ``None``).

    Args:
        mask: Boolean sampling mask broadcastable to k-space.
        coil_maps: Complex coil sensitivities; ``None`` for single-coil data.

    Shapes:
        mask: broadcastable to ``(B, C, H, W)``
        coil_maps: ``(B, C, H, W)``
        forward: image ``(B, 1, H, W)`` -> k-space ``(B, C, H, W)``
        adjoint: k-space ``(B, C, H, W)`` -> image ``(B, 1, H, W)``
    """

    def __init__(self, mask: torch.Tensor, coil_maps: torch.Tensor | None = None):
        parts: list[Operator] = [] if coil_maps is None else [CoilSensitivity(coil_maps)]
        super().__init__([*parts, FourierTransform(), Sampling(mask)])
        self._coil_maps = coil_maps

    @property
    def mask(self) -> torch.Tensor:
        """The boolean sampling mask."""
        return self.parts[-1].mask

    @property
    def coil_maps(self) -> torch.Tensor | None:
        """Coil sensitivities, or ``None`` for single-coil."""
        return self._coil_maps

    def with_mask(self, mask: torch.Tensor) -> "MRIOperator":
        """Return a new operator with the same coils and another sampling mask."""
        return MRIOperator(mask, self._coil_maps)


def validate_kspace(
    kspace: torch.Tensor, mask: torch.Tensor | None = None, *, name: str = "k-space"
) -> None:
    """Check that k-space is finite complex ``(B, C, H, W)`` and that the mask broadcasts.

    Args:
        kspace: k-space tensor to check.
        mask: Optional sampling mask to check against ``kspace``.
        name: What to call the tensor in the error message (e.g. a file name).

    Raises:
        DataError: On any problem, with one sentence describing it.
    """
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex():
        raise DataError(f"{name}: expected complex k-space, got {getattr(kspace, 'dtype', type(kspace))}")
    if kspace.ndim != 4:
        raise DataError(f"{name}: expected k-space of shape (B, C, H, W), got {tuple(kspace.shape)}")
    if kspace.numel() == 0:
        raise DataError(f"{name}: k-space is empty, shape {tuple(kspace.shape)}")
    if not bool(torch.isfinite(torch.view_as_real(kspace)).all()):
        raise DataError(f"{name}: k-space contains NaN or inf values")
    if mask is not None:
        try:
            torch.broadcast_shapes(mask.shape, kspace.shape)
        except RuntimeError:
            raise DataError(
                f"{name}: mask shape {tuple(mask.shape)} does not broadcast to k-space shape "
                f"{tuple(kspace.shape)}"
            ) from None
        if mask.ndim != kspace.ndim:
            raise DataError(f"{name}: mask must have rank {kspace.ndim}, got {tuple(mask.shape)}")


def center_crop(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop the last two dimensions to ``shape`` around the centre (fastMRI ``center_crop``).

    Args:
        image: Tensor ``(..., H, W)``.
        shape: Target ``(h, w)`` with ``h <= H`` and ``w <= W``.

    Returns:
        The cropped view.
    """
    height, width = int(shape[0]), int(shape[1])
    if not (0 < height <= image.shape[-2] and 0 < width <= image.shape[-1]):
        raise DataError(f"cannot crop an image of shape {tuple(image.shape[-2:])} to {(height, width)}")
    top = (image.shape[-2] - height) // 2
    left = (image.shape[-1] - width) // 2
    return image[..., top : top + height, left : left + width]
