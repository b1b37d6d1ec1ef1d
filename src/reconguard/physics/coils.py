"""Coil sensitivities: simulation, estimation from auto-calibration data, root-sum-of-squares."""

from __future__ import annotations

import math

import torch


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination.

    Args:
        coil_images: Complex or real tensor with a coil dimension.
        dim: The coil dimension.

    Returns:
        Real tensor with ``dim`` kept as size 1.

    Shapes:
        coil_images: ``(B, C, H, W)`` -> ``(B, 1, H, W)``
    """
    return coil_images.abs().pow(2).sum(dim=dim, keepdim=True).sqrt()


def simulate_coil_maps(
    num_coils: int,
    shape: tuple[int, int],
    *,
    radius: float = 1.5,
    rotation: float = 0.0,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Birdcage-like coil sensitivities, normalised to unit root-sum-of-squares.

    Coils sit at equal angles on a circle of ``radius`` (in units of the half field of view)
    around the object; each sensitivity falls off as ``1 / distance`` and carries the phase of
    the circularly polarised field it produces (the angle around the coil plus its position
    angle), which is the usual birdcage model.

    Args:
        num_coils: Number of receive coils (>= 1).
        shape: Image size ``(H, W)``.
        radius: Distance of the coils from the centre, in half fields of view (> 1 keeps them
            outside the object).
        rotation: Angle (radians) by which the whole coil array is rotated.
        dtype: Complex output dtype.

    Returns:
        Coil maps with ``sum_c |S_c|^2 == 1`` at every pixel.

    Shapes:
        output: ``(num_coils, H, W)``

    References:
        Same model as sigpy's ``mri.birdcage_maps`` (Ong & Lustig, sigpy).
    """
    if num_coils < 1:
        raise ValueError(f"num_coils must be >= 1, got {num_coils}")
    height, width = shape
    y = (torch.arange(height, dtype=torch.float64) - height / 2) / (height / 2)
    x = (torch.arange(width, dtype=torch.float64) - width / 2) / (width / 2)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    maps = []
    for c in range(num_coils):
        angle = rotation + 2 * math.pi * c / num_coils
        dx = xx - radius * math.cos(angle)
        dy = yy - radius * math.sin(angle)
        dist = torch.sqrt(dx**2 + dy**2)
        phase = torch.atan2(dx, -dy) - angle
        maps.append(torch.polar(1.0 / dist, phase))
    coil_maps = torch.stack(maps)
    coil_maps = coil_maps / rss(coil_maps, dim=0)
    return coil_maps.to(dtype)
