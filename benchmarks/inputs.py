"""Benchmark inputs: seeded phantom slices with simulated k-space, and seeded preset-size models.

Data come from the built-in data set's own recipe (:func:`reconguard.data.phantom_volume` and
:func:`reconguard.data.simulate_acquisition`: smooth random phase, birdcage coil maps, noise 0.01),
built in memory, so a benchmark needs no files and always sees the same slices. Models are built
with :data:`reconguard.training.presets.CPU_PRESETS` sizes and seeded weights (random: speed does
not depend on what the weights learned; each quality comparison says why it is still fair).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from reconguard.data import phantom_volume, simulate_acquisition
from reconguard.metrics import magnitude, psnr
from reconguard.models import build
from reconguard.physics import RandomMask
from reconguard.training.presets import CPU_PRESETS


@dataclass(frozen=True)
class Batch:
    """Slices with everything a reconstructor, an attack or a defense needs.

    Shapes:
        kspace, masked_kspace: ``(B, C, H, W)`` complex64 (fully sampled / under-sampled);
        mask: ``(B, 1, 1, W)`` bool; target: ``(B, 1, H, W)``; max_value: ``(B,)``;
        coil_maps: ``(B, C, H, W)`` or ``None`` (single-coil)
    """

    kspace: torch.Tensor
    masked_kspace: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    max_value: torch.Tensor
    coil_maps: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.kspace.shape[0])

    def to(self, device: str) -> "Batch":
        """Every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(self, **{k: v.to(device) for k, v in moved.items()})


@functools.lru_cache(maxsize=4)
def _volume(size: int) -> np.ndarray:
    return phantom_volume(size)


def phantom_batch(
    batch: int,
    *,
    size: int = 128,
    coils: int = 1,
    acceleration: float = 4.0,
    first: int = 0,
    seed: int = 0,
    device: str = "cpu",
) -> Batch:
    """``batch`` axial phantom slices (slice ``first`` on), simulated and under-sampled.

    Slices are 3 planes apart starting at 30 % of the volume; ``first`` skips that many, so
    disjoint sets (e.g. calibration and test) are ``first=0`` and ``first=batch``. Each slice
    gets its own random line mask (fastMRI ``RandomMask``, centre fraction 0.08), seeded by its index.
    """
    planes = [int(0.3 * size) + 3 * (first + i) for i in range(batch)]
    if planes[-1] >= int(0.75 * size):
        raise ValueError(f"{batch} slices from {first} do not fit a {size}-voxel phantom; use a larger size")
    images = np.ascontiguousarray(_volume(size)[:, :, planes].transpose(2, 1, 0))
    data = simulate_acquisition(images, coils=coils, noise=0.01, rng=np.random.default_rng([seed, first]))
    kspace = data["kspace"] if coils > 1 else data["kspace"][:, None]
    generator = RandomMask(acceleration=acceleration, center_fraction=0.08)
    mask = torch.stack([generator(tuple(kspace.shape[1:]), seed=(seed, first + i)) for i in range(batch)])
    target = data["target"][:, None]
    maps = None if data["coil_maps"] is None else data["coil_maps"].contiguous()
    out = Batch(kspace, kspace * mask, mask, target, target.flatten(1).amax(dim=1), maps)
    return out.to(device)


def preset_model(name: str, device: str = "cpu", **overrides: Any) -> torch.nn.Module:
    """A registered model at its CPU preset size (``overrides`` win), seeded weights, eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build(name, **{**CPU_PRESETS.get(name, {}), **overrides})
    return model.to(device).eval()


def slice_psnr(recon: torch.Tensor, data: Batch) -> torch.Tensor:
    """PSNR (dB) of each slice's magnitude against the target, data range ``max_value`` (``(B,)``)."""
    return psnr(data.target, magnitude(recon.detach(), data.target), data_range=data.max_value, reduction="none")


def fit(model: torch.nn.Module, data: Batch, *, steps: int, batch: int = 4, lr: float = 1e-3, seed: int = 0):
    """Train ``model`` in place for ``steps`` Adam steps (L1 on magnitude), fresh random masks each step.

    A seconds-long fit, not a training run: it only lifts a random-weight model to a sane,
    data-consistent reconstruction (about zero-filled quality for MoDL at the CPU preset after
    30 steps), so that PSNR comparisons of attacks and defenses are not made on noise. Seeded
    (slice draws and masks), so the same ``steps`` give the same weights on the same machine.

    Returns:
        The model, in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    masks = RandomMask(acceleration=4.0, center_fraction=0.08)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        index = torch.randperm(len(data), generator=generator)[:batch].to(data.kspace.device)
        kspace = data.kspace[index]
        mask = torch.stack([masks(tuple(kspace.shape[1:]), seed=(seed, step, i)) for i in range(len(index))])
        mask = mask.to(kspace.device)
        maps = None if data.coil_maps is None else data.coil_maps[index]
        recon = model(kspace * mask, mask, coil_maps=maps)
        loss = (magnitude(recon, data.target) - data.target[index]).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model.eval()
