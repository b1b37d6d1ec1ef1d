"""The audit runner: records, idempotence, resume after SIGKILL, torchrun with 2 processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reconguard.audit import Store, load_config, run_audit
from reconguard.experiment import CONDITIONS

CONFIG = """\
output: {out}
data: {{path: {data}, split: test, max_slices: 6}}
models:
  zf: {{name: zero_filled}}
  unet: {{name: unet, config: {{chans: 4, num_pool_layers: 2}}}}
defenses:
  smooth: {{settings: {{samples: 2, mode: input}}, models: [unet]}}
attacks:
  pgd-kspace: {{eps: [0.01, 0.05], steps: 2}}
  fnaf: {{candidates: 2}}
transfer:
  - {{source: unet, targets: [zf], attacks: [pgd-kspace]}}
batch_size: 2
"""


def _write(tmp_path: Path, data: Path, name: str, text: str = CONFIG) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.format(out=tmp_path / name, data=data))
    return path


def _key(row: dict) -> tuple:
    return row["cell_id"], row["volume"], row["slice"], row["condition"], row["metric"]


def _same_records(a: list[dict], b: list[dict], tol: float = 1e-5) -> None:
    assert [_key(r) for r in a] == [_key(r) for r in b]
    for x, y in zip(a, b):
        if x["value"] is None or y["value"] is None:
            assert x["value"] is y["value"]
        else:
            assert abs(x["value"] - y["value"]) <= tol * max(1.0, abs(x["value"])), (_key(x), x["value"], y["value"])


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """An uninterrupted single-process run of CONFIG."""
    root = tmp_path_factory.mktemp("audit")
    store = run_audit(load_config(_write(root, tiny_data, "reference")), progress=False)
    return store.records()


def test_records_are_tidy_and_complete(reference, tiny_data, tmp_path):
    store = Store(tmp_path / "reference")  # an empty directory: no records
    assert store.records() == []
    cells = {(r["model"], r["defense"], r["attack"], r["source"], r["eps"]) for r in reference}
    assert len(cells) == 3 * 3 + 2  # (zf, unet, unet+smooth) x (2 eps + fnaf) + 2 transfer cells
    conditions = {(r["defense"], r["attack"], r["source"] != r["model"]): set() for r in reference}
    for r in reference:
        conditions[(r["defense"], r["attack"], r["source"] != r["model"])].add(r["condition"])
    assert conditions[("none", "pgd-kspace", False)] == {"clean", "attacked", "noise", "artefact", "zero_filled"}
    assert conditions[("smooth", "pgd-kspace", False)] == {"clean", "attacked", "noise", "nonadaptive", "artefact",
                                                            "zero_filled", "undefended_clean", "undefended_attacked"}
    assert set().union(*conditions.values()) <= set(CONDITIONS)  # one vocabulary
    assert conditions[("none", "pgd-kspace", True)] == {"clean", "attacked", "noise", "artefact", "zero_filled"}
    flatness = [r["value"] for r in reference if r["metric"] == "spectral_flatness"]
    assert flatness and all(0 <= v <= 1 for v in flatness)
    assert conditions[("none", "fnaf", False)] == {"clean", "attacked", "fnaf", "zero_filled"}
    slices = {(r["volume"], r["slice"]) for r in reference}
    assert len(slices) == 6
    per_cell = len(reference) // len(cells)
    assert per_cell * len(cells) == len(reference) or per_cell > 0
    attacked = [r for r in reference if r["attack"] == "pgd-kspace" and r["condition"] == "attacked"
                and r["metric"] == "psnr" and r["defense"] == "none" and r["model"] == "unet"]
    clean = {(r["cell_id"], r["volume"], r["slice"]): r["value"] for r in reference
             if r["condition"] == "clean" and r["metric"] == "psnr"}
    assert all(r["value"] < clean[(r["cell_id"], r["volume"], r["slice"])] for r in attacked)


def test_a_second_run_recomputes_nothing_and_a_grown_config_only_adds(reference, tiny_data, tmp_path):
    path = _write(tmp_path, tiny_data, "grow")
    run_audit(load_config(path), progress=False)
    units: list = []
    store = run_audit(load_config(path), progress=False, on_unit=units.append)
    assert units == [] and len(store.runs()) == 2
    _same_records(store.records(), reference)
    path.write_text(path.read_text().replace("[0.01, 0.05]", "[0.01, 0.05, 0.1]"))
    store = run_audit(load_config(path), progress=False, on_unit=units.append)
    assert len({u.cell_id for u in units}) == 4 and len(units) == 4 * 3  # zf, unet, unet+smooth, transfer; 3 batches
    assert {_key(r) for r in reference} < {_key(r) for r in store.records()}


def test_resume_after_sigkill_in_the_middle_of_a_cell(reference, tiny_data, tmp_path):
    path = _write(tmp_path, tiny_data, "killed")
    script = textwrap.dedent(f"""
        import os, signal, threading
        import torch
        torch.set_num_threads(1)
        from reconguard.audit import load_config, run_audit
        count = []
        def on_unit(unit):
            count.append(unit)
            if len(count) == 4:  # die while the 5th unit is being computed (mid-cell: 3 units per cell)
                threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
        run_audit(load_config({str(path)!r}), progress=False, on_unit=on_unit)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr
    store = Store(tmp_path / "killed")
    partial = store.done_units()
    assert 4 <= len(partial) < 33
    units: list = []
    store = run_audit(load_config(path), progress=False, on_unit=units.append)
    assert not {(u.cell_id, u.batch) for u in units} & partial  # nothing finished is recomputed
    _same_records(store.records(), reference)  # nothing lost, nothing duplicated


def test_torchrun_with_two_processes_gives_the_same_records(reference, tiny_data, tmp_path):
    path = _write(tmp_path, tiny_data, "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "reconguard.cli.main", "audit", str(path), "--no-report", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    store = Store(tmp_path / "torchrun")
    assert store.runs()[0]["world_size"] == 2
    assert {u["rank"] for u in store.query("SELECT rank FROM units")} == {0, 1}
    _same_records(store.records(), reference)


def test_export_csv_and_parquet(reference, tiny_data, tmp_path):
    store = run_audit(load_config(_write(tmp_path, tiny_data, "export")), progress=False)
    lines = store.export(tmp_path / "records.csv").read_text().splitlines()
    assert lines[0].startswith("cell_id,model,defense") and len(lines) == len(reference) + 1
    pq = pytest.importorskip("pyarrow.parquet")
    assert pq.read_table(store.export(tmp_path / "records.parquet")).num_rows == len(reference)
