"""Several `reconguard audit` processes on one output directory split the work (audit.claims).

Real processes: plain `reconguard audit` runs started together, and a worker that SIGKILLs itself
while it holds a claimed unit. After every round: exit 0 and no traceback, every unit done once,
records equal to one uninterrupted run, every process did part of the work, and the killed
worker's claimed unit was finished by another. `tests/slow/test_concurrency_rounds.py` repeats it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reconguard.audit import Store, load_config, run_audit
from reconguard.audit.claims import Worker, claim, process_exists, release, renew
from tests.audit.test_runner import _same_records, _write

# Dies (SIGKILL, from inside the audit loop) when asked to compute its third unit -- holding its claim.
KILLED_WORKER = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from reconguard.audit import load_config, runner
real, calls = runner.run_unit, []
def dying(ws, cell, index, rank):
    calls.append(index)
    if len(calls) == 3:
        with open({marker!r}, "w") as handle:
            json.dump([cell.cell_id, index], handle)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(ws, cell, index, rank)
runner.run_unit = dying
runner.run_audit(load_config({config!r}), progress=False)
"""


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """An uninterrupted single-process run of the config."""
    root = tmp_path_factory.mktemp("concurrency")
    return run_audit(load_config(_write(root, tiny_data, "reference")), progress=False).records()


def run_round(config: Path, workers: int, *, kill: bool, marker: Path, report: bool = False) -> list[tuple[int, str]]:
    """Start ``workers`` audits on ``config`` at once (the first one dies if ``kill``); exit codes and stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "reconguard.cli.main", "audit", str(config), "--quiet"]
    cli += [] if report else ["--no-report"]
    commands = [cli] * workers
    if kill:
        commands[0] = [sys.executable, "-c", textwrap.dedent(KILLED_WORKER.format(marker=str(marker),
                                                                                 config=str(config)))]
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for c in commands]
    results = []
    for process in processes:
        _, err = process.communicate(timeout=900)
        results.append((process.returncode, err))
    return results


def check_round(output: Path, results: list[tuple[int, str]], reference: list[dict], *, kill: bool,
                marker: Path) -> None:
    """Everything the acceptance asks of one round of concurrent audits on ``output``."""
    for code, err in results[1:] if kill else results:
        assert code == 0 and "Traceback" not in err, err[-3000:]
    if kill:
        assert results[0][0] == -9, results[0][1][-3000:]
    store = Store(output)
    _same_records(store.records(), reference)
    units = store.query("SELECT cell_id, batch, run_id FROM units")
    planned = len({(r["cell_id"], r["volume"], r["slice"]) for r in reference}) // 2  # batches of 2 slices
    assert len(units) == len({(u["cell_id"], u["batch"]) for u in units}) == planned
    assert store.query("SELECT * FROM claims") == []
    runs = store.runs()
    assert len(runs) == len(results)
    per_run = {run["run_id"]: sum(u["run_id"] == run["run_id"] for u in units) for run in runs}
    assert all(count > 0 for count in per_run.values()), per_run  # every process did part of the work
    if kill:
        (killed,) = [run["run_id"] for run in runs if run["finished"] is None]
        assert per_run[killed] == 2  # it committed two units, then died computing the third
        cell_id, batch = json.loads(marker.read_text())
        (finisher,) = [u["run_id"] for u in units if (u["cell_id"], u["batch"]) == (cell_id, batch)]
        assert finisher != killed  # its claimed unit was finished by another worker


@pytest.mark.parametrize("workers,kill", [(2, False), (3, True)], ids=["two workers", "three, one SIGKILLed"])
def test_concurrent_audits_split_the_work(workers, kill, reference, tiny_data, tmp_path):
    config = _write(tmp_path, tiny_data, "shared")
    marker = tmp_path / "killed-unit.json"
    results = run_round(config, workers, kill=kill, marker=marker)
    check_round(tmp_path / "shared", results, reference, kill=kill, marker=marker)


def test_claims_skip_done_and_live_units_and_take_over_dead_or_expired_ones(tmp_path):
    store = Store(tmp_path)
    plan = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    me, other = Worker(), Worker(host=Worker().host, pid=os.getppid())  # the parent process is alive
    store.add_cells({"cell_id": c, "model": "zf", "defense": "none", "attack": "pgd", "source": "zf", "eps": 0.01,
                     "seed": 0, "acceleration": 4.0, "spec": {}} for c in "ab")
    with store.transaction() as db:
        db.execute("INSERT INTO units VALUES ('a', 0, 2, 1.0, 0, 1)")
    assert claim(store, plan, 1, other).units == (("a", 1),)
    found = claim(store, plan, 2, me)
    assert found.units == (("b", 0), ("b", 1)) and (found.done, found.busy) == (1, 1)
    assert claim(store, plan, 2, me).units == (("b", 0), ("b", 1))  # a worker keeps its own claims
    dead = Worker(host=me.host, pid=_dead_pid())
    remote = Worker(host="elsewhere")
    release(store, me)
    claim(store, plan, 1, dead)
    assert claim(store, plan, 1, me).units == (("b", 0),)  # a dead process's claim is free at once
    release(store, me)
    claim(store, plan, 1, remote, lease=-1.0)
    assert claim(store, plan, 1, me).units == (("b", 0),)  # an expired lease too
    renew(store, me, lease=-1.0)
    assert claim(store, plan, 1, remote).units == (("b", 0),)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert not process_exists(process.pid)
    return process.pid
