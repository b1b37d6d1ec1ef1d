"""The built-in data set: real anatomy (or a phantom) in fastMRI format, available offline.

**The k-space is simulated.** No raw k-space ships with reconguard or with its sources; every
file is synthesised from a magnitude image:

1. Load a 3-D volume (``mni152``, ``colin27`` or ``phantom``) scaled to maximum 1 and cut it into
   square axial, coronal and sagittal slices without empty edges: see
   :mod:`reconguard.data.anatomy` for the sources and the slicing.
2. Multiply by a smooth random phase (a seeded second-order polynomial field spanning about
   ``[-pi, pi]``) and, for ``coils > 1``, by simulated birdcage coil maps (one random array
   rotation per volume); take the centred orthonormal FFT; add complex Gaussian noise whose real
   and imaginary parts each have standard deviation ``noise`` (relative to an image maximum of 1;
   the FFT is orthonormal, so the image-domain noise has the same standard deviation).
3. The target is computed like fastMRI's, from the noisy fully sampled data: ``|ifft2c(kspace)|``
   (single-coil, ``reconstruction_esc``) or its root-sum-of-squares (multi-coil,
   ``reconstruction_rss``). Multi-coil files also store the true ``sensitivity_maps``.

Splits are by position: each orientation is cut into contiguous blocks of ``block`` slices
(a remainder shorter than half a block joins the previous block), and a seeded permutation
assigns blocks to train/val/test, at least one each. Each block is one volume file
``OUT/<split>/<source>_<orientation>_<block>.h5`` (volume-level metrics are over a block), so
neighbouring, nearly identical slices never straddle two splits. All blocks come from one head,
and the three orientations cut through the same anatomy: the splits are disjoint in slices, not
in subjects. ``OUT/dataset.json`` is written last; its presence marks a complete build.
"""

from __future__ import annotations

import importlib
import json
import math
import numbers
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reconguard import __version__
from reconguard.data.anatomy import ORIENTATIONS, SOURCES, load_source, slice_stacks
from reconguard.data.fastmri import PathLike
from reconguard.data.manifest import check_manifest
from reconguard.data.writer import write_volume
from reconguard.errors import ConfigError, DataError
from reconguard.files import atomic_write
from reconguard.physics.coils import rss, simulate_coil_maps
from reconguard.physics.fft import ifft2c
from reconguard.physics.operators import sens_expand

SPLITS = ("train", "val", "test")
MANIFEST = "dataset.json"
BUILDER_VERSION = 1  # bump when the files a given parameter set produces change
_OWN_FILE = re.compile(rf"^({'|'.join(SOURCES)})_({'|'.join(ORIENTATIONS)})_\d+\.h5$")

def _smooth_phase(num: int, size: int, rng: np.random.Generator) -> np.ndarray:
    axis = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    basis = np.stack([np.ones_like(xx), xx, yy, xx**2, xx * yy, yy**2])
    field = np.einsum("sk,khw->shw", rng.standard_normal((num, len(basis))), basis)
    field /= np.abs(field).max(axis=(1, 2), keepdims=True)
    return (math.pi * field).astype(np.float32)


def simulate_acquisition(
    images: np.ndarray, *, coils: int, noise: float, rng: np.random.Generator
) -> dict[str, torch.Tensor | None]:
    """Simulate fully sampled k-space of magnitude images (see the module docstring).

    Args:
        images: Magnitude images, maximum about 1.
        coils: Number of receive coils; 1 means single-coil (no coil maps).
        noise: Standard deviation of the real and of the imaginary part of the k-space noise.
        rng: Source of the phase, coil-array rotation and noise.

    Returns:
        ``kspace``, ``target`` and ``coil_maps`` (``None`` for single-coil).

    Shapes:
        images: ``(S, N, N)``; kspace: ``(S, N, N)`` or ``(S, C, N, N)`` complex64;
        target: ``(S, N, N)`` float32; coil_maps: ``(S, C, N, N)`` complex64
    """
    num, size = images.shape[0], images.shape[-1]
    phase = torch.from_numpy(_smooth_phase(num, size, rng))
    image = torch.polar(torch.from_numpy(images).float(), phase)[:, None]
    maps = None
    rotation = rng.uniform(0, 2 * math.pi)
    if coils > 1:
        maps = simulate_coil_maps(coils, (size, size), rotation=rotation).expand(num, -1, -1, -1)
    kspace = sens_expand(image, maps)
    if noise > 0:
        parts = torch.from_numpy(rng.standard_normal((2, *kspace.shape), dtype=np.float32))
        kspace = kspace + noise * torch.complex(parts[0], parts[1])
    target = rss(ifft2c(kspace))[:, 0]
    kspace = kspace if coils > 1 else kspace[:, 0]
    return {"kspace": kspace, "target": target, "coil_maps": maps}


