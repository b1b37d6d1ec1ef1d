"""Fixtures for the data tests: small fastMRI files and one tiny built-in build per session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from reconguard.data import build_dataset, write_volume
from reconguard.physics import fft2c, rss, simulate_coil_maps


def synthetic_volume(
    gen: torch.Generator, *, slices: int = 3, coils: int = 1, shape: tuple[int, int] = (20, 16)
) -> dict[str, np.ndarray]:
    """k-space, cropped magnitude target and coil maps of random smooth-ish images."""
    image = torch.rand((slices, 1, *shape), generator=gen) + 0.1
    maps = simulate_coil_maps(coils, shape).expand(slices, -1, -1, -1) if coils > 1 else None
    coil_images = image * maps if maps is not None else image.to(torch.complex64)
    kspace = fft2c(coil_images.to(torch.complex64))
    target = rss(coil_images)[:, 0, 2:-2, 1:-1]  # a centre crop, like fastMRI's 320 x 320
    return {
        "kspace": (kspace if coils > 1 else kspace[:, 0]).numpy(),
        "target": target.numpy(),
        "coil_maps": None if maps is None else maps.numpy(),
    }


@pytest.fixture
def make_volume(tmp_path: Path, gen: torch.Generator) -> Callable[..., Path]:
    """Factory writing a valid fastMRI file under ``tmp_path`` (``subdir/name``)."""

    def make(name: str = "vol.h5", *, subdir: str = "", coils: int = 1, slices: int = 3, **kwargs) -> Path:
        directory = tmp_path / subdir
        directory.mkdir(parents=True, exist_ok=True)
        arrays = synthetic_volume(gen, slices=slices, coils=coils)
        arrays.update(kwargs)
        return write_volume(directory / name, **arrays)

    return make


@pytest.fixture(scope="session")
def phantom_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny built-in data set (phantom, 32 x 32, 2 coils), built once per session."""
    out = tmp_path_factory.mktemp("phantom")
    manifest = build_dataset(out, source="phantom", size=32, coils=2, progress=False)
    return out, manifest
