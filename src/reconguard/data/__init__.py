"""Data: fastMRI HDF5 read/write, the built-in data set, and :class:`Sample` batches.

- :class:`SliceDataset` reads fastMRI files (single- or multi-coil) slice by slice as
  :class:`Sample` objects; :func:`list_volumes` / :meth:`SliceDataset.iter_volumes` group
  slices by volume for volume-level metrics.
- :func:`write_volume` writes one volume in exactly the fastMRI layout (fastMRI's own loader
  reads it).
- :func:`build_dataset` builds the built-in data set: real anatomy (MNI152, Colin 27) or a
  phantom, with SIMULATED k-space.

Importing this package does not import nilearn, nibabel or scipy; the builder does, lazily.
"""

from reconguard.data.anatomy import ORIENTATIONS, SOURCES, load_source, phantom_volume
from reconguard.data.builtin import SPLITS, build_dataset, load_manifest, simulate_acquisition
from reconguard.data.fastmri import (
    SliceDataset,
    VolumeInfo,
    inspect_volume,
    list_volumes,
    read_volume,
)
from reconguard.data.sample import Sample
from reconguard.data.writer import write_volume

__all__ = [
    "ORIENTATIONS",
    "SOURCES",
    "SPLITS",
    "Sample",
    "SliceDataset",
    "VolumeInfo",
    "build_dataset",
    "inspect_volume",
    "list_volumes",
    "load_manifest",
    "load_source",
    "phantom_volume",
    "read_volume",
    "simulate_acquisition",
    "write_volume",
]
