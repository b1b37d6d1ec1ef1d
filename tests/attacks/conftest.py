"""Tiny batches and models for attack tests."""

from __future__ import annotations

import pytest
import torch

from reconguard.models import build
from reconguard.physics import RandomMask, fft2c, simulate_coil_maps
from reconguard.physics.coils import rss
from reconguard.physics.fft import ifft2c


def make_batch(coils: int = 1, size: int = 32, batch: int = 2, seed: int = 0):
    """A smooth complex object, its k-space, a 4x mask; returns a dict of tensors."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for _ in range(batch):
        cx, cy = (torch.rand(2, generator=gen) - 0.5) * 0.4
        blob = ((xx - cx) ** 2 / 0.5 + (yy - cy) ** 2 / 0.35 < 1).float() * 0.7
        blob = blob + 0.3 * torch.exp(-((xx - cx) ** 2 + (yy + 0.2) ** 2) / 0.02)
        images.append(torch.polar(blob, 0.5 * xx + 0.3 * yy))
    image = torch.stack(images)[:, None]
    maps = simulate_coil_maps(coils, (size, size)).expand(batch, coils, size, size) if coils > 1 else None
    kspace = fft2c(image if maps is None else image * maps)
    mask = RandomMask(acceleration=4, center_fraction=0.16)((1, coils, size, size), seed=seed).expand(batch, 1, 1, size)
    target = rss(ifft2c(kspace)) if coils > 1 else image.abs()
    return {
        "masked_kspace": kspace * mask,
        "mask": mask,
        "target": target.float(),
        "coil_maps": maps,
        "max_value": target.flatten(1).amax(dim=1).float(),
    }


@pytest.fixture
def single():
    return make_batch(coils=1)


@pytest.fixture
def multi():
    return make_batch(coils=3)


@pytest.fixture
def tiny_unet():
    torch.manual_seed(0)
    return build("unet", chans=4, num_pool_layers=2)
