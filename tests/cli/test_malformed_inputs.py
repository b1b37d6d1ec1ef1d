"""Malformed input, as a new user or an attacker would give it, to the real command line.

One table: the input (built under the case's own directory), the command, and a fragment of the
expected message. Each case runs as its own `reconguard` subprocess (several at a time) and must
exit with code 2 and print exactly one line, `reconguard X: error: ...`, naming the file or the
option, with no traceback -- and leave every file as it was: nothing written, nothing lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch

KSPACE = np.ones((2, 8, 6), dtype=np.complex64)
AUDIT = """\
output: {root}/out
data: {{path: {data}, split: test, max_slices: 2}}
models:
  zf: {{name: zero_filled}}
attacks:
  pgd-kspace: {{eps: [0.01], steps: 1}}
batch_size: 2
"""


class _Code:
    """Pickled, it would create ``marker`` when loaded: a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _h5(root: Path, name: str = "bad.h5", **datasets) -> Path:
    """A data directory ``root/data/test`` holding one HDF5 file with ``datasets``."""
    directory = root / "data" / "test"
    directory.mkdir(parents=True)
    with h5py.File(directory / name, "w") as hf:
        for key, value in datasets.items():
            hf.create_dataset(key, data=value)
    return root / "data"


def _evaluate(data: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", "zero_filled", "--data", str(data), "--quiet", *extra]


def _huge(root: Path) -> list[str]:
    data = _h5(root, "huge.h5")
    with h5py.File(data / "test" / "huge.h5", "w") as hf:
        hf.create_dataset("kspace", shape=(2, 100_000, 100_000), dtype=np.complex64, chunks=(1, 1, 1024))
    return _evaluate(data)


def _external(root: Path) -> list[str]:
    data = _h5(root, "ext.h5")
    KSPACE.tofile(root / "elsewhere.bin")
    with h5py.File(data / "test" / "ext.h5", "w") as hf:
        hf.create_dataset("kspace", shape=KSPACE.shape, dtype=KSPACE.dtype,
                          external=[(str(root / "elsewhere.bin"), 0, KSPACE.nbytes)])
    return _evaluate(data)


def _copied(tiny: Path, root: Path, name: str) -> Path:
    """``root/data/test`` holding a copy of one tiny-data file, to damage."""
    (root / "data" / "test").mkdir(parents=True)
    source = sorted((tiny / "test").glob("*.h5"))[0]
    return Path(shutil.copy(source, root / "data" / "test" / name))


def _truncated(tiny: Path, root: Path) -> Path:
    """A data directory whose one file is cut short."""
    path = _copied(tiny, root, "cut.h5")
    path.write_bytes(path.read_bytes()[:4096])
    return root / "data"


def _text(root: Path) -> list[str]:
    (root / "data" / "test").mkdir(parents=True)
    (root / "data" / "test" / "notes.h5").write_text("this is not HDF5\n")
    return _evaluate(root / "data")


def _nan(root: Path) -> list[str]:
    kspace = KSPACE.copy()
    kspace[1, 0, 0] = np.nan
    return _evaluate(_h5(root, "nan.h5", kspace=kspace))


def _checkpoint(root: Path, name: str, *, meta: dict | None = None, weights: bytes = b"") -> list[str]:
    (root / f"{name}.json").write_text(json.dumps(meta or {"name": "zero_filled", "config": {}}))
    (root / f"{name}.safetensors").write_bytes(weights)
    return _evaluate(Path("DATA"), "--model", str(root / name))


def _manifest(tiny: Path, root: Path, damage: Callable[[dict], object]) -> list[str]:
    manifest = json.loads((tiny / "dataset.json").read_text())
    text = damage(manifest)
    (root / "dataset.json").write_text(text if isinstance(text, str) else json.dumps(manifest))
    return ["data", "info", str(root)]


def _resume(run: Path, root: Path, damage: Callable[[Path], None]) -> list[str]:
    shutil.copytree(run / "run", root / "run")
    config = json.loads((root / "run" / "config.json").read_text())
    (root / "run" / "config.json").write_text(json.dumps({**config, "out": str(root / "run")}))
    damage(root / "run" / "state.pt")
    return [*json.loads((run / "argv.json").read_text()), "--out", str(root / "run")]


def _audit(root: Path, tiny: Path, old: str = "", new: str = "", data: Path | None = None) -> list[str]:
    text = AUDIT.format(root=root, data=data or tiny)
    assert old in text
    (root / "audit.yaml").write_text(text.replace(old, new, 1))
    return ["audit", str(root / "audit.yaml"), "--quiet", "--no-report"]


def _audit_checkpoint_without_weights(root: Path, tiny: Path) -> list[str]:
    (root / "ck.json").write_text(json.dumps({"name": "unet", "config": {"chans": 2, "num_pool_layers": 1}}))
    return _audit(root, tiny, "{name: zero_filled}", f"{{checkpoint: {root / 'ck'}}}")


def _fastmri_pickle(root: Path, tiny: Path) -> list[str]:
    (root / "evil.pt").write_bytes(pickle.dumps({"state_dict": _Code(root / "pwned")}))
    return _audit(root, tiny, "{name: zero_filled}", f"{{fastmri: {root / 'evil.pt'}, kind: unet}}")


def _sql(path: Path, sql: str) -> None:
    """Run ``sql`` on the database and fold its write-ahead log back in (no -wal file left)."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(sql)
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _report(audit: Path, root: Path, sql: str) -> list[str]:
    shutil.copytree(audit, root / "out")
    _sql(root / "out" / "results.sqlite", sql)
    return ["report", str(root / "out")]


def _foreign_database(root: Path) -> list[str]:
    (root / "out").mkdir()
    _sql(root / "out" / "results.sqlite", "CREATE TABLE patients (name TEXT)")
    return ["report", str(root / "out")]


# name: (build(tiny_data, root, trained_run, audit_dir) -> argv, expected fragment, paths that must not appear)
CASES: dict[str, tuple[Callable[..., list[str]], str, tuple[str, ...]]] = {
    # numeric options: range, type, integer-ness, where they are parsed
    "evaluate --acceleration 0": (lambda t, r, *_: _evaluate(t, "--acceleration", "0"),
                                  "argument --acceleration: expected a finite number >= 1", ()),
    "attack --acceleration 0": (lambda t, r, *_: ["attack", "--model", "zero_filled", "--data", str(t), "--out",
                                                  str(r / "out"), "--acceleration", "0"],
                                "argument --acceleration", ("out",)),
    "train --acceleration 0": (lambda t, r, *_: ["train", "--model", "unet", "--data", str(t), "--out",
                                                 str(r / "run"), "--acceleration", "0"], "argument --acceleration",
                               ("run",)),
    "evaluate --batch-size 0": (lambda t, r, *_: _evaluate(t, "--batch-size", "0"),
                                "argument --batch-size: expected an integer >= 1, got 0", ()),
    "attack --steps 1.5": (lambda t, r, *_: ["attack", "--model", "zero_filled", "--data", str(t), "--steps", "1.5"],
                           "argument --steps: expected an integer >= 1, got '1.5'", ()),
    "attack --eps nan": (lambda t, r, *_: ["attack", "--model", "zero_filled", "--data", str(t), "--eps", "nan"],
                         "argument --eps: expected a finite number >= 0", ()),
    # budgets that float32 cannot carry
    "attack --eps 1e30": (lambda t, r, *_: ["attack", "--model", "zero_filled", "--data", str(t), "--eps", "1e30",
                                            "--out", str(r / "out")], "eps 1e+30 is above the largest supported",
                          ("out",)),
    # models and checkpoints
    "misspelled model name": (lambda t, r, *_: _evaluate(t, "--model", "unte"), "did you mean 'unet'?", ()),
    "unknown model in a checkpoint": (lambda t, r, *_: _checkpoint(r, "m", meta={"name": "resnet9000", "config": {}}),
                                      "m.json: unknown model 'resnet9000'", ()),
    "corrupt safetensors": (lambda t, r, *_: _checkpoint(r, "m", weights=b"\x00garbage"),
                            "m.safetensors: cannot load weights", ()),
    "unknown hyper-parameter": (lambda t, r, *_: ["train", "--model", "unet", "--set", "wings=2", "--data", str(t),
                                                  "--out", str(r / "run")], "unknown hyper-parameter", ("run",)),
    # HDF5 files
    "not HDF5": (lambda t, r, *_: _text(r), "notes.h5: not a readable HDF5 file", ()),
    "truncated HDF5": (lambda t, r, *_: _evaluate(_truncated(t, r)), "cut.h5: not a readable HDF5 file", ()),
    "k-space of rank 2": (lambda t, r, *_: _evaluate(_h5(r, kspace=KSPACE[0])), "bad.h5: kspace must be (S, H, W)", ()),
    "real k-space": (lambda t, r, *_: _evaluate(_h5(r, kspace=KSPACE.real)), "bad.h5: kspace must be complex", ()),
    "NaN k-space": (lambda t, r, *_: _nan(r), "nan.h5: kspace of slice 1 contains NaN or inf", ()),
    "huge declared shape": (lambda t, r, *_: _huge(r), "huge.h5: one slice of 'kspace' declares 74.5 GiB", ()),
    "external storage": (lambda t, r, *_: _external(r), "ext.h5: dataset 'kspace' keeps its data in another file", ()),
    # dataset.json
    "dataset.json shape 5": (lambda t, r, *_: _manifest(t, r, lambda m: m.update(shape=5)),
                             "dataset.json: field 'shape': expected a list of 2 integers", ()),
    # training state on resume
    "corrupt state.pt": (lambda t, r, run, _: _resume(run, r, lambda p: p.write_bytes(b"\x00 not torch")),
                         "state.pt: not a readable training state", ()),
    "foreign state.pt": (lambda t, r, run, _: _resume(run, r, lambda p: torch.save([1, 2, 3], p)),
                         "state.pt: not a reconguard training state", ()),
    # audit configs
    "audit steps: many": (lambda t, r, *_: _audit(r, t, "steps: 1}", "steps: many}"),
                          "audit.yaml:6: attacks.pgd-kspace.steps: expected an integer >= 1, got 'many'", ("out",)),
    "audit eps 1e30": (lambda t, r, *_: _audit(r, t, "[0.01]", "[1.0e+30]"),
                       "audit.yaml:6: attacks.pgd-kspace: eps 1e+30 is above the largest supported", ("out",)),
    "audit smoothing on zero-filled": (lambda t, r, *_: _audit(r, t, "attacks:", "defenses:\n  smooth: {}\nattacks:"),
                                       "audit.yaml:6: defenses.smooth.settings: cannot protect zf", ("out",)),
    "audit misspelled model": (lambda t, r, *_: _audit(r, t, "zero_filled", "zero_filed"),
                               "audit.yaml:4: models.zf.name: unknown model 'zero_filed' (did you mean", ("out",)),
    "audit bad YAML": (lambda t, r, *_: _audit(r, t, "batch_size: 2", "batch_size: [2"),
                       "audit.yaml:8: not valid YAML", ("out",)),
    "audit malicious fastMRI pickle": (lambda t, r, *_: _fastmri_pickle(r, t), "evil.pt: not a readable tensor",
                                       ("out", "pwned")),
    "audit corrupt data file": (lambda t, r, *_: _audit(r, t, data=_truncated(t, r)),
                                "cut.h5: not a readable HDF5 file", ("out",)),
    "audit checkpoint without weights": (lambda t, r, *_: _audit_checkpoint_without_weights(r, t),
                                         "ck.safetensors: cannot load weights", ("out",)),
    # report
    "report on a foreign database": (lambda t, r, *_: _foreign_database(r),
                                     "results.sqlite: not a reconguard results database", ("out/report",)),
    "report with a damaged panel": (lambda t, r, run, audit: _report(audit, r, "UPDATE panels SET images = x'0102'"),
                                    "results.sqlite: panel of cell", ("out/report",)),
}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    """A finished one-step training run, and the command line that made it."""
    from reconguard.cli.main import main

    root = tmp_path_factory.mktemp("trained")
    argv = ["train", "--model", "unet", "--set", "chans=4", "--set", "num_pool_layers=2", "--data", str(tiny_data),
            "--max-steps", "1", "--batch-size", "4", "--quiet"]
    assert main([*argv, "--out", str(root / "run")]) == 0
    (root / "argv.json").write_text(json.dumps(argv))
    return root


@pytest.fixture(scope="module")
def audit_dir(tiny_data, tmp_path_factory):
    """A finished one-unit audit (records and panels)."""
    from reconguard.audit import load_config, run_audit

    root = tmp_path_factory.mktemp("audited")
    (root / "audit.yaml").write_text(AUDIT.format(root=root, data=tiny_data))
    run_audit(load_config(root / "audit.yaml"), progress=False)
    return root / "out"


@pytest.fixture(scope="module")
def outcomes(tiny_data, trained_run, audit_dir, tmp_path_factory):
    """Build every case's input, run all cases as subprocesses (a few at a time), snapshot before/after."""
    roots, argvs, before = {}, {}, {}
    for index, (name, (build, _, _)) in enumerate(CASES.items()):
        roots[name] = tmp_path_factory.mktemp(f"case{index}")
        argvs[name] = [a if a != "DATA" else str(tiny_data) for a in build(tiny_data, roots[name], trained_run,
                                                                            audit_dir)]
        before[name] = _snapshot(roots[name])
    shared = {p: _snapshot(p) for p in (tiny_data, trained_run, audit_dir)}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reconguard.cli.main", *argvs[name]], capture_output=True,
                              text=True, env=env, cwd=roots[name], timeout=600)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(CASES, pool.map(run, CASES)))
    assert {p: _snapshot(p) for p in shared} == shared  # the shared inputs were not touched
    return {name: (results[name], before[name], _snapshot(roots[name]), roots[name]) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_one_line_exit_2_and_changes_nothing(name, outcomes):
    result, before, after, root = outcomes[name]
    _, fragment, absent = CASES[name]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reconguard ") and ": error: " in lines[0], result.stderr
    assert fragment in lines[0], lines[0]
    assert after == before, "files were written, changed or removed"
    assert not any((root / path).exists() for path in absent)
