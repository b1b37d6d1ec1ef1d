"""Cartesian under-sampling masks.

Each generator is a frozen dataclass of hyper-parameters; calling it with a k-space shape and a
seed returns a boolean mask that broadcasts against k-space ``(..., H, W)``. Generators use a
private :class:`numpy.random.RandomState` seeded per call, so global RNG state is never touched and
the same seed always gives the same mask.

:class:`RandomMask` and :class:`EquispacedMask` reproduce fastMRI's ``RandomMaskFunc`` and
``EquiSpacedMaskFractionFunc`` exactly (same shape and seed -> same mask), including the random
draw fastMRI spends on choosing among its (here single) acceleration settings.

References:
    Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI",
    arXiv:1811.08839.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence, Union

import numpy as np
import torch

from reconguard.errors import ConfigError

Seed = Union[int, Sequence[int], None]


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's pairing of acceleration and centre fraction (4x: 0.08, 8x: 0.04).

    Args:
        acceleration: Under-sampling factor.

    Returns:
        The fraction of central phase-encoding lines that is always sampled.
    """
    return 0.32 / acceleration


@dataclass(frozen=True, kw_only=True)
class MaskGenerator:
    """Base class: a Cartesian mask with a fully sampled centre.

    Args:
        acceleration: Under-sampling factor (> 1 for any under-sampling; 1 means full sampling).
        center_fraction: Fraction of central phase-encoding lines always acquired, in (0, 1].

    Subclasses override :meth:`_sample` only.
    """

    acceleration: float
    center_fraction: float
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not np.isfinite(self.acceleration) or self.acceleration < 1:
            raise ConfigError(f"acceleration must be >= 1, got {self.acceleration}")
        if not 0 < self.center_fraction <= 1:
            raise ConfigError(f"center_fraction must be in (0, 1], got {self.center_fraction}")
        if self.center_fraction * self.acceleration > 1 + 1e-9:
            raise ConfigError(
                f"center_fraction={self.center_fraction} alone exceeds the sampling budget of "
                f"acceleration={self.acceleration}; use center_fraction <= 1/acceleration"
            )

    def __call__(self, shape: Sequence[int], *, seed: Seed = None) -> torch.Tensor:
        """Draw a mask for k-space of the given shape.

        Args:
            shape: k-space shape ``(..., H, W)``; phase encoding runs along ``W``.
            seed: Integer or tuple of integers (fastMRI seeds validation masks with
                ``tuple(map(ord, fname))``); ``None`` draws fresh entropy.

        Returns:
            Boolean mask broadcastable to ``shape``.

        Shapes:
            1-D masks: ``(1, ..., 1, W)``; 2-D masks: ``(1, ..., H, W)``; same rank as ``shape``.
        """
        if len(shape) < 2 or min(shape[-2:]) < 1:
            raise ConfigError(f"mask shape must end in (H, W) with H, W >= 1, got {tuple(shape)}")
        rng = np.random.RandomState(seed)
        mask = np.asarray(self._sample(int(shape[-2]), int(shape[-1]), rng), dtype=bool)
        out_shape = [1] * len(shape)
        out_shape[-1] = int(shape[-1])
        if mask.ndim == 2:
            out_shape[-2] = int(shape[-2])
        return torch.from_numpy(mask.reshape(out_shape))

    def _sample(self, height: int, width: int, rng: np.random.RandomState) -> np.ndarray:
        """Return a ``(W,)`` line mask or an ``(H, W)`` point mask."""
        raise NotImplementedError

    def _center_lines(self, width: int) -> np.ndarray:
        num_low = round(width * self.center_fraction)
        mask = np.zeros(width, dtype=bool)
        pad = (width - num_low + 1) // 2
        mask[pad : pad + num_low] = True
        return mask