def _blocks(num: int, block: int) -> list[range]:
    starts = list(range(0, num, block))
    if len(starts) > 1 and num - starts[-1] < block / 2:
        starts.pop()  # a short remainder joins the previous block
    ends = starts[1:] + [num]
    return [range(a, b) for a, b in zip(starts, ends)]


def assign_splits(num_blocks: int, fractions: Sequence[float], *, seed: int) -> list[str]:
    """Assign blocks to train/val/test by a seeded permutation, at least one block each.

    Args:
        num_blocks: Number of blocks (>= 3).
        fractions: Train, val and test fractions (positive, sum 1).
        seed: Seed of the permutation.

    Returns:
        The split of each block.
    """
    if num_blocks < len(SPLITS):
        raise ConfigError(f"only {num_blocks} blocks of slices, need >= 3; use a smaller block")
    counts = [max(1, round(f * num_blocks)) for f in fractions[1:]]
    counts.insert(0, num_blocks - sum(counts))
    if counts[0] < 1:
        raise ConfigError(f"only {num_blocks} blocks, too few for fractions {list(fractions)}")
    order = np.random.default_rng([seed, 1]).permutation(num_blocks)
    labels = np.repeat(np.arange(len(SPLITS)), counts)
    splits = [""] * num_blocks
    for position, block in enumerate(order):
        splits[block] = SPLITS[labels[position]]
    return splits


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _parameters(
    source: str, size: int, coils: int, noise: float, seed: int, block: int, fractions: Any
) -> dict[str, Any]:
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of {list(SOURCES)}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not 0 <= noise < math.inf:
        raise ConfigError(f"noise must be a finite number >= 0, got {noise!r}")
    try:
        fractions = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ConfigError(f"fractions must be three numbers, got {fractions!r}") from None
    if len(fractions) != 3 or not all(0 < f < 1 for f in fractions):
        raise ConfigError(f"fractions must be three numbers in (0, 1) (train, val, test), got {fractions}")
    if abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions):g})")
    return {
        "source": source,
        "size": _check_int("size", size, 16),
        "coils": _check_int("coils", coils, 1),
        "noise": float(noise),
        "seed": _check_int("seed", seed, 0),
        "block": _check_int("block", block, 1),
        "fractions": fractions,
    }


