"""Confidence intervals over slices: the percentile bootstrap every table of the package uses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch


def bootstrap_ci(values: Sequence[float] | torch.Tensor, *, level: float = 0.95, draws: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of the mean, ``(mean, low, high)``.

    One value gives a zero-width interval (there is nothing to resample).
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    if data.size == 0 or not np.isfinite(data).all():
        raise ValueError("bootstrap_ci needs at least one finite value")
    mean = float(data.mean())
    if data.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(draws, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return mean, float(low), float(high)


@dataclass(frozen=True)
class Interval:
    """A mean over slices with its bootstrap interval.

    Attributes:
        mean: Mean over slices.
        low: Lower end of the interval.
        high: Upper end.
        n: Number of slices.
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def measurable(self) -> bool:
        """Two or more slices and an interval that excludes 0."""
        return self.n >= 2 and not self.low <= 0.0 <= self.high

    def label(self, fmt: str = "{:+.2f}") -> str:
        """``+1.20 [+0.80, +1.60]``, or ``+1.20 (1 slice: no interval)``."""
        if self.n < 2:
            return f"{fmt.format(self.mean)} (1 slice: no interval)"
        return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def interval(values: Iterable[float | None], *, level: float = 0.95) -> Interval | None:
    """Mean and percentile-bootstrap interval of the finite ``values`` (``None`` if there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    centre, low, high = bootstrap_ci(finite, level=level)
    return Interval(centre, low, high, len(finite))
