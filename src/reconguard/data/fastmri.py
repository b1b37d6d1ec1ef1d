"""fastMRI HDF5 volumes: read them slice by slice as :class:`Sample` batches, write them back.

One file holds one volume, in the layout of the public fastMRI data:

- ``kspace``: complex64 ``(S, H, W)`` (single-coil) or ``(S, C, H, W)`` (multi-coil);
- ``reconstruction_esc`` (single-coil) / ``reconstruction_rss`` (multi-coil): the real target
  ``(S, h, w)``, absent in test data;
- ``mask``: ``(W,)`` sampled phase-encoding lines (test data only);
- ``sensitivity_maps``: true coil maps shaped like ``kspace`` (reconguard extension);
- ``ismrmrd_header``: ISMRMRD XML; ``encoding/reconSpace/matrixSize`` ``x, y`` = ``(h, w)``;
- attributes ``max`` and ``norm`` (of the target volume), ``acquisition``, ``patient_id``.

Phase encoding runs along ``W`` (ISMRMRD ``y``), read-out along ``H`` (``x``). Files without a
target get one computed the fastMRI way: the centre crop (recon size) of the root-sum-of-squares
of ``ifft2c(kspace)``. Malformed files raise :class:`~reconguard.errors.DataError` naming the file.

Before anything is read, the declared size of every dataset is checked against
:class:`~reconguard.data.limits.ReadLimits` and datasets stored in other files (HDF5 external
storage, virtual datasets) are refused unless the user opts in; arrays are then read one slice
at a time.

References:
    Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI",
    arXiv:1811.08839 (layout as read by ``fastmri/data/mri_data.py``).
"""

from __future__ import annotations

import bisect
import os
import xml.etree.ElementTree as etree
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Union

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from reconguard.data.limits import ReadLimits
from reconguard.data.sample import Sample
from reconguard.errors import DataError
from reconguard.physics.coils import rss
from reconguard.physics.fft import ifft2c
from reconguard.physics.operators import center_crop

PathLike = Union[str, os.PathLike]
ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
SINGLECOIL_TARGET = "reconstruction_esc"
MULTICOIL_TARGET = "reconstruction_rss"
MAPS_KEY = "sensitivity_maps"


@dataclass(frozen=True)
class VolumeInfo:
    """What a fastMRI file holds, read from its metadata (no array data is loaded).

    Attributes:
        path: The file.
        num_slices: ``S``.
        num_coils: ``C`` (1 for single-coil files).
        multicoil: Whether ``kspace`` is ``(S, C, H, W)``.
        shape: k-space size ``(H, W)``.
        recon_size: Target size ``(h, w)`` (from the target, else the ISMRMRD header).
        target_key: Dataset holding the target, or ``None`` (test data).
        has_mask: Whether the file stores a sampling mask.
        has_maps: Whether the file stores ``sensitivity_maps``.
        attrs: The file's HDF5 attributes.
    """

    path: Path
    num_slices: int
    num_coils: int
    multicoil: bool
    shape: tuple[int, int]
    recon_size: tuple[int, int]
    target_key: str | None
    has_mask: bool
    has_maps: bool
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def fname(self) -> str:
        """The file name, used as the volume's identifier in samples and metrics."""
        return self.path.name


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        reason = str(err).split("(", 1)[-1].rstrip(")") or "unreadable"
        raise DataError(
            f"{path}: not a readable HDF5 file (corrupt, truncated or not HDF5: {reason})"
        ) from None


