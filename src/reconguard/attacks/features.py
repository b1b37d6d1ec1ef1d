"""Small random features for FNAF: random-walk shapes, positions inside a region, intensities.

References:
    Cheng, Calivá, Shah, Han, Majumdar, Pedoia, "Addressing the false negative problem of deep
    learning MRI reconstruction models by adversarial attacks and robust training", MIDL 2020,
    PMLR 121:121-135.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Union

import torch

from reconguard.errors import ConfigError

Region = Union[int, float, tuple[int, int]]
PAPER_REGION = 120 / 320  # the paper's central 120x120 pixels of 320x320 images, as a fraction

_MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])
Bounds = tuple[int, int, int, int]


@dataclass(frozen=True)
class Features:
    """Candidate features: a pixel shape, a position and an intensity each.

    Attributes:
        offsets: Pixel coordinates ``(row, col)`` relative to the feature's bounding box.
        position: Top-left corner ``(row, col)`` of the bounding box in the image.
        intensity: Amplitude as a fraction of the slice's scale (``max_value``).
        bounds: The region ``(top, left, bottom, right)`` (exclusive) the pixels stay in.

    Shapes:
        offsets: ``(B, K, n, 2)`` long; position: ``(B, K, 2)`` long; intensity: ``(B, K)``
    """

    offsets: torch.Tensor
    position: torch.Tensor
    intensity: torch.Tensor
    bounds: Bounds

    def mask(self, shape: tuple[int, int]) -> torch.Tensor:
        """Boolean feature masks ``(B, K, 1, H, W)`` for images of ``shape = (H, W)``."""
        height, width = shape
        batch, num = self.intensity.shape
        pixels = self.position[:, :, None, :] + self.offsets
        flat = (pixels[..., 0] * width + pixels[..., 1]).flatten(0, 1)
        mask = torch.zeros(batch * num, height * width, dtype=torch.bool, device=flat.device)
        return mask.scatter_(1, flat, True).reshape(batch, num, 1, height, width)

    def to(self, device: torch.device | str) -> "Features":
        """The same features with their tensors on ``device``."""
        return replace(self, **{n: getattr(self, n).to(device) for n in ("offsets", "position", "intensity")})

    def moved(self, shift: torch.Tensor) -> "Features":
        """The features shifted by ``shift`` pixels ``(B, K', 2)``, clamped to the region."""
        top, left, bottom, right = self.bounds
        low = torch.tensor([top, left], device=shift.device)
        high = torch.tensor([bottom, right], device=shift.device) - self.offsets.amax(dim=2) - 1
        position = torch.minimum(torch.maximum(self.position + shift, low), high)
        expand = lambda t: t.expand(t.shape[0], shift.shape[1], *t.shape[2:])  # noqa: E731
        return replace(self, offsets=expand(self.offsets), position=position, intensity=expand(self.intensity))


def select_candidates(candidates, index: torch.Tensor):
    """Candidate ``index[b]`` of each slice: every ``(B, K, ...)`` tensor field becomes ``(B, 1, ...)``."""
    rows = torch.arange(index.shape[0], device=index.device)
    tensors = {f.name: getattr(candidates, f.name) for f in fields(candidates)}
    return replace(candidates, **{k: v[rows, index][:, None] for k, v in tensors.items() if torch.is_tensor(v)})


def concat_candidates(parts: list):
    """Concatenate candidate sets (:class:`Features` or ``_Scores``) along ``K``."""
    names = [f.name for f in fields(parts[0]) if torch.is_tensor(getattr(parts[0], f.name))]
    return replace(parts[0], **{n: torch.cat([getattr(p, n) for p in parts], dim=1) for n in names})


def region_size(region: Region, shape: tuple[int, int]) -> tuple[int, int]:
    """Size ``(h, w)`` of the central feature region of an image of ``shape``.

    Args:
        region: A fraction of each side (float in ``(0, 1]``; the default 0.375 is the paper's
            central 120x120 pixels of a 320x320 fastMRI image), a side in pixels (int), or
            ``(h, w)`` in pixels; clipped to the image.
        shape: Image size ``(H, W)``.
    """
    if isinstance(region, float):
        if not 0 < region <= 1:
            raise ConfigError(f"a fractional feature region must be in (0, 1], got {region}")
        return max(1, round(region * shape[0])), max(1, round(region * shape[1]))
    rh, rw = (region, region) if isinstance(region, int) else region
    return min(int(rh), shape[0]), min(int(rw), shape[1])


def make_features(
    batch: int,
    shape: tuple[int, int],
    *,
    num: int = 11,
    size: int = 10,
    region: Region = PAPER_REGION,
    intensity_range: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator,
) -> Features:
    """Draw ``num`` random-walk features per slice (on the CPU).

    A feature grows by a random walk of unit 4-neighbour steps (revisits allowed) until it covers
    exactly ``size`` distinct pixels, so it is 4-connected. It is placed uniformly with all pixels
    inside the central ``region`` (see :func:`region_size`) and gets one intensity
    uniform in ``intensity_range`` (fractions of the slice maximum; the paper drew each pixel
    uniformly between the image minimum and maximum).

    Args:
        batch, shape: Number of slices ``B`` and image size ``(H, W)``.
        num, size: Candidates per slice ``K`` and pixels per feature ``n``.
        region, intensity_range: See above.
        generator: CPU generator; the source of every random choice.

    Shapes:
        ``mask(shape)``: ``(B, K, 1, H, W)`` bool; ``intensity``: ``(B, K)``

    References:
        Cheng et al., MIDL 2020 (PMLR 121:121-135); Calivá et al., arXiv:2011.00070.
    """
    rh, rw = region_size(region, shape)
    top, left = (shape[0] - rh) // 2, (shape[1] - rw) // 2
    if min(rh, rw) < size:
        raise ConfigError(f"the feature region {(rh, rw)} of an image {tuple(shape)} is smaller than size={size}")
    count = batch * num
    offsets = _random_walks(count, size, generator)
    room = torch.tensor([rh, rw]) - offsets.amax(dim=1)  # number of admissible corners per axis
    corner = (torch.rand(count, 2, generator=generator) * room).long() + torch.tensor([top, left])
    low, high = intensity_range
    intensity = low + (high - low) * torch.rand(count, generator=generator)
    shaped = (offsets.reshape(batch, num, size, 2), corner.reshape(batch, num, 2), intensity.reshape(batch, num))
    return Features(*shaped, (top, left, top + rh, left + rw))


def _random_walks(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` walks stopped at ``size`` distinct pixels: ``(count, size, 2)``, minimum 0."""
    centre, span = size - 1, 2 * size - 1  # a connected set of n pixels lies within n - 1 of its start
    rows = torch.arange(count)
    visited = torch.zeros(count, span, span, dtype=torch.bool)
    visited[:, centre, centre] = True
    position = torch.full((count, 2), centre)
    pixels = torch.full((count, size, 2), centre)
    found = torch.ones(count, dtype=torch.long)
    while bool((found < size).any()):
        step = _MOVES[torch.randint(4, (count,), generator=generator)]
        active = found < size
        position = torch.where(active[:, None], position + step, position)
        new = active & ~visited[rows, position[:, 0], position[:, 1]]
        visited[rows[new], position[new, 0], position[new, 1]] = True
        pixels[rows[new], found[new]] = position[new]
        found = found + new.long()
    return pixels - pixels.amin(dim=1, keepdim=True)
