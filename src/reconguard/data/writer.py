"""Write volumes in the fastMRI HDF5 layout (see :mod:`reconguard.data.fastmri` for the layout).

fastMRI's own ``SliceDataset`` reads what :func:`write_volume` writes (tested). Files are written
to a temporary name in the destination directory and renamed, so a crash never leaves half a file.

References:
    Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI",
    arXiv:1811.08839.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import torch

from reconguard.data.fastmri import (
    ISMRMRD_NAMESPACE,
    MAPS_KEY,
    MULTICOIL_TARGET,
    SINGLECOIL_TARGET,
    PathLike,
    VolumeInfo,
)
from reconguard.data.sample import Sample
from reconguard.errors import DataError
from reconguard.files import atomic_path


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().resolve_conj().numpy()
    return np.asarray(value)


def _check_array(path: Path, name: str, array: np.ndarray, *, complex_: bool, ranks: tuple) -> None:
    if np.iscomplexobj(array) != complex_ or array.ndim not in ranks or array.size == 0:
        kind = "complex" if complex_ else "real"
        raise DataError(
            f"{path}: {name} must be non-empty {kind} with rank {' or '.join(map(str, ranks))}, "
            f"got {array.dtype} {array.shape}"
        )
    if not np.isfinite(array).all():
        raise DataError(f"{path}: {name} contains NaN or inf values")


def _check_write(
    path: Path, kspace: np.ndarray, target: np.ndarray | None, maps: np.ndarray | None
) -> None:
    _check_array(path, "kspace", kspace, complex_=True, ranks=(3, 4))
    if target is not None:
        _check_array(path, "target", target, complex_=False, ranks=(3,))
        if target.shape[0] != kspace.shape[0]:
            raise DataError(f"{path}: target has {target.shape[0]} slices, kspace {len(kspace)}")
    if maps is not None:
        _check_array(path, "coil_maps", maps, complex_=True, ranks=(kspace.ndim,))
        if maps.shape != kspace.shape:
            raise DataError(f"{path}: coil_maps shape {maps.shape} is not kspace's {kspace.shape}")
    if not path.parent.is_dir():
        raise DataError(f"{path}: directory {path.parent} does not exist")


def ismrmrd_header(shape: tuple[int, int], recon_size: tuple[int, int]) -> bytes:
    """Minimal ISMRMRD XML header holding the fields fastMRI's loader reads.

    Args:
        shape: k-space size ``(H, W)`` (encodedSpace ``x``, ``y``).
        recon_size: Target size ``(h, w)`` (reconSpace ``x``, ``y``).

    Returns:
        UTF-8 encoded XML.
    """

    def matrix(size: tuple[int, int]) -> str:
        return f"<matrixSize><x>{size[0]}</x><y>{size[1]}</y><z>1</z></matrixSize>"

    width = shape[1]
    limits = f"<minimum>0</minimum><maximum>{width - 1}</maximum><center>{width // 2}</center>"
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}"><encoding>'
        f"<encodedSpace>{matrix(shape)}</encodedSpace><reconSpace>{matrix(recon_size)}</reconSpace>"
        "<encodingLimits><kspace_encoding_step_1>"
        f"{limits}</kspace_encoding_step_1></encodingLimits>"
        "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>\n"
    ).encode()


def _write_h5(tmp: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
    with h5py.File(tmp, "w") as hf:
        for key, array in arrays.items():
            hf.create_dataset(key, data=array)
        for key, value in attrs.items():
            try:
                hf.attrs[key] = value
            except (TypeError, ValueError):
                raise DataError(f"attribute {key!r}={value!r} is not a string or number") from None


def write_volume(
    path: PathLike,
    *,
    kspace: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor | None,
    coil_maps: np.ndarray | torch.Tensor | None = None,
    mask: np.ndarray | torch.Tensor | None = None,
    recon_size: tuple[int, int] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write one volume in exactly the fastMRI layout, atomically (temp file, then rename).

    Single-coil k-space gets ``reconstruction_esc``, multi-coil ``reconstruction_rss``.
    Attributes ``max`` and ``norm`` default to the target's volume maximum and norm,
    ``acquisition`` to ``"unknown"``, ``patient_id`` to the file stem; ``attrs`` overrides them.

    Args:
        path: Destination ``.h5`` file (its directory must exist).
        kspace: Complex k-space.
        target: Real reference images, or ``None`` for test-style files.
        coil_maps: Coil sensitivities, stored as ``sensitivity_maps``.
        mask: Sampled phase-encoding lines (test-style files), ``W`` elements.
        recon_size: Header reconSpace size; defaults to the target size, else ``(H, W)``.
        attrs: Extra or overriding HDF5 attributes (string or number values).

    Returns:
        The written path.

    Shapes:
        kspace: ``(S, H, W)`` or ``(S, C, H, W)``; target: ``(S, h, w)``; coil_maps: like kspace.
    """
    path = Path(path)
    kspace = _numpy(kspace)
    arrays: dict[str, np.ndarray] = {"kspace": kspace.astype(np.complex64)}
    target = None if target is None else _numpy(target)
    maps = None if coil_maps is None else _numpy(coil_maps)
    _check_write(path, kspace, target, maps)
    meta: dict[str, Any] = {"acquisition": "unknown", "patient_id": path.stem}
    if target is not None:
        key = MULTICOIL_TARGET if kspace.ndim == 4 else SINGLECOIL_TARGET
        arrays[key] = target.astype(np.float32)
        meta.update(max=float(target.max()), norm=float(np.linalg.norm(target)))
    if maps is not None:
        arrays[MAPS_KEY] = maps.astype(np.complex64)
    shape = (int(kspace.shape[-2]), int(kspace.shape[-1]))
    if mask is not None:
        mask = _numpy(mask)
        if mask.size != kspace.shape[-1]:
            raise DataError(f"{path}: mask has {mask.size} entries, k-space width {shape[1]}")
        arrays["mask"] = mask.reshape(-1) != 0
    if recon_size is None:
        recon_size = shape if target is None else (int(target.shape[1]), int(target.shape[2]))
    arrays["ismrmrd_header"] = np.bytes_(ismrmrd_header(shape, tuple(recon_size)))
    meta.update(attrs or {})
    with atomic_path(path) as tmp:
        _write_h5(tmp, arrays, meta)
    return path


