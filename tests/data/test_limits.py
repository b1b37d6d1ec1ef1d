"""What an HDF5 file may ask of the reader: declared sizes within limits, no data from other files
(unless opted in), slice-by-slice reads; and the schema of dataset.json."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from reconguard.data import SliceDataset, load_manifest
from reconguard.data.limits import ReadLimits
from reconguard.errors import ConfigError, DataError

KSPACE = np.ones((2, 8, 6), dtype=np.complex64)


def _huge(path, shape=(2, 100_000, 100_000), key="kspace"):
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=KSPACE) if key != "kspace" else None
        hf.create_dataset(key, shape=shape, dtype=np.complex64 if key == "kspace" else np.float32,
                          chunks=(1, 1, min(1024, shape[-1])))
    return path


def test_a_huge_declared_shape_is_refused_before_any_read(tmp_path):
    path = _huge(tmp_path / "huge.h5")
    assert path.stat().st_size < 100_000  # 149 GiB declared in a few kB
    with pytest.raises(DataError, match=r"huge.h5: one slice of 'kspace' declares 74.5 GiB .* limit of 1 GiB; raise "
                       r"RECONGUARD_HDF5_MAX_SLICE_MB"):
        SliceDataset(path)


def test_the_volume_limit_and_other_datasets_are_checked_too(tmp_path):
    many = _huge(tmp_path / "many.h5", shape=(200_000, 320, 320))  # 2.4 MiB slices, 153 GiB in all
    with pytest.raises(DataError, match=r"dataset 'kspace' declares 153 GiB .* RECONGUARD_HDF5_MAX_VOLUME_GB"):
        SliceDataset(many)
    target = _huge(tmp_path / "target.h5", shape=(2, 50_000, 50_000), key="reconstruction_esc")
    with pytest.raises(DataError, match=r"one slice of 'reconstruction_esc' declares"):
        SliceDataset(target)


def test_limits_are_overridable(tmp_path, monkeypatch):
    path = tmp_path / "small.h5"
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=np.ones((2, 64, 64), np.complex64))  # 32 KiB per slice
    with pytest.raises(DataError, match="above the limit of 16 KiB"):
        SliceDataset(path, limits=ReadLimits(max_slice_bytes=16 << 10))
    monkeypatch.setenv("RECONGUARD_HDF5_MAX_SLICE_MB", "0.015625")  # 16 KiB
    with pytest.raises(DataError, match="above the limit of 16 KiB"):
        SliceDataset(path)
    monkeypatch.setenv("RECONGUARD_HDF5_MAX_SLICE_MB", "lots")
    with pytest.raises(ConfigError, match="RECONGUARD_HDF5_MAX_SLICE_MB='lots': expected a positive number"):
        SliceDataset(path)


def _external(tmp_path):
    raw = tmp_path / "secret.bin"
    KSPACE.tofile(raw)
    path = tmp_path / "ext.h5"
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", shape=KSPACE.shape, dtype=KSPACE.dtype, external=[(str(raw), 0, KSPACE.nbytes)])
    return path, raw


def test_external_storage_is_refused_naming_the_file_unless_opted_in(tmp_path, monkeypatch):
    path, raw = _external(tmp_path)
    with pytest.raises(DataError, match=rf"ext.h5: dataset 'kspace' keeps its data in another file \({raw}\); "
                       r"refused -- set RECONGUARD_HDF5_ALLOW_EXTERNAL=1"):
        SliceDataset(path)
    monkeypatch.setenv("RECONGUARD_HDF5_ALLOW_EXTERNAL", "1")
    assert complex(SliceDataset(path)[1].kspace[0, 0, 0, 0]) == 1


def test_virtual_datasets_are_refused_too(tmp_path):
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as hf:
        hf.create_dataset("kspace", data=KSPACE)
    layout = h5py.VirtualLayout(shape=KSPACE.shape, dtype=KSPACE.dtype)
    layout[:] = h5py.VirtualSource(str(source), "kspace", shape=KSPACE.shape)
    path = tmp_path / "virtual.h5"
    with h5py.File(path, "w") as hf:
        hf.create_virtual_dataset("kspace", layout)
    with pytest.raises(DataError, match=r"virtual.h5: dataset 'kspace' keeps its data in another file .*source.h5"):
        SliceDataset(path)


def test_the_volume_maximum_is_read_slice_by_slice(tmp_path, monkeypatch):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=KSPACE)
        hf.create_dataset("reconstruction_esc", data=np.arange(96, dtype=np.float32).reshape(2, 8, 6))
    reads = []
    real = h5py.Dataset.__getitem__

    def spy(self, index):
        reads.append(index)
        return real(self, index)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    assert float(SliceDataset(path)[0].max_value) == 95.0
    assert () not in reads and Ellipsis not in reads  # never the whole dataset


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("shape", 5, r"field 'shape': expected a list of 2 integers >= 1, got 5"),
        ("coils", "one", r"field 'coils': expected an integer >= 1, got 'one'"),
        ("splits", {"train": {"files": "x", "slices": 1}}, r"field 'splits.train.files': expected an integer >= 0"),
        ("splits", {"holdout": {"files": 1, "slices": 1}}, r"field 'splits.holdout': expected a key that is one of"),
        ("parameters", {"source": "phantom"}, r"field 'parameters.size': expected it to be present"),
        ("orientations", [1, 2], r"field 'orientations': expected an object"),
    ],
)
def test_dataset_json_is_validated_naming_the_field(tiny_data, tmp_path, field, value, message):
    manifest = json.loads((tiny_data / "dataset.json").read_text())
    assert load_manifest(tiny_data) == manifest
    manifest[field] = value
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=message) as info:
        load_manifest(tmp_path)
    assert "dataset.json" in str(info.value) and "\n" not in str(info.value)
