"""Numbers of an audit report: per-slice rows, per-cell means and their tables.

Everything here is plain Python over the tidy rows of :meth:`reconguard.audit.store.Store.records`
(no pandas, no matplotlib), so the HTML page, the Markdown/CSV summaries and the plots share one
set of numbers; verdicts are in :mod:`reconguard.report.verdicts`, defense effects in
:mod:`reconguard.report.effects`.

Records are pivoted to *slice rows*: one dict per (cell, volume, slice) holding the cell's columns
plus one ``<condition>_<metric>`` key per record (``clean_psnr``, ``attacked_ssim``,
``fnaf_hit``...). Means skip missing and non-finite values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence

import torch

from reconguard.metrics import METRICS
from reconguard.metrics.artefacts import classify_artefact
from reconguard.report.tables import csv_text, show

#: Columns that identify a cell.
CELL_KEYS = ("cell_id", "model", "defense", "attack", "source", "eps", "seed", "acceleration")
#: Conditions of perturbation cells, in table order.
CONDITIONS = ("clean", "attacked", "nonadaptive", "noise")
#: The metric of the verdicts, drops and the zero-filling baseline.
PRIMARY = "psnr"
#: Error-map descriptors of perturbation cells (condition ``artefact``; see
#: :func:`reconguard.metrics.describe_artefact`).
ARTEFACTS = ("spectral_flatness", "neighbour_correlation", "edge_correlation")
#: Per-group means over every slice row (the noise gain: output change per input change under the
#: matched noise, see :mod:`reconguard.experiment`).
_ROW_MEANS = (
    *(f"{c}_{m}" for c in CONDITIONS for m in METRICS),
    *(f"artefact_{d}" for d in ARTEFACTS),
    f"zero_filled_{PRIMARY}",
    "noise_gain",
)
#: Per-group means computed by :func:`summarize` (besides ``slices``): FNAF scores over accepted
#: candidates (``fnaf_score``: the criterion's score, ``fnaf_feature_loss``: the missing-feature MSE).
MEASURES = (*_ROW_MEANS, "psnr_drop", "fnaf_candidates", "fnaf_accepted", "fnaf_hit_rate", "fnaf_score",
            "fnaf_feature_loss")
#: Columns of ``summary.csv``: one row per cell.
SUMMARY_COLUMNS = (*CELL_KEYS, "slices", *MEASURES)

FNAF = "fnaf"
ARTEFACT_NOTE = (
    "Spectral flatness near 1: a white, noise-like error; neighbour correlation near 1: smooth, coherent "
    "structure; edge correlation: how much the error follows the target's edges (anatomy-like). Labels: "
    "edge-like if edge correlation ≥ 0.3, else noise-like if flatness ≥ 0.5, else structured."
)


def slice_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pivot tidy records to one dict per (cell, volume, slice) with ``<condition>_<metric>`` keys."""
    rows: dict[tuple, dict[str, Any]] = {}
    for record in records:
        key = (record["cell_id"], record["volume"], record["slice"])
        row = rows.get(key)
        if row is None:
            row = rows[key] = {k: record[k] for k in (*CELL_KEYS, "volume", "slice")}
        row[f"{record['condition']}_{record['metric']}"] = record["value"]
    return list(rows.values())


def mean(values: Iterable[Any]) -> float | None:
    """Mean of the finite numbers among ``values`` (``None`` if there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def per_slice(rows: Sequence[dict[str, Any]], value) -> list[float | None]:
    """``value(row)`` averaged over the rows (seeds) of each slice, one number per slice."""
    slices: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        slices[(r["volume"], r["slice"])].append(r)
    return [mean(value(r) for r in group) for group in slices.values()]


def psnr_drop(row: dict[str, Any], condition: str = "attacked") -> float | None:
    """Clean PSNR minus the PSNR of ``condition`` for one slice row (``None`` if either is missing)."""
    clean, other = row.get("clean_psnr"), row.get(f"{condition}_psnr")
    if clean is None or other is None or not math.isfinite(clean - other):
        return None
    return clean - other


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means of every measure over slice rows; FNAF rates count accepted candidates only."""
    out: dict[str, Any] = {"slices": len({(r["volume"], r["slice"]) for r in rows})}
    for measure in _ROW_MEANS:
        out[measure] = mean(r.get(measure) for r in rows)
    out["psnr_drop"] = mean(psnr_drop(r) for r in rows)
    candidates = [r for r in rows if r.get("fnaf_accepted") is not None]
    accepted = [r for r in candidates if r["fnaf_accepted"] >= 0.5]
    out["fnaf_candidates"] = len(candidates) if candidates else None
    out["fnaf_accepted"] = len(accepted) if candidates else None
    out["fnaf_hit_rate"] = mean(1.0 if (r.get("fnaf_hit") or 0) >= 0.5 else 0.0 for r in accepted)
    out["fnaf_score"] = mean(r.get("fnaf_score") for r in accepted)
    out["fnaf_feature_loss"] = mean(r.get("fnaf_feature_loss") for r in accepted)
    return out