def _header_recon_size(path: Path, hf: h5py.File, limits: ReadLimits) -> tuple[int, int] | None:
    if "ismrmrd_header" not in hf:
        return None
    header = hf["ismrmrd_header"]
    if not isinstance(header, h5py.Dataset):
        raise DataError(f"{path}: ismrmrd_header is not a dataset")
    limits.check(path, "ismrmrd_header", header, per_slice=False)
    raw = header[()]
    try:
        root = etree.fromstring(raw.encode() if isinstance(raw, str) else bytes(raw))
        ns = {"m": ISMRMRD_NAMESPACE}
        size = [root.find(f".//m:encoding/m:reconSpace/m:matrixSize/m:{a}", ns) for a in "xy"]
        return int(size[0].text), int(size[1].text)  # type: ignore[union-attr, arg-type]
    except (etree.ParseError, AttributeError, TypeError, ValueError):
        raise DataError(f"{path}: ismrmrd_header lacks a readable reconSpace matrixSize") from None


def _check_kspace(path: Path, hf: h5py.File, limits: ReadLimits) -> h5py.Dataset:
    if not isinstance(hf.get("kspace"), h5py.Dataset):
        raise DataError(f"{path}: no 'kspace' dataset (keys: {sorted(hf.keys())})")
    kspace = hf["kspace"]
    limits.check(path, "kspace", kspace, per_slice=True)
    if kspace.ndim not in (3, 4):
        raise DataError(f"{path}: kspace must be (S, H, W) or (S, C, H, W), got {kspace.shape}")
    if not np.issubdtype(kspace.dtype, np.complexfloating):
        raise DataError(f"{path}: kspace must be complex, got dtype {kspace.dtype}")
    if kspace.size == 0:
        raise DataError(f"{path}: kspace is empty, shape {kspace.shape}")
    return kspace


def _check_target(path: Path, hf: h5py.File, key: str, num_slices: int, limits: ReadLimits) -> tuple[int, int]:
    target = hf[key]
    if not isinstance(target, h5py.Dataset):
        raise DataError(f"{path}: {key} is not a dataset")
    limits.check(path, key, target, per_slice=True)
    if target.ndim != 3 or target.shape[0] != num_slices or target.size == 0:
        raise DataError(
            f"{path}: {key} must be (S, h, w) with S={num_slices} like kspace, got {target.shape}"
        )
    if not np.issubdtype(target.dtype, np.floating):
        raise DataError(f"{path}: {key} must be real floating point, got dtype {target.dtype}")
    return int(target.shape[1]), int(target.shape[2])


def _inspect_open(path: Path, hf: h5py.File, limits: ReadLimits) -> VolumeInfo:
    kspace = _check_kspace(path, hf, limits)
    multicoil = kspace.ndim == 4
    num_slices, height, width = kspace.shape[0], kspace.shape[-2], kspace.shape[-1]
    keys = [SINGLECOIL_TARGET, MULTICOIL_TARGET][:: -1 if multicoil else 1]
    target_key = next((k for k in keys if k in hf), None)
    recon_size = _header_recon_size(path, hf, limits)
    if target_key is not None:
        recon_size = _check_target(path, hf, target_key, num_slices, limits)
    if "mask" in hf:
        if not isinstance(hf["mask"], h5py.Dataset):
            raise DataError(f"{path}: mask is not a dataset")
        if hf["mask"].shape != (width,):
            raise DataError(f"{path}: mask shape {hf['mask'].shape} does not match k-space width {width}")
        limits.check(path, "mask", hf["mask"], per_slice=False)
    maps = hf.get(MAPS_KEY)
    if maps is not None and not isinstance(maps, h5py.Dataset):
        raise DataError(f"{path}: {MAPS_KEY} is not a dataset")
    if maps is not None:
        limits.check(path, MAPS_KEY, maps, per_slice=True)
    if maps is not None and (
        maps.shape != kspace.shape or not np.issubdtype(maps.dtype, np.complexfloating)
    ):
        raise DataError(
            f"{path}: {MAPS_KEY} must be complex of shape {kspace.shape}, "
            f"got {maps.dtype} {maps.shape}"
        )
    return VolumeInfo(
        path=path,
        num_slices=num_slices,
        num_coils=kspace.shape[1] if multicoil else 1,
        multicoil=multicoil,
        shape=(height, width),
        recon_size=recon_size if recon_size and min(recon_size) > 0 else (height, width),
        target_key=target_key,
        has_mask="mask" in hf,
        has_maps=maps is not None,
        attrs=dict(hf.attrs),
    )


