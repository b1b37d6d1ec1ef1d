"""The built-in data set: determinism, positional splits, manifest cache, sources, parameters."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reconguard.data import SPLITS, SliceDataset, anatomy, build_dataset, builtin, list_volumes, load_manifest
from reconguard.errors import ConfigError, DataError
from reconguard.physics import ifft2c, rss

NAME = re.compile(r"^(\w+?)_(axial|coronal|sagittal)_(\d{3})\.h5$")


def _files(out: Path) -> dict[str, list[Path]]:
    return {split: sorted((out / split).glob("*.h5")) for split in SPLITS}


def test_phantom_build_layout_and_manifest(phantom_build):
    out, manifest = phantom_build
    assert load_manifest(out) == manifest == json.loads((out / "dataset.json").read_text())
    assert manifest["parameters"] == {
        "source": "phantom", "size": 32, "coils": 2, "noise": 0.01, "seed": 0, "block": 8,
        "fractions": [0.7, 0.1, 0.2],
    }
    assert manifest["challenge"] == "multicoil" and manifest["shape"] == [32, 32]
    files = _files(out)
    for split in SPLITS:
        counts = manifest["splits"][split]
        assert counts["files"] == len(files[split]) >= 1
        assert counts["slices"] == sum(v.num_slices for v in list_volumes(out / split))
    total = sum(c["slices"] for c in manifest["splits"].values())
    assert total == sum(manifest["orientations"].values())
    sample = SliceDataset(out / "train")[0]
    assert sample.kspace.shape == (1, 2, 32, 32) and sample.coil_maps.shape == (1, 2, 32, 32)
    assert sample.target.shape == (1, 1, 32, 32)
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "test", "train", "val"]


def test_splits_are_disjoint_contiguous_blocks(phantom_build):
    out, manifest = phantom_build
    seen: dict[tuple[str, int], str] = {}
    slices: dict[str, list[int]] = {}
    for split, paths in _files(out).items():
        for path in paths:
            match = NAME.match(path.name)
            assert match and match[1] == "phantom", path.name
            key = (match[2], int(match[3]))
            assert key not in seen, f"{path.name} in {seen.get(key)} and {split}"
            seen[key] = split
            info = list_volumes([path])[0]
            slices.setdefault(match[2], []).append((int(match[3]), info.num_slices))
    for orientation, blocks in slices.items():
        blocks.sort()
        assert [b for b, _ in blocks] == list(range(len(blocks)))  # no block missing
        assert sum(n for _, n in blocks) == manifest["orientations"][orientation]
        assert all(4 <= n < 12 for _, n in blocks)  # 8 per block; a short tail merges (< 8 + 4)


def test_same_seed_gives_identical_files_other_seed_differs(phantom_build, tmp_path):
    out, manifest = phantom_build
    again = build_dataset(tmp_path / "again", source="phantom", size=32, coils=2, progress=False)
    assert again == manifest
    for split, paths in _files(out).items():
        copies = _files(tmp_path / "again")[split]
        assert [p.name for p in paths] == [p.name for p in copies]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(paths, copies))
    build_dataset(tmp_path / "other", source="phantom", size=32, coils=2, seed=1, progress=False)
    ours = {p.name: p for paths in _files(out).values() for p in paths}
    theirs = {p.name: p for paths in _files(tmp_path / "other").values() for p in paths}
    name = "phantom_axial_000.h5"
    assert not torch.equal(SliceDataset(ours[name])[0].kspace, SliceDataset(theirs[name])[0].kspace)
    assert [p.name for p in _files(out)["val"]] != [p.name for p in _files(tmp_path / "other")["val"]]


def test_manifest_cache_and_overwrite(tmp_path):
    out = tmp_path / "set"
    kwargs = dict(source="phantom", size=16, block=4, progress=False)
    manifest = build_dataset(out, **kwargs)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert build_dataset(out, **kwargs) == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps  # nothing rewritten
    with pytest.raises(ConfigError, match=r"set: already holds a data set built with noise=0.01 \(asked 0.5\)"):
        build_dataset(out, **kwargs, noise=0.5)
    rebuilt = build_dataset(out, **kwargs, noise=0.5, overwrite=True)
    assert rebuilt["parameters"]["noise"] == 0.5 and load_manifest(out) == rebuilt
    # an interrupted build (no manifest) is cleaned up and redone, foreign files are kept
    (out / "dataset.json").unlink()
    stale = out / "train" / "phantom_axial_999.h5"
    stale.write_bytes(b"partial")
    foreign = out / "train" / "my_scan.h5"
    foreign.write_bytes(b"not ours")
    assert build_dataset(out, **kwargs) == manifest
    assert not stale.exists() and foreign.exists()


def test_noise_free_simulation_is_exact():
    images = np.random.default_rng(0).random((3, 24, 24)).astype(np.float32)
    single = builtin.simulate_acquisition(images, coils=1, noise=0.0, rng=np.random.default_rng(1))
    assert single["kspace"].shape == (3, 24, 24) and single["coil_maps"] is None
    torch.testing.assert_close(single["target"], torch.from_numpy(images), atol=1e-5, rtol=0)
    phase = ifft2c(single["kspace"]).angle()
    assert float(phase.max() - phase.min()) > 2  # a real phase field, not a constant
    multi = builtin.simulate_acquisition(images, coils=4, noise=0.0, rng=np.random.default_rng(1))
    assert multi["kspace"].shape == (3, 4, 24, 24) and multi["coil_maps"].shape == (3, 4, 24, 24)
    torch.testing.assert_close(multi["target"], torch.from_numpy(images), atol=1e-5, rtol=0)
    coil_images = ifft2c(multi["kspace"])
    combined = (coil_images * multi["coil_maps"].conj()).sum(1)
    torch.testing.assert_close(combined, ifft2c(single["kspace"]), atol=1e-5, rtol=0)
    noisy = builtin.simulate_acquisition(images, coils=1, noise=0.1, rng=np.random.default_rng(1))
    residual = noisy["kspace"] - single["kspace"]
    assert abs(float(residual.real.std()) - 0.1) < 0.01 and abs(float(residual.imag.std()) - 0.1) < 0.01
    torch.testing.assert_close(noisy["target"], rss(ifft2c(noisy["kspace"][:, None]))[:, 0])


def test_mni152_build_at_small_size(tmp_path):
    pytest.importorskip("nilearn")
    manifest = build_dataset(tmp_path, size=32, progress=False)
    assert manifest["source"] == "mni152" and manifest["challenge"] == "singlecoil"
    assert 350 < sum(manifest["orientations"].values()) < 600
    assert all(manifest["splits"][s]["files"] >= 1 for s in SPLITS)
    sample = SliceDataset(tmp_path / "val")[3]
    assert sample.kspace.shape == (1, 1, 32, 32) and sample.target.shape == (1, 1, 32, 32)
    assert 0.3 < float(sample.max_value) < 1.2  # anatomy scaled to max 1, plus noise
    volume = anatomy.load_source("mni152")
    assert volume.shape == (197, 233, 189) and volume.max() == 1 and volume.min() >= 0


def test_slice_stacks_keep_anatomy_and_are_square():
    volume = anatomy.phantom_volume(40, seed=0)
    assert volume.shape == (40, 40, 40) and volume.max() == 1 and volume.min() >= 0
    stacks = anatomy.slice_stacks(np.pad(volume, ((0, 0), (5, 5), (0, 20))), 24)
    for orientation, stack in stacks.items():
        assert stack.shape[1:] == (24, 24) and stack.dtype == np.float32
        area = (stack > 0.05).sum(axis=(1, 2))
        assert area.min() >= anatomy.MIN_ANATOMY * area.max() * 0.9, orientation
        assert len(stack) < 40


def test_assign_splits_gives_every_split_a_block():
    for blocks in (3, 4, 10, 57):
        splits = builtin.assign_splits(blocks, (0.7, 0.1, 0.2), seed=3)
        assert all(splits.count(s) >= 1 for s in SPLITS) and len(splits) == blocks
    assert builtin.assign_splits(20, (0.7, 0.1, 0.2), seed=3) == builtin.assign_splits(20, (0.7, 0.1, 0.2), seed=3)
    assert builtin.assign_splits(20, (0.5, 0.25, 0.25), seed=0).count("train") == 10
    with pytest.raises(ConfigError, match="only 2 blocks"):
        builtin.assign_splits(2, (0.7, 0.1, 0.2), seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"source": "knee"}, "unknown source 'knee'"),
        ({"size": 8}, "size must be an integer >= 16"),
        ({"size": 32.0}, "size must be an integer"),
        ({"coils": 0}, "coils must be an integer >= 1"),
        ({"noise": -0.1}, "noise must be a finite number >= 0"),
        ({"noise": float("nan")}, "noise must be a finite number"),
        ({"noise": float("inf")}, "noise must be a finite number"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"block": 0}, "block must be an integer >= 1"),
        ({"fractions": (0.5, 0.5)}, "three numbers"),
        ({"fractions": (0.8, 0.0, 0.2)}, "three numbers in"),
        ({"fractions": (0.6, 0.1, 0.2)}, "must sum to 1"),
        ({"fractions": "abc"}, "three numbers"),
    ],
)
def test_bad_parameters_raise_config_error(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_dataset(tmp_path / "out", **{"source": "phantom", "size": 16, "progress": False, **kwargs})
    assert load_manifest(tmp_path / "out") is None


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="file: exists and is not a directory"):
        build_dataset(target, source="phantom", size=16, progress=False)


def test_corrupt_manifest(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: not a readable JSON manifest"):
        build_dataset(tmp_path, source="phantom", size=16, block=4, progress=False)
    manifest = build_dataset(tmp_path, source="phantom", size=16, block=4, progress=False, overwrite=True)
    assert load_manifest(tmp_path) == manifest


def test_colin27_missing_and_present(tmp_path, monkeypatch):
    monkeypatch.setattr(anatomy, "COLIN27_PATH", tmp_path / "ch2.nii.gz")
    with pytest.raises(DataError, match="apt-get install mricron-data"):
        build_dataset(tmp_path / "out", source="colin27", size=16, progress=False)
    nib = pytest.importorskip("nibabel")
    volume = np.pad(anatomy.phantom_volume(24) * 80, 4)
    nib.save(nib.Nifti1Image(volume, np.diag([-1.0, 1.0, 1.0, 1.0])), tmp_path / "ch2.nii.gz")
    loaded = anatomy.load_source("colin27")
    np.testing.assert_allclose(loaded, np.flip(volume, 0) / volume.max(), atol=1e-6)  # made RAS
    manifest = build_dataset(tmp_path / "out", source="colin27", size=16, block=4, progress=False)
    assert manifest["source"] == "colin27" and (tmp_path / "out" / "train").is_dir()


def test_missing_anatomy_packages_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nilearn.datasets", None)
    with pytest.raises(DataError, match=r"pip install 'reconguard\[anatomy\]'"):
        build_dataset(tmp_path, progress=False)


def test_importing_data_is_light():
    import subprocess

    code = "import sys, reconguard.data; print([m for m in ('nilearn', 'nibabel', 'scipy') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