def group(
    rows: Iterable[dict[str, Any]], keys: Sequence[str], where: Callable[[dict[str, Any]], bool] | None = None
) -> dict[tuple, dict[str, Any]]:
    """:func:`summarize` of the slice rows grouped by ``keys`` (optionally filtered), sorted by key."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if where is None or where(row):
            groups[tuple(row[k] for k in keys)].append(row)
    return {key: summarize(groups[key]) for key in sorted(groups, key=sort_key)}


def sort_key(key: Sequence[Any]) -> tuple:
    """Sort key of a tuple of cell columns: ``None`` last, the defense ``"none"`` before any defense."""
    return tuple((v is None, "" if v == "none" else (0 if v is None else v)) for v in key)


def is_white_box(row: dict[str, Any]) -> bool:
    """A white-box cell: the attack was computed on the attacked model itself."""
    return row["source"] == row["model"]


def is_perturbation(row: dict[str, Any]) -> bool:
    """A norm-bounded perturbation cell (every attack but FNAF)."""
    return row["attack"] != FNAF and not row["attack"].startswith(f"{FNAF}-")


def cell_means(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per cell (columns :data:`SUMMARY_COLUMNS`)."""
    keys = (*CELL_KEYS[1:], "cell_id")  # readable order: model, defense, attack...
    return [dict(zip(keys, key)) | stats for key, stats in group(rows, keys).items()]


# -- tables (lists of strings, shared by HTML and Markdown) --------------------------------------

#: The perturbation table's metric columns: the first metric of :data:`reconguard.metrics.METRICS`
#: (PSNR) under every condition and zero-filling, the others under clean, attacked and noise.
TABLE_COLUMNS = (*((c, PRIMARY) for c in (*CONDITIONS, "zero_filled")),
                 *((c, m) for m in METRICS if m != PRIMARY for c in ("clean", "attacked", "noise")))
_LABELS = {"nonadaptive": "non-adaptive", "zero_filled": "zero-filled"}
PERTURBATION_HEADER = ("model", "defense", "attack", "source", "eps", "seed", "accel.", "slices",
                       *(f"{m.upper()} {_LABELS.get(c, c)}" for c, m in TABLE_COLUMNS), "noise gain")
FNAF_HEADER = (
    "model",
    "defense",
    "attack",
    "source",
    "seed",
    "accel.",
    "candidates",
    "accepted",
    "hit rate",
    "mean score",
    "PSNR clean",
    "SSIM clean",
)


def perturbation_table(cells: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows of :data:`PERTURBATION_HEADER`, one per perturbation cell."""
    rows = []
    for c in cells:
        if not is_perturbation(c):
            continue
        numbers = [show(c[f"{k}_{m}"], METRICS[m].format) for k, m in TABLE_COLUMNS]
        rows.append(
            [
                *_cell_label(c),
                show(c["eps"], "{:g}"),
                str(c["seed"]),
                f"{c['acceleration']:g}",
                str(c["slices"]),
                *numbers,
                show(c["noise_gain"], "{:.2f}"),
            ]
        )
    return rows


def fnaf_table(cells: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows of :data:`FNAF_HEADER`, one per FNAF cell."""
    return [
        [
            *_cell_label(c),
            str(c["seed"]),
            f"{c['acceleration']:g}",
            show(c["fnaf_candidates"], "{:d}"),
            show(c["fnaf_accepted"], "{:d}"),
            show(c["fnaf_hit_rate"], "{:.0%}"),
            show(c["fnaf_score"], "{:.3g}"),
            show(c["clean_psnr"], "{:.2f}"),
            show(c["clean_ssim"], "{:.4f}"),
        ]
        for c in cells
        if not is_perturbation(c)
    ]


ARTEFACT_HEADER = ("model", "defense", "attack", "source", "eps", "accel.", "spectral flatness",
                   "neighbour correlation", "edge correlation", "looks")


def artefact_label(means: dict[str, float]) -> str:
    """:func:`reconguard.metrics.classify_artefact`'s rule applied to mean descriptors (keys
    :data:`ARTEFACTS`): ``"edge-like"``, ``"noise-like"`` or ``"structured"``."""
    return classify_artefact({"rms": torch.ones(1), **{d: torch.tensor([means[d]]) for d in ARTEFACTS}})[0]


def artefact_table(cells: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows of :data:`ARTEFACT_HEADER`: mean descriptors of the error map attacked - clean per
    perturbation cell, and what they look like (:func:`artefact_label`)."""
    rows = []
    for c in cells:
        values = {d: c.get(f"artefact_{d}") for d in ARTEFACTS}
        if not is_perturbation(c) or any(v is None for v in values.values()):
            continue
        rows.append([*_cell_label(c), show(c["eps"], "{:g}"), f"{c['acceleration']:g}",
                     *(show(values[d], "{:.3f}") for d in ARTEFACTS), artefact_label(values)])
    return rows


def _cell_label(c: dict[str, Any]) -> list[str]:
    return [c["model"], c["defense"], c["attack"], c["source"]]


def summary_csv(cells: Sequence[dict[str, Any]]) -> str:
    """``summary.csv``: one row per cell, columns :data:`SUMMARY_COLUMNS` (empty = no value)."""
    return csv_text([{k: "" if c.get(k) is None else c[k] for k in SUMMARY_COLUMNS} for c in cells])
