"""fastMRI HDF5 I/O: round trips (ours and fastMRI's loader), batching, and every malformed file."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reconguard.data import Sample, SliceDataset, inspect_volume, list_volumes, read_volume, write_volume
from reconguard.errors import DataError
from reconguard.physics import ifft2c, rss
from reconguard.physics.operators import center_crop
from tests.data.conftest import synthetic_volume


@pytest.mark.parametrize("coils", [1, 4])
def test_round_trip_through_our_reader(make_volume, gen, coils):
    path = make_volume(coils=coils, slices=3, attrs={"acquisition": "CORPD_FBK"})
    with h5py.File(path) as hf:
        kspace, target = hf["kspace"][()], hf["reconstruction_rss" if coils > 1 else "reconstruction_esc"][()]
        assert kspace.dtype == np.complex64 and kspace.ndim == (4 if coils > 1 else 3)
        assert ("sensitivity_maps" in hf) == (coils > 1)
        assert hf.attrs["acquisition"] == "CORPD_FBK" and hf.attrs["patient_id"] == "vol"
        assert hf.attrs["max"] == pytest.approx(float(target.max()))
        assert hf.attrs["norm"] == pytest.approx(float(np.linalg.norm(target)), rel=1e-5)
    dataset = SliceDataset(path.parent)
    assert len(dataset) == 3
    sample = dataset[1]
    assert sample.kspace.shape == (1, coils, 20, 16) and sample.kspace.dtype == torch.complex64
    assert sample.target.shape == (1, 1, 16, 14) and sample.target.dtype == torch.float32
    assert sample.max_value.shape == (1,) and sample.max_value.dtype == torch.float32
    assert sample.fname == ("vol.h5",) and sample.slice_idx == (1,)
    assert sample.mask is None
    assert (sample.coil_maps is not None) == (coils > 1)
    torch.testing.assert_close(sample.kspace.reshape(kspace[1].shape), torch.from_numpy(kspace[1]))
    torch.testing.assert_close(sample.target[0, 0], torch.from_numpy(target[1]))
    torch.testing.assert_close(sample.max_value, torch.tensor([float(target.max())]))


@pytest.mark.parametrize("coils", [1, 3])
def test_fastmri_slice_dataset_reads_our_files(make_volume, tmp_path, coils):
    pytest.importorskip("runstats")
    fastmri_data = pytest.importorskip("fastmri.data")
    for i in range(2):
        make_volume(f"v{i}.h5", subdir="split", coils=coils, slices=2 + i)
    challenge = "multicoil" if coils > 1 else "singlecoil"
    theirs = fastmri_data.SliceDataset(tmp_path / "split", challenge=challenge, use_dataset_cache=False)
    ours = SliceDataset(tmp_path / "split")
    assert len(theirs) == len(ours) == 5
    for i in range(len(ours)):
        kspace, mask, target, attrs, fname, slice_idx = theirs[i]
        sample = ours[i]
        assert mask is None and (fname, slice_idx) == (sample.fname[0], sample.slice_idx[0])
        np.testing.assert_array_equal(kspace, sample.kspace.reshape(kspace.shape).numpy())
        np.testing.assert_array_equal(target, sample.target[0, 0].numpy())
        assert attrs["recon_size"] == (*sample.target.shape[-2:], 1)
        assert attrs["encoding_size"] == (*sample.kspace.shape[-2:], 1)
        assert (attrs["padding_left"], attrs["padding_right"]) == (0, sample.kspace.shape[-1])
        assert attrs["max"] == pytest.approx(float(sample.max_value))


def test_dataloader_batches_and_workers(make_volume, tmp_path):
    for i in range(3):
        make_volume(f"v{i}.h5", subdir="d", coils=2, slices=4)
    dataset = SliceDataset(tmp_path / "d")
    dataset[0]  # opens a handle in the parent; workers must not reuse it
    batches = list(DataLoader(dataset, batch_size=5, collate_fn=Sample.collate, num_workers=2))
    assert [len(b) for b in batches] == [5, 5, 2]
    first = batches[0]
    assert first.kspace.shape == (5, 2, 20, 16) and first.coil_maps.shape == (5, 2, 20, 16)
    assert first.fname == ("v0.h5",) * 4 + ("v1.h5",) and first.slice_idx == (0, 1, 2, 3, 0)
    clone = pickle.loads(pickle.dumps(dataset))  # spawn-style workers pickle the data set
    torch.testing.assert_close(clone[7].kspace, dataset[7].kspace)
    dataset.close()


def test_volumes_are_listed_and_grouped(make_volume, tmp_path):
    for i, slices in enumerate((2, 5)):
        make_volume(f"v{i}.h5", subdir="d", slices=slices)
    infos = list_volumes(tmp_path / "d")
    assert [(v.fname, v.num_slices, v.num_coils, v.shape, v.recon_size) for v in infos] == [
        ("v0.h5", 2, 1, (20, 16), (16, 14)),
        ("v1.h5", 5, 1, (20, 16), (16, 14)),
    ]
    dataset = SliceDataset(tmp_path / "d")
    assert dataset.slices_of("v1.h5") == range(2, 7)
    grouped = {info.fname: sample for info, sample in dataset.iter_volumes()}
    assert grouped["v1.h5"].slice_idx == (0, 1, 2, 3, 4) and set(grouped["v1.h5"].fname) == {"v1.h5"}
    torch.testing.assert_close(read_volume(tmp_path / "d" / "v1.h5").target, grouped["v1.h5"].target)
    assert dataset.locate(-1) == (infos[1], 4)
    with pytest.raises(IndexError):
        dataset[7]


def test_test_style_file_gets_fastmri_target_and_mask(tmp_path, gen):
    arrays = synthetic_volume(gen, slices=3, coils=2)
    mask = np.zeros(16, dtype=np.float32)
    mask[::3] = 1
    path = write_volume(
        tmp_path / "test.h5", kspace=arrays["kspace"], target=None, mask=mask, recon_size=(12, 12)
    )
    assert inspect_volume(path).target_key is None
    sample = read_volume(path)
    expected = center_crop(rss(ifft2c(torch.from_numpy(arrays["kspace"]))), (12, 12))
    torch.testing.assert_close(sample.target, expected)
    torch.testing.assert_close(sample.max_value, expected.amax().expand(3))
    assert sample.mask.shape == (3, 1, 1, 16) and sample.mask.dtype == torch.bool
    assert sample.mask[0, 0, 0].tolist() == (mask != 0).tolist()


def test_recon_size_larger_than_kspace_is_clipped(tmp_path, gen):
    arrays = synthetic_volume(gen, slices=1)
    path = write_volume(tmp_path / "t.h5", kspace=arrays["kspace"], target=None, recon_size=(64, 8))
    assert read_volume(path).target.shape == (1, 1, 20, 8)


def test_writes_are_atomic_and_deterministic(make_volume, tmp_path, gen):
    first = make_volume("a.h5")
    with h5py.File(first) as hf:
        arrays = {"kspace": hf["kspace"][()], "target": hf["reconstruction_esc"][()]}
    second = write_volume(tmp_path / "b.h5", **arrays, attrs={"patient_id": "a"})
    assert first.read_bytes() == second.read_bytes()
    with pytest.raises(DataError, match="not a string or number"):
        write_volume(tmp_path / "c.h5", **arrays, attrs={"bad": None})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5"]  # no temp file left


def _bad_write_cases(arrays: dict) -> dict:
    kspace, target = arrays["kspace"], arrays["target"]
    nan = kspace.copy()
    nan[1, 0, 3, 3] = np.nan
    return {
        "real kspace": ({**arrays, "kspace": kspace.real}, "must be non-empty complex"),
        "rank": ({**arrays, "kspace": kspace[0, 0]}, "rank 3 or 4"),
        "empty": ({**arrays, "kspace": kspace[:0], "target": target[:0]}, "non-empty"),
        "nan": ({**arrays, "kspace": nan}, "NaN or inf"),
        "slices": ({**arrays, "target": target[:2]}, "target has 2 slices"),
        "complex target": ({**arrays, "target": target + 0j}, "target must be non-empty real"),
        "maps": ({**arrays, "coil_maps": kspace[:, :2]}, "coil_maps"),
        "mask": ({**arrays, "mask": np.ones(5)}, "mask has 5 entries"),
    }


BAD_WRITES = ["real kspace", "rank", "empty", "nan", "slices", "complex target", "maps", "mask"]


@pytest.mark.parametrize("case", BAD_WRITES)
def test_write_rejects_bad_arrays(tmp_path, gen, case):
    arrays = synthetic_volume(gen, slices=3, coils=3)
    bad, message = _bad_write_cases(arrays)[case]
    with pytest.raises(DataError, match=message) as err:
        write_volume(tmp_path / "x.h5", **bad)
    assert "x.h5" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="does not exist"):
        write_volume(tmp_path / "missing" / "x.h5", **arrays)


def _raw(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as hf:
        for key, value in datasets.items():
            hf.create_dataset(key, data=value)
    return path


KSPACE = np.ones((2, 8, 6), dtype=np.complex64)
MALFORMED = {
    "no kspace": ({"reconstruction_esc": np.ones((2, 8, 6), np.float32)}, "no 'kspace' dataset"),
    "rank 2": ({"kspace": KSPACE[0]}, r"must be \(S, H, W\) or \(S, C, H, W\)"),
    "rank 5": ({"kspace": KSPACE[None, None]}, r"must be \(S, H, W\) or \(S, C, H, W\)"),
    "real": ({"kspace": KSPACE.real}, "must be complex, got dtype float32"),
    "empty": ({"kspace": KSPACE[:0]}, "kspace is empty"),
    "mask": ({"kspace": KSPACE, "mask": np.ones(5, bool)}, "mask shape .* k-space width 6"),
    "target slices": (
        {"kspace": KSPACE, "reconstruction_esc": np.ones((3, 8, 6), np.float32)},
        r"reconstruction_esc must be \(S, h, w\) with S=2",
    ),
    "target rank": (
        {"kspace": KSPACE, "reconstruction_esc": np.ones((2, 8), np.float32)},
        r"reconstruction_esc must be \(S, h, w\)",
    ),
    "complex target": (
        {"kspace": KSPACE, "reconstruction_esc": KSPACE},
        "must be real floating point",
    ),
    "maps": (
        {"kspace": KSPACE[:, None], "sensitivity_maps": KSPACE[:, None, :4]},
        "sensitivity_maps must be complex of shape",
    ),
    "header": ({"kspace": KSPACE, "ismrmrd_header": np.bytes_(b"<not xml")}, "ismrmrd_header"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_structure_is_one_data_error(tmp_path, case):
    datasets, message = MALFORMED[case]
    path = _raw(tmp_path / "bad.h5", **datasets)
    with pytest.raises(DataError, match=message) as err:
        SliceDataset(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key", ["kspace", "reconstruction_esc", "sensitivity_maps"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_are_caught_per_slice(tmp_path, gen, key, value):
    arrays = synthetic_volume(gen, slices=3, coils=2)
    kspace = arrays["kspace"][:, :1]  # 1 coil, multi-coil layout, so maps are allowed
    datasets = {"kspace": kspace, "reconstruction_esc": arrays["target"], "sensitivity_maps": kspace.copy()}
    datasets[key] = datasets[key].copy()
    datasets[key][2, ..., 0] = value
    dataset = SliceDataset(_raw(tmp_path / "nan.h5", **datasets))
    dataset[0], dataset[1]  # clean slices still read
    with pytest.raises(DataError, match=f"nan.h5: {key} of slice 2 contains NaN or inf"):
        dataset[2]


def test_not_hdf5_and_truncated_files(make_volume, tmp_path):
    text = tmp_path / "x.h5"
    text.write_text("this is not HDF5\n")
    with pytest.raises(DataError, match="x.h5: not a readable HDF5 file"):
        SliceDataset(text)
    good = make_volume("good.h5", subdir="t", slices=4)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="good.h5: not a readable HDF5 file .*truncated"):
        SliceDataset(good)


def test_truncated_data_is_caught_when_read(tmp_path, monkeypatch):
    path = _raw(tmp_path / "v.h5", kspace=KSPACE)
    dataset = SliceDataset(path)

    def broken(*args, **kwargs):
        raise OSError("Can't read data (inflate() failed)")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", broken)
    with pytest.raises(DataError, match=r"v.h5: cannot read slice 0 \(Can't read data"):
        dataset[0]


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such file or directory"):
        SliceDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no data here")
    with pytest.raises(DataError, match="empty: directory contains no .h5 files"):
        SliceDataset(tmp_path / "empty")
    with pytest.raises(DataError, match="empty list"):
        SliceDataset([])
    with pytest.raises(DataError, match="missing.h5: no such file"):
        SliceDataset([tmp_path / "missing.h5"])
