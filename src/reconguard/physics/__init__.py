"""MRI physics: the only place that knows FFTs, sampling masks and coil sensitivities."""

from reconguard.physics.coils import estimate_coil_maps, resolve_operator, rss, simulate_coil_maps
from reconguard.physics.fft import fft2c, ifft2c
from reconguard.physics.masks import (
    EquispacedMask,
    MaskGenerator,
    RandomMask,
    VariableDensityMask,
    build_mask,
)
from reconguard.physics.operators import MRIOperator, Operator, sens_expand, sens_reduce

__all__ = [
    "EquispacedMask",
    "MRIOperator",
    "MaskGenerator",
    "Operator",
    "resolve_operator",
    "RandomMask",
    "VariableDensityMask",
    "build_mask",
    "estimate_coil_maps",
    "fft2c",
    "ifft2c",
    "rss",
    "sens_expand",
    "sens_reduce",
    "simulate_coil_maps",
]
