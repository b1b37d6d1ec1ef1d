"""Print the model-zoo tables of docs/results.md from an audit of scripts/results_zoo.yaml.

Usage: .venv/bin/python scripts/results_zoo_tables.py [OUTPUT]   (default OUTPUT: runs/zoo)

Reads OUTPUT/report/summary.csv (written by the audit, or by ``reconguard report OUTPUT``): the
per-cell means over the audited slices.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from reconguard.report.summary import ARTEFACTS, artefact_label
from reconguard.report.tables import markdown_table, show

EPS = ("0.01", "0.02", "0.05")
SOURCE = "unet"
#: The config's white-box attack per model (the diffusion model gets a cheaper one; see the config).
WHITE_BOX = {"diffusion": "pgd-kspace-diffusion"}


def _cells(root: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(root / "report" / "summary.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["defense"] == "none" and r["eps"]]
    wanted = lambda r: r["attack"] == (WHITE_BOX.get(r["model"], "pgd-kspace") if r["source"] == r["model"]  # noqa: E731
                                       else "pgd-kspace")
    return {(r["model"], r["source"], f"{float(r['eps']):g}"): r for r in rows if wanted(r)}


def _number(row: dict[str, str] | None, key: str, fmt: str) -> str:
    return show(float(row[key]) if row and row.get(key) else None, fmt)


def main(root: Path) -> None:
    cells = _cells(root)
    models = sorted({m for m, _, _ in cells}, key=lambda m: (m != "zero-filled", m != SOURCE, m))
    white = {m: {e: cells.get((m, m, e)) for e in EPS} for m in models}
    moved = {m: {e: cells.get((m, SOURCE, e)) for e in EPS} for m in models}

    header = ("model", "slices", "PSNR clean", "SSIM clean",
              *(f"white-box {e}" for e in EPS), "noise 0.05", *(f"transfer {e}" for e in EPS))
    body = []
    for m in models:
        first = white[m]["0.01"]
        body.append([m, first["slices"] if first else "n/a", _number(first, "clean_psnr", "{:.2f}"),
                     _number(first, "clean_ssim", "{:.4f}"),
                     *(_number(white[m][e], "attacked_psnr", "{:.2f}") for e in EPS),
                     _number(white[m]["0.05"], "noise_psnr", "{:.2f}"),
                     *("(source)" if m == SOURCE else _number(moved[m][e], "attacked_psnr", "{:.2f}") for e in EPS)])
    print(markdown_table(header, body))

    header = ("model", "attack (eps 0.05)", *(a.replace("_", " ") for a in ARTEFACTS), "looks")
    body = []
    for m in models:
        attacks = [("white-box", white[m]["0.05"])] + ([(f"transfer from {SOURCE}", moved[m]["0.05"])] * (m != SOURCE))
        for label, row in attacks:
            body.append([m, label, *(_number(row, f"artefact_{a}", "{:.3f}") for a in ARTEFACTS), _looks(row)])
    print()
    print(markdown_table(header, body, align="ll" + "r" * len(ARTEFACTS) + "l"))


def _looks(row: dict[str, str] | None) -> str:
    if row is None or not all(row.get(f"artefact_{a}") for a in ARTEFACTS):
        return "n/a"
    return artefact_label({a: float(row[f"artefact_{a}"]) for a in ARTEFACTS})


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/zoo"))