class VolumeWriter:
    """Write slices derived from a data set (e.g. adversarial k-space) back as fastMRI volumes.

    Slices arrive in volume order (as a ``SliceDataset`` yields them); a volume is written as soon
    as a slice of another volume arrives, and the rest on :meth:`flush`. Each file keeps the source
    volume's name, header size and attributes (``norm`` excepted: it is recomputed for the slices
    written), records the source slice indices in the ``slices`` attribute and adds ``attrs``.

    Args:
        directory: Output directory (created).
        volumes: The source volumes by file name (``SliceDataset.volumes``).
        attrs: Extra attributes for every file.
    """

    def __init__(self, directory: Path, volumes: list[VolumeInfo], attrs: Mapping[str, Any]):
        self.directory, self.attrs = Path(directory), dict(attrs)
        self.infos = {info.fname: info for info in volumes}
        self.parts: dict[str, list[Sample]] = {}
        self.directory.mkdir(parents=True, exist_ok=True)
        self.written = 0

    def add(self, batch: Sample) -> None:
        """Queue a batch; ``batch.mask`` must hold the mask each slice was acquired with."""
        for single in batch.to("cpu").split():
            self.parts.setdefault(single.fname[0], []).append(single)
        for name in [n for n in self.parts if n != batch.fname[-1]]:
            self._write(name, self.parts.pop(name))

    def flush(self) -> None:
        """Write every volume still queued."""
        for name in list(self.parts):
            self._write(name, self.parts.pop(name))

    def _write(self, name: str, slices: list[Sample]) -> None:
        info = self.infos[name]
        volume = Sample.collate(sorted(slices, key=lambda s: s.slice_idx))
        mask = volume.mask
        line_mask = mask is not None and mask.shape[-2] == 1 and bool((mask == mask[:1]).all())
        attrs = {k: v for k, v in info.attrs.items() if k != "norm"}
        attrs.update(self.attrs)
        attrs.update(max=float(volume.max_value[0]), source_file=str(info.path))
        attrs["slices"] = ",".join(map(str, volume.slice_idx))
        if mask is not None and not line_mask:
            attrs["mask_note"] = "2-D mask not storable in fastMRI format; k-space is zero where not acquired"
        write_volume(
            self.directory / name,
            kspace=volume.kspace if info.multicoil else volume.kspace[:, 0],
            target=volume.target[:, 0] if info.target_key else None,
            coil_maps=volume.coil_maps,
            mask=mask[0].reshape(-1) if line_mask else None,
            recon_size=info.recon_size,
            attrs=attrs,
        )
        self.written += 1