@dataclass(frozen=True, kw_only=True)
class RandomMask(MaskGenerator):
    """Random phase-encoding lines with a fully sampled centre (fastMRI ``RandomMaskFunc``).

    Outer lines are kept independently with probability
    ``(W / acceleration - n_low) / (W - n_low)`` so the expected line count is ``W / acceleration``.
    """

    name: ClassVar[str] = "random"

    def _sample(self, height: int, width: int, rng: np.random.RandomState) -> np.ndarray:
        rng.randint(1)  # fastMRI draws the (single) acceleration choice first
        center = self._center_lines(width)
        num_low = int(center.sum())
        if num_low >= width:
            return center
        prob = (width / self.acceleration - num_low) / (width - num_low)
        return center | (rng.uniform(size=width) < prob)


@dataclass(frozen=True, kw_only=True)
class EquispacedMask(MaskGenerator):
    """Equispaced lines at the rate that hits ``acceleration`` exactly on average, plus the centre.

    Matches fastMRI ``EquiSpacedMaskFractionFunc`` (the mask of the public multi-coil data),
    including its rounding, which can make spacing uneven (fastMRI issue #54).
    """

    name: ClassVar[str] = "equispaced"

    def _sample(self, height: int, width: int, rng: np.random.RandomState) -> np.ndarray:
        rng.randint(1)
        center = self._center_lines(width)
        num_low = int(center.sum())
        if num_low * self.acceleration >= width:
            return center
        adjusted = self.acceleration * (num_low - width) / (num_low * self.acceleration - width)
        offset = rng.randint(0, high=round(adjusted))
        lines = np.zeros(width, dtype=bool)
        lines[np.around(np.arange(offset, width - 1, adjusted)).astype(np.uint)] = True
        return center | lines


@dataclass(frozen=True, kw_only=True)
class VariableDensityMask(MaskGenerator):
    """2-D variable-density random mask (Gaussian density) with a fully sampled central square.

    Each k-space point outside the centre is kept independently with probability
    ``min(1, c * exp(-r^2 / (2 sigma^2)))`` (``r`` the normalised radius), with ``c`` found by
    bisection so the expected number of samples is ``H * W / acceleration``. Suited to 3-D
    acquisitions where both phase-encoding directions are under-sampled.

    Args:
        sigma: Width of the Gaussian density in units of the half k-space extent.
    """

    sigma: float = 0.3
    name: ClassVar[str] = "variable_density"

    def _sample(self, height: int, width: int, rng: np.random.RandomState) -> np.ndarray:
        ky = np.linspace(-1, 1, height)[:, None]
        kx = np.linspace(-1, 1, width)[None, :]
        density = np.exp(-(ky**2 + kx**2) / (2 * self.sigma**2))
        center = self._center_lines(width)[None, :] & _center_indicator(height, self.center_fraction)
        budget = height * width / self.acceleration - center.sum()
        free = ~center
        lo, hi = 0.0, 1.0 / density[free].min() if free.any() else 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if np.minimum(1.0, mid * density[free]).sum() < budget:
                lo = mid
            else:
                hi = mid
        prob = np.minimum(1.0, hi * density)
        return center | (rng.uniform(size=(height, width)) < prob)


def _center_indicator(length: int, fraction: float) -> np.ndarray:
    num = round(length * fraction)
    ind = np.zeros((length, 1), dtype=bool)
    pad = (length - num + 1) // 2
    ind[pad : pad + num] = True
    return ind


MASKS: dict[str, type[MaskGenerator]] = {
    cls.name: cls for cls in (RandomMask, EquispacedMask, VariableDensityMask)
}


def build_mask(
    kind: str, *, acceleration: float, center_fraction: float | None = None
) -> MaskGenerator:
    """Build a mask generator by name.

    Args:
        kind: One of ``"random"``, ``"equispaced"``, ``"variable_density"``.
        acceleration: Under-sampling factor.
        center_fraction: Fully sampled central fraction; defaults to fastMRI's pairing
            (:func:`default_center_fraction`).

    Returns:
        The mask generator.
    """
    if kind not in MASKS:
        raise ConfigError(f"unknown mask type {kind!r}; choose one of {sorted(MASKS)}")
    if center_fraction is None:
        center_fraction = default_center_fraction(acceleration)
    return MASKS[kind](acceleration=acceleration, center_fraction=center_fraction)
