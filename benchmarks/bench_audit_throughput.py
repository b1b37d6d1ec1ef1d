"""Throughput of ``reconguard audit`` in slices x attack steps per second, 1 vs 2 processes.

A small generated config (a U-Net with 8 channels and 3 pooling levels, seeded random weights;
``pgd-kspace`` at eps 0.02; batches of 2 slices; no panels) runs over the test split of a tiny
phantom data set (``build_dataset(source="phantom", size=64)``, built once, outside the timing):
once as ``python -m reconguard.cli.main audit CONFIG --no-report --quiet`` and once under
``torchrun --standalone --nproc_per_node 2``, each into a fresh output directory. Reported:

- ``wall``: slices x steps over the whole command's wall-clock time (process start, imports,
  process-group set-up and database writes included: what a user waits for);
- ``loop``: slices x steps over the busiest rank's summed work-unit seconds (from the audit
  database), i.e. the audit loop alone;
- the records must agree (the audit promises the same records with any number of processes):
  their largest relative difference.

Threads: the single process gets this process's intra-op thread count, each of the two processes
half of it (at least one), so both runs share the same cores. A thread count changes the order
of floating-point sums inside the convolutions, and ten PGD steps amplify that, so the records
are compared with a third run: one process with the ranks' thread count (target <= 1e-5); the
difference to the all-threads run is reported without a target.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.timing import at_most, row
from reconguard.audit import Store
from reconguard.data import build_dataset

NAME = "audit_throughput"
CONFIG = """\
output: {out}
data: {{path: {data}, split: test, max_slices: {slices}}}
models:
  unet: {{name: unet, config: {{chans: 8, num_pool_layers: 3}}}}
attacks:
  pgd-kspace: {{eps: [0.02], steps: {steps}}}
batch_size: 2
panels: false
"""


def _audit(root: Path, data: Path, name: str, *, slices: int, steps: int, processes: int,
           threads: int) -> tuple[float, Store]:
    """Run one audit in a subprocess (``threads`` per process); its wall-clock seconds and its store."""
    config = root / f"{name}.yaml"
    config.write_text(CONFIG.format(out=root / name, data=data, slices=slices, steps=steps))
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    launcher = launcher if processes > 1 else []
    command = [sys.executable, *launcher, "-m", "reconguard.cli.main", "audit", str(config), "--no-report", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise RuntimeError(f"audit with {processes} process(es) failed (exit {done.returncode}): {lines[-1]}")
    return seconds, Store(root / name)


def _busiest_rank_seconds(store: Store) -> float:
    rows = store.query("SELECT rank, SUM(seconds) AS total FROM units GROUP BY rank")
    return max(r["total"] for r in rows)


def _records_difference(a: Store, b: Store) -> float:
    """Largest relative difference between the two runs' record values (inf if the keys differ)."""
    key = lambda r: (r["cell_id"], r["volume"], r["slice"], r["condition"], r["metric"])  # noqa: E731
    left, right = {key(r): r["value"] for r in a.records()}, {key(r): r["value"] for r in b.records()}
    if set(left) != set(right) or not left:
        return float("inf")
    worst = 0.0
    for k, x in left.items():
        y = right[k]
        if x is None or y is None:
            worst = worst if x is y else float("inf")
        else:
            worst = max(worst, abs(x - y) / max(1.0, abs(x)))
    return worst


def run(*, device: str = "cpu", quick: bool = False) -> list[dict]:
    """Time the same small audit with 1 and with 2 processes (CPU; the device argument is ignored).

    Args:
        device: Unused: the audit config runs on the CPU (multi-GPU needs several GPUs).
        quick: 8 slices x 3 steps (instead of 24 slices x 10 steps).

    Returns:
        Rows for :mod:`benchmarks.run`.
    """
    slices, steps = (8, 3) if quick else (24, 10)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="reconguard-bench-audit-") as tmp:
        root = Path(tmp)
        build_dataset(root / "data", source="phantom", size=64, progress=False)
        threads = {n: max(1, torch.get_num_threads() // n) for n in (1, 2)}
        found = {n: _audit(root, root / "data", f"p{n}", slices=slices, steps=steps, processes=n, threads=threads[n])
                 for n in (1, 2)}
        same = _audit(root, root / "data", "same", slices=slices, steps=steps, processes=1, threads=threads[2])[1]
        work = slices * steps
        wall = {n: work / seconds for n, (seconds, _) in found.items()}
        loop = {n: work / _busiest_rank_seconds(store) for n, (_, store) in found.items()}
        difference = _records_difference(same, found[2][1])
        threads_difference = _records_difference(found[1][1], found[2][1])
    for n in found:
        note = (f"{slices} phantom 64x64 slices x {steps} PGD steps, U-Net chans 8, batch 2; {n} process(es) x "
                f"{threads[n]} thread(s)")
        rows += [row(NAME, f"{n} process(es)", "wall_throughput", wall[n], "slice-steps/s", note),
                 row(NAME, f"{n} process(es)", "loop_throughput", loop[n], "slice-steps/s", note)]
    return rows + [
        row(NAME, "2 vs 1 process", "wall_speedup", wall[2] / wall[1], "x", "no target in the issue"),
        row(NAME, "2 vs 1 process", "loop_speedup", loop[2] / loop[1], "x", "no target in the issue"),
        row(NAME, "2 vs 1 process", "records_max_rel_diff", difference, "1",
            f"2 processes vs 1 process, both {threads[2]} thread(s) per process", **at_most(difference, 1e-5)),
        row(NAME, "2 vs 1 process", "records_max_rel_diff_threads", threads_difference, "1",
            f"2 processes x {threads[2]} vs 1 process x {threads[1]} thread(s): other summation order"),
    ]
