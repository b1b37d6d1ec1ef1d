"""Zero-filled reconstruction: the adjoint of the sampling operator."""

from __future__ import annotations

import torch

from reconguard.models.base import ReconstructorModule
from reconguard.physics.coils import rss
from reconguard.physics.fft import ifft2c
from reconguard.physics.operators import sens_reduce


def zero_filled(masked_kspace: torch.Tensor, coil_maps: torch.Tensor | None = None) -> torch.Tensor:
    """Coil-combined inverse FFT of zero-filled k-space.

    Single-coil data and data with known coil maps give the complex adjoint ``A^H y``
    (SENSE combination); multi-coil data without maps give the root-sum-of-squares magnitude
    (zero phase), as fastMRI does.

    Args:
        masked_kspace: Under-sampled k-space, zero where not acquired.
        coil_maps: Optional coil sensitivities.

    Returns:
        Complex image.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` -> ``(B, 1, H, W)``
    """
    if coil_maps is not None or masked_kspace.shape[1] == 1:
        return sens_reduce(masked_kspace, coil_maps)
    coil_images = ifft2c(masked_kspace)
    return rss(coil_images).to(coil_images.dtype)


class ZeroFilled(ReconstructorModule):
    """The zero-filled baseline as a :class:`~reconguard.models.base.Reconstructor`.

    A network-input perturbation (``input_delta``) passes straight to the output.
    """

    name = "zero_filled"
    accepts_input_delta = True

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None,
        input_delta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image = zero_filled(masked_kspace, coil_maps)
        return image if input_delta is None else image + input_delta
