"""Compare the outputs of scripts/kernel_move_check.sh: every number the old revision wrote must be in
the new files, under its new name, with the same value (timings excepted). Prints one line per output
and ``RESULT: ...``; exits 1 on any missing or different number."""

from __future__ import annotations

import csv
import glob
import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np

METRICS = ("psnr", "ssim", "nmse")
FNAF = ("hit", "accepted", "feature_loss", "region_loss", "control_region_loss", "information", "rejected")
ATTACKED = {"norm": "attacked_norm", "budget": "attacked_budget", "relative_norm": "attacked_relative_norm",
            "loss": "attacked_loss", "seconds": None}
DEFEND = {"clean": "undefended_clean", "clean_defended": "clean", "attacked": "undefended_attacked",
          "attacked_defended": "nonadaptive", "adaptive_defended": "attacked"}


def number(value):
    if value in ("", None):
        return None
    if value in ("True", "False"):
        return float(value == "True")
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def same(a, b) -> bool:
    a, b = number(a), number(b)
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6 * max(1.0, abs(a))
    return a == b


def attack_name(key: str) -> str | None:
    """The new column of an old ``reconguard attack`` column (``None``: a timing, not compared)."""
    for metric in METRICS:
        if key.startswith(metric + "_"):
            return f"{key[len(metric) + 1:]}_{metric}"
    if key in ATTACKED:
        return ATTACKED[key]
    return "fnaf_" + key if key in FNAF else key


def defend_name(key: str) -> str | None:
    if key.startswith("seconds"):
        return None
    for metric in METRICS:
        if key.startswith(metric + "_"):
            return f"{DEFEND[key[len(metric) + 1:]]}_{metric}"
    return key


def compare(old: dict, new: dict, rename) -> tuple[int, int, int]:
    """(compared, missing, different) over the keys of ``old``."""
    compared = missing = different = 0
    for key, value in old.items():
        target = rename(key)
        if target is None:
            continue
        if target not in new:
            missing += 1
            print(f"  missing: {key} -> {target}")
            continue
        compared += 1
        if not same(value, new[target]):
            different += 1
            print(f"  different: {key} -> {target}: {value} != {new[target]}")
    return compared, missing, different


def rows(path: Path, key) -> dict:
    with open(path, newline="") as handle:
        return {key(r): r for r in csv.DictReader(handle)}


def main(before: Path, after: Path) -> int:
    problems = 0
    for run, rename in (("attack-pgd", attack_name), ("attack-input", attack_name), ("attack-sparse", attack_name),
                        ("attack-fnaf", attack_name), ("defend-cyclic", defend_name)):
        by_slice = lambda r: (r["volume"], r["slice"])  # noqa: E731
        old, new = rows(before / run / "metrics.csv", by_slice), rows(after / run / "metrics.csv", by_slice)
        totals = [0, 0, 0]
        for key in old:
            totals = [t + c for t, c in zip(totals, compare(old[key], new[key], rename))]
        summary_old = json.loads((before / run / "summary.json").read_text())
        summary_new = json.loads((after / run / "summary.json").read_text())
        means = compare(summary_old["mean"], summary_new["mean"], rename)
        files = sorted(glob.glob(str(before / run / "adversarial" / "*.h5")))
        identical = True
        for name in files:
            with h5py.File(name) as x, h5py.File(name.replace(str(before), str(after))) as y:
                identical &= all(np.array_equal(x[k][()], y[k][()]) for k in x)
        hits = summary_old.get("hit_rate") == summary_new.get("hit_rate")
        problems += totals[1] + totals[2] + means[1] + means[2] + (not identical) + (not hits)
        print(f"{run}: {totals[0]} slice values and {means[0]} means compared, {totals[1] + means[1]} missing, "
              f"{totals[2] + means[2]} different; {len(files)} fastMRI files identical: {identical}; "
              f"hit rate equal: {hits}")
    tidy = lambda r: (r["sample"], r["surrogate"], r["target"], r["metric"], r["condition"])  # noqa: E731
    old, new = rows(before / "transfer.csv", tidy), rows(after / "transfer.csv", tidy)
    counts = compare({k: r["value"] for k, r in old.items()}, {k: r["value"] for k, r in new.items()},
                     lambda k: (*k[:4], "attacked" if k[4] == "attack" else k[4]))
    problems += counts[1] + counts[2]
    print(f"transfer: {counts[0]} records compared, {counts[1]} missing, {counts[2]} different")
    audit = lambda r: (r["cell_id"], r["volume"], r["slice"], r["condition"], r["metric"])  # noqa: E731
    old, new = rows(before / "demo_records.csv", audit), rows(after / "demo_records.csv", audit)
    counts = compare({k: r["value"] for k, r in old.items()}, {k: r["value"] for k, r in new.items()}, lambda k: k)
    problems += counts[1] + counts[2]
    added = sorted({k[3:] for k in new} - {k[3:] for k in old})
    print(f"demo audit: {counts[0]} records compared (same cell ids), {counts[1]} missing, {counts[2]} different; "
          f"added (condition, metric): {added}")
    print("RESULT:", "every old number is there, renamed, with the same value" if problems == 0
          else f"{problems} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
