"""The ``Delta`` masks of cyclic mitigation: fixed, seeded, different from ``Omega`` and each other."""

from __future__ import annotations

import torch

from reconguard.errors import ConfigError, DataError, require
from reconguard.physics.masks import MaskGenerator, RandomMask

_MAX_DRAWS = 64


def delta_masks(omega: torch.Tensor, shape: tuple[int, int], *, num_masks: int,
                generator: MaskGenerator | None, seed: int) -> torch.Tensor:
    """``num_masks`` masks per slice, each different from ``Omega`` and the others where possible.

    Drawn from ``(seed, k, attempt)`` only, so slices with the same ``Omega`` get the same masks.

    Shapes:
        omega: ``(B, 1, 1 or H, W)`` -> ``(K, B, 1, 1 or H, W)``
    """
    out = []
    for b in range(omega.shape[0]):
        own = omega[b].broadcast_to(1, *shape).cpu()
        draw = generator or infer_generator(own)
        drawn: list[torch.Tensor] = []
        for k in range(num_masks):
            for attempt in range(_MAX_DRAWS):
                m = draw((1, 1, *shape), seed=(seed, k, attempt))[0]
                full = m.broadcast_to(1, *shape)
                if not any(torch.equal(full, o.broadcast_to(1, *shape)) for o in [own, *drawn]):
                    break
            drawn.append(m)
        out.append(torch.stack(drawn))
    return torch.stack(out, dim=1)


def infer_generator(omega: torch.Tensor) -> RandomMask:
    """A ``RandomMask`` with the acceleration and fully sampled centre of a Cartesian line mask."""
    rows = omega.reshape(-1, omega.shape[-1])
    if not bool((rows == rows[:1]).all()):
        raise ConfigError("Omega is not a Cartesian line mask; pass mask_generator= to draw the Delta masks")
    lines = rows[0].numpy()
    width, count = lines.size, int(lines.sum())
    require(count > 0, "the sampling mask acquires no k-space line", DataError)
    lo = hi = width // 2
    while lines[lo] and lo > 0 and lines[lo - 1]:
        lo -= 1
    while lines[hi] and hi + 1 < width and lines[hi + 1]:
        hi += 1
    # A run holding (nearly) all lines would leave no random line to vary: share at most 3/4.
    run = min(hi - lo + 1 if lines[width // 2] else 1, max(1, 3 * count // 4))
    acceleration = width / count
    return RandomMask(acceleration=acceleration, center_fraction=min(run / width, 1 / acceleration))
