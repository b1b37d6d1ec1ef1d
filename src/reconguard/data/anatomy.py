"""Real anatomy (and a phantom) for the built-in data set, cut into 2-D slices.

- ``mni152``: the ICBM 2009 T1 template inside the nilearn wheel (1 mm, no download);
- ``colin27``: the Colin 27 T1 average from Debian's ``mricron-data``;
- ``phantom``: a 3-D modified Shepp-Logan phantom with small bright and dark lesions (numpy only).

nilearn, nibabel and scipy are imported lazily, inside the functions that need them.

References:
    Fonov et al., "Unbiased average age-appropriate atlases for pediatric studies",
    NeuroImage 2011 (MNI152 ICBM 2009); Holmes et al., "Enhancement of MR images using
    registration for signal averaging", JCAT 1998 (Colin 27); Shepp & Logan, "The Fourier
    reconstruction of a head section", IEEE TNS 1974.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from reconguard.errors import ConfigError, DataError

SOURCES = ("mni152", "colin27", "phantom")
ORIENTATIONS = ("axial", "coronal", "sagittal")
COLIN27_PATH = Path("/usr/share/mricron/templates/ch2.nii.gz")
MIN_ANATOMY = 0.2  # slices whose tissue area is below this fraction of the largest are dropped

# Modified Shepp-Logan ellipsoids (Toft's contrasts): value, semi-axes (a, b, c),
# centre (x, y, z), rotation about z in degrees.
_ELLIPSOIDS = (
    (1.0, (0.69, 0.92, 0.81), (0.0, 0.0, 0.0), 0),
    (-0.8, (0.6624, 0.874, 0.78), (0.0, -0.0184, 0.0), 0),
    (-0.2, (0.11, 0.31, 0.22), (0.22, 0.0, 0.0), -18),
    (-0.2, (0.16, 0.41, 0.28), (-0.22, 0.0, 0.0), 18),
    (0.1, (0.21, 0.25, 0.41), (0.0, 0.35, -0.15), 0),
    (0.1, (0.046, 0.046, 0.05), (0.0, 0.1, 0.25), 0),
    (0.1, (0.046, 0.046, 0.05), (0.0, -0.1, 0.25), 0),
    (0.1, (0.046, 0.023, 0.05), (-0.08, -0.605, 0.0), 0),
    (0.1, (0.023, 0.023, 0.02), (0.0, -0.606, 0.0), 0),
    (0.1, (0.023, 0.046, 0.02), (0.06, -0.605, 0.0), 0),
)


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(
            f"the built-in anatomy needs the Python package '{module.split('.')[0]}'; "
            "install it with: pip install 'reconguard[anatomy]'"
        ) from None


def phantom_volume(size: int, *, seed: int = 0, lesions: int = 8) -> np.ndarray:
    """3-D modified Shepp-Logan phantom with small random lesions.

    Args:
        size: Grid points per axis (the cube ``[-1, 1]^3``).
        seed: Seed of the lesion positions, radii and contrasts.
        lesions: Number of small spherical blobs (half bright, half dark) inside the brain.

    Returns:
        Volume with values in ``[0, 1]``, axes ``(x, y, z)`` (RAS-like).

    Shapes:
        output: ``(size, size, size)`` float32

    References:
        Shepp & Logan, IEEE TNS 1974; Toft, "The Radon transform", PhD thesis, 1996.
    """
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    volume = np.zeros((size, size, size), dtype=np.float32)
    for value, (a, b, c), (x0, y0, z0), angle in _ELLIPSOIDS:
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        xr = (x - x0) * cos + (y - y0) * sin
        yr = -(x - x0) * sin + (y - y0) * cos
        volume += value * (((xr / a) ** 2 + (yr / b) ** 2 + ((z - z0) / c) ** 2) <= 1)
    rng = np.random.default_rng([seed, 7])
    for k in range(lesions):
        centre = rng.uniform(-0.45, 0.45, size=3) * (0.6, 0.8, 0.7)
        radius = rng.uniform(0.03, 0.07)
        contrast = (0.25 if k % 2 == 0 else -0.15) * rng.uniform(0.6, 1.0)
        dist2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
        volume += contrast * np.exp(-dist2 / (2 * radius**2)).astype(np.float32)
    return np.clip(volume, 0, None) / volume.max()


def _load_nifti(image: Any) -> np.ndarray:
    nib = _import("nibabel")
    data = nib.as_closest_canonical(image).get_fdata(dtype=np.float32)
    data = np.clip(np.nan_to_num(data), 0, None)
    if data.ndim != 3 or data.max() <= 0:
        raise DataError(f"anatomy volume has shape {data.shape} and maximum {data.max()}")
    return data / data.max()


def load_source(source: str, *, size: int = 128, seed: int = 0) -> np.ndarray:
    """Load a built-in volume, RAS-oriented, scaled to maximum 1.

    Args:
        source: ``"mni152"``, ``"colin27"`` or ``"phantom"``.
        size: Grid size of the phantom (real anatomy keeps its 1 mm grid).
        seed: Seed of the phantom's lesions.

    Returns:
        The volume, axes ``(x, y, z)``.

    Shapes:
        output: ``(X, Y, Z)`` float32 (``197 x 233 x 189`` for mni152)
    """
    if source == "phantom":
        return phantom_volume(size, seed=seed)
    if source == "mni152":
        datasets = _import("nilearn.datasets")
        return _load_nifti(datasets.load_mni152_template(resolution=1))
    if source == "colin27":
        nib = _import("nibabel")
        if not COLIN27_PATH.is_file():
            raise DataError(
                f"{COLIN27_PATH}: Colin 27 template not found; install it with: "
                "sudo apt-get install mricron-data"
            )
        return _load_nifti(nib.load(COLIN27_PATH))
    raise ConfigError(f"unknown source {source!r}; choose one of {list(SOURCES)}")


def slice_stacks(volume: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Cut a volume into square ``size x size`` slices in each orientation, without empty edges.

    Slices are rotated so that anterior (axial) or superior (coronal, sagittal) is up.

    Args:
        volume: RAS volume with maximum 1.
        size: Output side length.

    Returns:
        ``{orientation: stack}`` with consecutive slices in anatomical order.

    Shapes:
        volume: ``(X, Y, Z)``; each stack: ``(N, size, size)`` float32
    """
    stacks = {}
    for orientation, axis in zip(ORIENTATIONS, (2, 1, 0)):
        stack = np.rot90(np.moveaxis(volume, axis, 0), k=1, axes=(1, 2))
        area = (stack > 0.05).sum(axis=(1, 2))
        keep = np.flatnonzero(area >= MIN_ANATOMY * area.max())
        stack = stack[keep[0] : keep[-1] + 1]
        rows, cols = stack.shape[1:]
        side = max(rows, cols)
        top, left = (side - rows) // 2, (side - cols) // 2
        stack = np.pad(stack, ((0, 0), (top, side - rows - top), (left, side - cols - left)))
        if side != size:
            zoom = _import("scipy.ndimage").zoom
            stack = zoom(stack, (1, size / side, size / side), order=1, grid_mode=False)
            stack = stack[:, :size, :size]
        stacks[orientation] = np.ascontiguousarray(stack, dtype=np.float32)
    return stacks
