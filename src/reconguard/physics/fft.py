"""Centred, orthonormal 2-D FFTs over the last two dimensions of complex tensors.

These are numerically identical to fastMRI's ``fastmri.fft2c`` / ``fastmri.ifft2c`` (which work on
a trailing real/imaginary axis): ``ifftshift -> fft2(norm="ortho") -> fftshift``. The shifts are
pure permutations, so the two implementations agree to float32 round-off of the FFT itself.
"""

from __future__ import annotations

import torch

_DIMS = (-2, -1)


def _check_complex(x: torch.Tensor, name: str) -> None:
    if not x.is_complex():
        raise TypeError(f"{name} expects a complex tensor, got dtype {x.dtype}")


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT (image -> k-space).

    Args:
        image: Complex tensor; the transform acts on the last two dimensions.

    Returns:
        Complex tensor of the same shape.

    Shapes:
        image: ``(..., H, W)`` -> ``(..., H, W)``
    """
    return _centred(torch.fft.fft2, image, "fft2c")


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D FFT (k-space -> image): the inverse (and adjoint) of
    :func:`fft2c`, on the last two dimensions of a complex tensor ``(..., H, W)``."""
    return _centred(torch.fft.ifft2, kspace, "ifft2c")


def _centred(transform, x: torch.Tensor, name: str) -> torch.Tensor:
    """``transform`` (``fft2`` or ``ifft2``, orthonormal) with the origin at the array centre."""
    _check_complex(x, name)
    shifted = torch.fft.ifftshift(x, dim=_DIMS)
    return torch.fft.fftshift(transform(shifted, dim=_DIMS, norm="ortho"), dim=_DIMS)
