"""Worst-slice image panels of the HTML report, with buttons that switch between views.

For each model x defense x (perturbation | FNAF), the white-box slice with a stored panel that
suffered most (largest PSNR drop, or largest feature loss among accepted FNAF candidates) is shown
as target / clean / attacked / non-adaptive / noise / defended / error views, and written as a
static figure (PNG and PDF) too.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reconguard.audit.store import Store
from reconguard.report import plots
from reconguard.report.summary import is_perturbation, is_white_box, psnr_drop, sort_key
from reconguard.report.tables import show

#: At most this many worst-slice panels (one per model x defense x attack family).
MAX_PANELS = 12


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _worst_slices(rows: list[dict[str, Any]], stored: set[tuple]) -> list[dict[str, Any]]:
    """The worst white-box slice with a stored panel per model x defense x (perturbation | FNAF):
    largest PSNR drop, or largest feature loss among accepted FNAF candidates."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if is_white_box(r) and (r["cell_id"], r["volume"], r["slice"]) in stored:
            groups[(r["model"], r["defense"], not is_perturbation(r))].append(r)
    chosen = []
    for (_, _, fnaf), candidates in sorted(groups.items(), key=lambda item: sort_key(item[0])):
        score = _fnaf_score if fnaf else _drop_score
        chosen.append(max(candidates, key=score))
    return chosen[:MAX_PANELS]


def _drop_score(row: dict[str, Any]) -> float:
    drop = psnr_drop(row)
    return -np.inf if drop is None else drop


def _fnaf_score(row: dict[str, Any]) -> tuple[float, float]:
    loss = row.get("fnaf_score")
    return (float(row.get("fnaf_accepted") or 0.0), -np.inf if loss is None else float(loss))


def panels_html(store: Store, rows: list[dict[str, Any]], cells: list[dict[str, Any]], directory: Path) -> list[str]:
    """HTML of the worst-slice panels (their static figures go to ``directory``)."""
    stored = {(p["cell_id"], p["volume"], p["slice"]) for p in store.query("SELECT cell_id, volume, slice FROM panels")}
    out = []
    for index, row in enumerate(_worst_slices(rows, stored)):
        images = store.panel(row["cell_id"], row["volume"], row["slice"]) or {}
        views = _views(store, row, images, _defended_twins(row, cells, stored))
        if not views:
            continue
        fig = plots.slice_panel(images, title=_panel_title(row))
        plots.save_png_pdf(fig, directory, f"panel_{index:02d}")
        out.append(_panel_html(index, row, views))
    return out


def _defended_twins(row: dict[str, Any], cells: list[dict[str, Any]], stored: set[tuple]) -> list[dict[str, Any]]:
    """Defended cells with the same model, attack, budget, seed and acceleration and a panel of
    this slice (only for an undefended row)."""
    if row["defense"] != "none":
        return []
    same = ("model", "attack", "source", "eps", "seed", "acceleration")
    return [
        c
        for c in cells
        if c["defense"] != "none"
        and all(c[k] == row[k] for k in same)
        and (c["cell_id"], row["volume"], row["slice"]) in stored
    ]


def _views(
    store: Store, row: dict[str, Any], images: dict[str, np.ndarray], twins: list[dict[str, Any]]
) -> list[tuple[str, str, str]]:
    """``(key, button label, data URI)`` of every view of one slice panel."""
    peak, mask = plots.panel_peak(images), images.get("feature_mask")
    attacked = "attacked (adaptive)" if row["defense"] != "none" else "attacked"
    labels = {
        "target": "target",
        "clean": "clean",
        "attacked": attacked,
        "nonadaptive": "non-adaptive",
        "noise": "noise",
    }
    views = [
        (k, labels[k], data_uri(plots.view_png(images[k], vmax=peak, outline=mask))) for k in labels if k in images
    ]
    for index, twin in enumerate(twins):
        other = store.panel(twin["cell_id"], row["volume"], row["slice"]) or {}
        if "attacked" in other:
            png = plots.view_png(other["attacked"], vmax=peak, outline=mask)
            views.append((f"defended-{index}", f"defended: {twin['defense']}", data_uri(png)))
    if "attacked" in images and "target" in images:
        error = np.abs(images["attacked"] - images["target"])
        png = plots.view_png(error, vmax=float(error.max()), cmap="inferno", outline=mask)
        views.append(("error", "error |attacked − target|", data_uri(png)))
    return views


def _panel_title(row: dict[str, Any]) -> str:
    defense = "" if row["defense"] == "none" else f" + {row['defense']}"
    eps = "" if row["eps"] is None else f" eps {row['eps']:g}"
    return f"{row['model']}{defense} | {row['attack']}{eps} | {row['volume']} slice {row['slice']}"


def _panel_numbers(row: dict[str, Any]) -> str:
    if is_perturbation(row):
        return (
            f"PSNR clean {show(row.get('clean_psnr'), '{:.2f}')} dB, attacked "
            f"{show(row.get('attacked_psnr'), '{:.2f}')} dB (drop {show(psnr_drop(row), '{:.2f}')} dB)"
        )
    hit = "hit" if (row.get("fnaf_hit") or 0) >= 0.5 else "miss"
    accepted = "accepted" if (row.get("fnaf_accepted") or 0) >= 0.5 else "rejected"
    return f"FNAF score {show(row.get('fnaf_score'), '{:.3g}')}: {hit}, candidate {accepted}"


def _panel_html(index: int, row: dict[str, Any], views: list[tuple[str, str, str]]) -> str:
    e = html.escape
    shown = "attacked" if any(k == "attacked" for k, _, _ in views) else views[0][0]
    buttons = "".join(
        f'<button type="button" data-view="{e(k)}" aria-pressed="{str(k == shown).lower()}">{e(label)}</button>'
        for k, label, _ in views
    )
    images = "".join(
        f'<img class="view" data-view="{e(k)}" src="{uri}" alt="{e(label)}"{"" if k == shown else " hidden"}>'
        for k, label, uri in views
    )
    outline = " The inserted feature is outlined in red." if row.get("fnaf_score") is not None else ""
    return (
        f'<div class="panel" id="panel-{index}"><h3>{e(_panel_title(row))}</h3>'
        f'<p>{e(_panel_numbers(row))}.{outline}</p><div class="buttons">{buttons}</div>{images}</div>'
    )