def load_manifest(out_dir: PathLike) -> dict[str, Any] | None:
    """Read ``OUT/dataset.json``; ``None`` if the directory holds no complete build.

    Raises:
        DataError: If the manifest exists but is not readable JSON or does not fit
            :data:`reconguard.data.manifest.SCHEMA` (the message names the field).
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        raise DataError(f"{path}: not a readable JSON manifest; rebuild with overwrite") from None
    return check_manifest(path, manifest)


def _own_files(out: Path, split: str) -> list[Path]:
    return sorted(p for p in (out / split).glob("*.h5") if _OWN_FILE.match(p.name))


def _reuse_or_clear(out: Path, params: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Return the cached manifest if ``out`` holds this very build, else clear our old files."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    manifest = None if overwrite else load_manifest(out)
    if manifest is not None:
        old = {**manifest.get("parameters", {}), "builder": manifest.get("builder_version")}
        if old == {**params, "builder": BUILDER_VERSION}:
            files = {s: (manifest["splits"].get(s) or {}).get("files") for s in SPLITS}
            if all(len(_own_files(out, s)) == files[s] for s in SPLITS):
                return manifest
        else:
            changed = [f"{k}={old.get(k)!r} (asked {v!r})" for k, v in params.items() if old.get(k) != v]
            raise ConfigError(
                f"{out}: already holds a data set built with {', '.join(changed) or 'an older builder'};"
                " pass overwrite (--overwrite) or choose another directory"
            )
    (out / MANIFEST).unlink(missing_ok=True)  # an unmarked directory is never mistaken for a build
    for split in SPLITS:
        for path in _own_files(out, split):
            path.unlink()
    return None


def build_dataset(
    out_dir: PathLike,
    *,
    source: str = "mni152",
    size: int = 128,
    coils: int = 1,
    noise: float = 0.01,
    seed: int = 0,
    block: int = 8,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the built-in data set (simulated k-space, see the module docstring) into ``out_dir``.

    Idempotent: if ``out_dir`` already holds a complete build with the same parameters, nothing
    is written and its manifest is returned. The same parameters always give bit-identical files.

    Args:
        out_dir: Output directory; gets ``train/``, ``val/``, ``test/`` and ``dataset.json``.
        source: ``"mni152"`` (default), ``"colin27"`` or ``"phantom"``.
        size: Side of the square slices (>= 16).
        coils: Receive coils; 1 writes single-coil files, more writes multi-coil files with maps.
        noise: k-space noise standard deviation per real/imaginary part (image maximum is 1).
        seed: Seed of every random choice (phase, coil rotation, noise, split, lesions).
        block: Slices per volume file (contiguous along the slicing axis).
        fractions: Train, val and test shares of the blocks.
        overwrite: Replace a build with other parameters instead of raising.
        progress: Show a progress bar.

    Returns:
        The manifest: parameters, version and per-split file and slice counts.

    Raises:
        ConfigError: On an impossible parameter, or a different build in ``out_dir``.
        DataError: If the source cannot be loaded.
    """
    params = _parameters(source, size, coils, noise, seed, block, fractions)
    out = Path(out_dir)
    cached = _reuse_or_clear(out, params, overwrite)
    if cached is not None:
        return cached
    stacks = slice_stacks(load_source(source, size=size, seed=seed), size)
    blocks = [(o, i, r) for o in ORIENTATIONS for i, r in enumerate(_blocks(len(stacks[o]), block))]
    splits = assign_splits(len(blocks), params["fractions"], seed=seed)
    counts = {s: {"files": 0, "slices": 0} for s in SPLITS}
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    tqdm = importlib.import_module("tqdm").tqdm
    jobs = tqdm(list(zip(blocks, splits)), desc=f"building {source}", unit="file", disable=not progress)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small run slower on a thread pool (and may time-share)
    try:
        for (orientation, index, rows), split in jobs:
            images = stacks[orientation][rows.start : rows.stop]
            _write_block(out / split, params, orientation, index, images)
            counts[split]["files"] += 1
            counts[split]["slices"] += len(rows)
    finally:
        torch.set_num_threads(threads)
    manifest = _manifest(params, stacks, counts)
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_block(
    directory: Path, params: dict[str, Any], orientation: str, index: int, images: np.ndarray
) -> None:
    source, seed = params["source"], params["seed"]
    # one stream per block, so a block's files do not depend on the order blocks are written in
    rng = np.random.default_rng([seed, SOURCES.index(source), ORIENTATIONS.index(orientation), index])
    data = simulate_acquisition(images, coils=params["coils"], noise=params["noise"], rng=rng)
    attrs = {"acquisition": f"simulated_{orientation}", "patient_id": source, "block": index}
    write_volume(directory / f"{source}_{orientation}_{index:03d}.h5", **data, attrs=attrs)


def _manifest(params: dict[str, Any], stacks: dict[str, np.ndarray], counts: dict) -> dict[str, Any]:
    return {
        "name": "reconguard built-in data set",
        "kspace": "simulated from magnitude images (no raw k-space)",
        "source": params["source"],
        "parameters": params,
        "builder_version": BUILDER_VERSION,
        "reconguard_version": __version__,
        "challenge": "multicoil" if params["coils"] > 1 else "singlecoil",
        "shape": [params["size"], params["size"]],
        "coils": params["coils"],
        "orientations": {o: len(stack) for o, stack in stacks.items()},
        "splits": counts,
    }
