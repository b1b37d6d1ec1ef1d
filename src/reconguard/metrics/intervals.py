"""Confidence intervals over slices: the percentile bootstrap every table of the package uses."""

from __future__ import annotations

from typing import Sequence

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