def inspect_volume(path: PathLike, limits: ReadLimits | None = None) -> VolumeInfo:
    """Validate a fastMRI file's structure and describe it (array data is not read).

    Args:
        path: An ``.h5`` file.
        limits: Declared-size limits and external-storage policy (default: from the environment,
            :meth:`ReadLimits.from_environment`).

    Returns:
        The file's :class:`VolumeInfo`.

    Raises:
        DataError: If the file is missing, not HDF5, truncated, not in fastMRI layout, declares
            arrays beyond ``limits`` or keeps its data in other files.
    """
    path = Path(path)
    limits = ReadLimits.from_environment() if limits is None else limits
    with _open(path) as hf:
        try:
            return _inspect_open(path, hf, limits)
        except OSError as err:
            raise DataError(f"{path}: corrupt HDF5 metadata ({err})") from None


def _resolve_paths(source: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if root.is_dir():
            paths = sorted(p for p in root.glob("*.h5") if p.is_file())
            if not paths:
                raise DataError(f"{root}: directory contains no .h5 files")
            return paths
        if not root.exists():
            raise DataError(f"{root}: no such file or directory")
        return [root]
    paths = [Path(p) for p in source]
    if not paths:
        raise DataError("no fastMRI files given (empty list)")
    return paths


def list_volumes(source: PathLike | Iterable[PathLike], limits: ReadLimits | None = None) -> list[VolumeInfo]:
    """Describe every volume of a directory (its ``*.h5`` files, sorted), a file or a list of files.

    Args:
        source: Directory, ``.h5`` file, or iterable of files.
        limits: See :func:`inspect_volume`.

    Returns:
        One :class:`VolumeInfo` per file, in order.

    Raises:
        DataError: If the directory is missing or empty, or any file is malformed.
    """
    limits = ReadLimits.from_environment() if limits is None else limits
    return [inspect_volume(p, limits) for p in _resolve_paths(source)]


class _Handles:
    """Per-process LRU cache of read-only files; never pickled nor used across a fork."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._pid = -1
        self._files: OrderedDict[Path, h5py.File] = OrderedDict()

    def get(self, path: Path) -> h5py.File:
        if self._pid != os.getpid():  # forked worker: the parent's handles are not ours to use
            self._files, self._pid = OrderedDict(), os.getpid()
        if path in self._files:
            self._files.move_to_end(path)
            return self._files[path]
        if len(self._files) >= self.capacity:
            self._files.popitem(last=False)[1].close()
        self._files[path] = _open(path)
        return self._files[path]

    def close(self) -> None:
        if self._pid == os.getpid():
            for hf in self._files.values():
                hf.close()
        self._files = OrderedDict()

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"])


def _finite(array: np.ndarray, path: Path, what: str, index: int) -> np.ndarray:
    if not np.isfinite(array).all():
        raise DataError(f"{path}: {what} of slice {index} contains NaN or inf values")
    return array


class SliceDataset(Dataset):
    """Slices of fastMRI volumes, each as a :class:`Sample` of batch size 1.

    Batch with ``DataLoader(ds, batch_size=8, collate_fn=Sample.collate)``. Files are opened
    lazily in the process that reads them (safe with ``num_workers > 0``). Structure is
    validated up front; NaN/inf values are detected when a slice is read.

    Args:
        source: Directory (its ``*.h5`` files), one file, or a list of files.
        limits: Declared-size limits and external-storage policy (default: from the environment).

    Shapes:
        kspace: ``(1, C, H, W)`` complex64 (``C = 1`` for single-coil files)
        target: ``(1, 1, h, w)`` float32
        max_value: ``(1,)`` float32 (attribute ``max``, else the target's volume maximum)
        coil_maps: ``(1, C, H, W)`` complex64 or ``None``
        mask: ``(1, 1, 1, W)`` bool or ``None``
    """

    def __init__(self, source: PathLike | Iterable[PathLike], *, limits: ReadLimits | None = None):
        self.volumes = list_volumes(source, limits)
        self._offsets = np.cumsum([0] + [v.num_slices for v in self.volumes]).tolist()
        self._handles = _Handles()
        self._max_cache: dict[Path, float] = {}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[VolumeInfo, int]:
        """Map a data-set index to ``(volume, slice index)``."""
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices")
        index %= len(self)
        vol = bisect.bisect_right(self._offsets, index) - 1
        return self.volumes[vol], index - self._offsets[vol]

    def __getitem__(self, index: int) -> Sample:
        info, slice_idx = self.locate(index)
        try:
            return self._read(info, slice_idx)
        except OSError as err:
            raise DataError(f"{info.path}: cannot read slice {slice_idx} ({err})") from None

    def _read(self, info: VolumeInfo, i: int) -> Sample:
        hf = self._handles.get(info.path)
        kspace, target = self._kspace_target(info, i)
        maps = mask = None
        if info.has_maps:
            maps = _finite(hf[MAPS_KEY][i], info.path, MAPS_KEY, i).astype(np.complex64)
            maps = torch.from_numpy(maps).reshape(kspace.shape)
        if info.has_mask:
            mask = torch.from_numpy(np.asarray(hf["mask"][()]) != 0).reshape(1, 1, 1, -1)
        max_value = torch.tensor([self._volume_max(info)], dtype=torch.float32)
        return Sample(kspace, target, max_value, maps, mask, (info.fname,), (i,))

    def _kspace_target(self, info: VolumeInfo, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        hf = self._handles.get(info.path)
        kspace = _finite(hf["kspace"][i], info.path, "kspace", i).astype(np.complex64)
        kspace = torch.from_numpy(kspace).reshape(1, info.num_coils, *info.shape)
        if info.target_key is None:  # test data: fastMRI's zero-filled RSS, cropped
            crop = [min(r, s) for r, s in zip(info.recon_size, info.shape)]
            return kspace, center_crop(rss(ifft2c(kspace)), crop).float().contiguous()
        target = _finite(hf[info.target_key][i], info.path, info.target_key, i)
        return kspace, torch.from_numpy(target.astype(np.float32))[None, None]

    def _volume_max(self, info: VolumeInfo) -> float:
        if "max" in info.attrs:
            return float(info.attrs["max"])
        if info.path not in self._max_cache:
            if info.target_key is not None:  # slice by slice: memory stays within the slice limit
                target = self._handles.get(info.path)[info.target_key]
                value = max(float(np.max(target[s])) for s in range(info.num_slices))
            else:
                slices = range(info.num_slices)
                value = max(float(self._kspace_target(info, s)[1].max()) for s in slices)
            self._max_cache[info.path] = value
        return self._max_cache[info.path]

    def slices_of(self, fname: str) -> range:
        """Data-set indices of every slice of the volume named ``fname``."""
        for vol, info in enumerate(self.volumes):
            if info.fname == fname:
                return range(self._offsets[vol], self._offsets[vol + 1])
        raise KeyError(f"no volume named {fname!r}")

    def iter_volumes(self) -> Iterator[tuple[VolumeInfo, Sample]]:
        """Yield each volume with all its slices batched (for volume-level metrics).

        Shapes:
            sample: batch ``S`` (the volume's slices, in order)
        """
        for vol, info in enumerate(self.volumes):
            slices = [self[i] for i in range(self._offsets[vol], self._offsets[vol + 1])]
            yield info, Sample.collate(slices)

    def close(self) -> None:
        """Close the files this process has open (they reopen on the next read)."""
        self._handles.close()


def read_volume(path: PathLike) -> Sample:
    """Read every slice of one fastMRI file as one :class:`Sample` (batch = slices)."""
    dataset = SliceDataset([path])
    try:
        return next(dataset.iter_volumes())[1]
    finally:
        dataset.close()
