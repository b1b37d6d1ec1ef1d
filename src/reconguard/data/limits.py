"""What an HDF5 file may ask of the reader: declared-size limits and external storage.

An HDF5 dataset *declares* its shape in a few bytes; a 1 kB file can claim ``2 x 100000 x 100000``
complex64 values (160 GB). Before any array is read, every dataset the reader touches is checked:

- one slice (``kspace[i]``, ``target[i]``, ``sensitivity_maps[i]``, or any other dataset read
  whole) may declare at most ``max_slice_bytes`` (default 1 GiB;
  ``RECONGUARD_HDF5_MAX_SLICE_MB``), and a whole dataset at most ``max_volume_bytes`` (default
  64 GiB; ``RECONGUARD_HDF5_MAX_VOLUME_GB``). 1 GiB is one slice of 32 coils x 2048 x 2048
  complex64 values, far above any clinical 2-D acquisition;
- a dataset whose values live in *another* file -- HDF5 external storage (raw binary files named
  inside the HDF5 file) or a virtual dataset (mapped from other HDF5 files) -- is refused, naming
  that file, unless the user opts in with ``RECONGUARD_HDF5_ALLOW_EXTERNAL=1``: a data file
  handed to reconguard should not make it read arbitrary other files.

Slices are then read one at a time (:class:`~reconguard.data.SliceDataset`), so memory is
bounded by the slice limit, not by the file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py

from reconguard.errors import ConfigError, DataError

SLICE_MB_VARIABLE = "RECONGUARD_HDF5_MAX_SLICE_MB"
VOLUME_GB_VARIABLE = "RECONGUARD_HDF5_MAX_VOLUME_GB"
EXTERNAL_VARIABLE = "RECONGUARD_HDF5_ALLOW_EXTERNAL"


@dataclass(frozen=True)
class ReadLimits:
    """Limits on what the datasets of an HDF5 file may declare.

    Attributes:
        max_slice_bytes: Largest slice (first axis dropped) of a per-slice dataset, or largest
            dataset read whole.
        max_volume_bytes: Largest dataset.
        allow_external: Read datasets whose values live in other files.
    """

    max_slice_bytes: int = 1 << 30
    max_volume_bytes: int = 64 << 30
    allow_external: bool = False

    @classmethod
    def from_environment(cls) -> ReadLimits:
        """The defaults, overridden by the ``RECONGUARD_HDF5_*`` environment variables."""
        default = cls()
        return cls(
            max_slice_bytes=_size(SLICE_MB_VARIABLE, default.max_slice_bytes, 1 << 20),
            max_volume_bytes=_size(VOLUME_GB_VARIABLE, default.max_volume_bytes, 1 << 30),
            allow_external=_flag(EXTERNAL_VARIABLE),
        )

    def check(self, path: Path, name: str, dataset: h5py.Dataset, *, per_slice: bool) -> None:
        """Raise :class:`DataError` if ``dataset`` is stored elsewhere or declares too much.

        Args:
            path: The file (for the message).
            name: The dataset's name in the file.
            dataset: The open dataset (only its metadata is read).
            per_slice: Whether it is read one slice (first index) at a time.
        """
        if not self.allow_external:
            others = external_files(dataset)
            if others:
                raise DataError(
                    f"{path}: dataset '{name}' keeps its data in another file ({', '.join(others)}); "
                    f"refused -- set {EXTERNAL_VARIABLE}=1 to read it"
                )
        itemsize = dataset.dtype.itemsize
        total = math.prod(dataset.shape or ()) * itemsize
        piece = math.prod(dataset.shape[1:]) * itemsize if per_slice and dataset.shape else total
        if piece > self.max_slice_bytes:
            what = "one slice of" if per_slice else "dataset"
            raise DataError(
                f"{path}: {what} '{name}' declares {_human(piece)} (shape {dataset.shape}), above the limit "
                f"of {_human(self.max_slice_bytes)}; raise {SLICE_MB_VARIABLE} if the file is genuine"
            )
        if total > self.max_volume_bytes:
            raise DataError(
                f"{path}: dataset '{name}' declares {_human(total)} (shape {dataset.shape}), above the limit "
                f"of {_human(self.max_volume_bytes)}; raise {VOLUME_GB_VARIABLE} if the file is genuine"
            )


def external_files(dataset: h5py.Dataset) -> list[str]:
    """Files other than its own that ``dataset`` reads its values from (external or virtual)."""
    files = [str(entry[0]) for entry in dataset.external or ()]
    if dataset.is_virtual:
        files += [str(source.file_name) for source in dataset.virtual_sources()]
    return sorted(dict.fromkeys(files))


def _size(variable: str, default: int, unit: int) -> int:
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{variable}={text!r}: expected a positive number")
    return int(value * unit)


def _flag(variable: str) -> bool:
    text = os.environ.get(variable, "").strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{variable}={text!r}: expected 1 or 0")


def _human(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"
