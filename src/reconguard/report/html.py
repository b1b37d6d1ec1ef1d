"""The HTML report of an audit: one self-contained page built from ``results.sqlite``.

:func:`write_report` writes, under ``OUTDIR/report/``:

- ``index.html``: run metadata, a verdict per model x defense (rule on the page), tables of
  clean / attacked / noise PSNR, SSIM and NMSE, the figures (base64 PNG data URIs) and image panels
  of the worst slices with buttons that switch between target / clean / attacked / defended /
  error views (inline CSS and JS; nothing is fetched from the network);
- ``figures/*.png`` and ``figures/*.pdf``: the same figures for papers and slides;
- ``summary.md`` and ``summary.csv``: per-cell means.

The directory is built beside the old one and swapped in with a rename, so a failed run never
leaves a half-written report. Every string that comes from the database goes through
:func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from reconguard.audit.store import DATABASE, Store
from reconguard.errors import DataError
from reconguard.report import plots
from reconguard.report.summary import (
    ARTEFACT_HEADER,
    ARTEFACT_NOTE,
    FNAF_HEADER,
    PERTURBATION_HEADER,
    VERDICT_HEADER,
    VERDICT_RULE,
    Verdict,
    artefact_table,
    cell_means,
    fnaf_table,
    is_perturbation,
    is_white_box,
    perturbation_table,
    psnr_drop,
    slice_rows,
    sort_key,
    summary_csv,
    summary_markdown,
    verdict_table,
    verdicts,
    write_text,
)
from reconguard.report.tables import show

REPORT_DIR = "report"
_NUMBER = re.compile(r"-?[0-9.]+(e[-+]?[0-9]+)?%?|n/a")
#: At most this many worst-slice panels (one per model x defense x attack family).
MAX_PANELS = 12

# name, caption, builder, sentence shown when the records cannot make the figure
_FIGURES: tuple[tuple[str, str, Callable[[Sequence[dict[str, Any]]], Any], str], ...] = (
    (
        "robustness",
        "Mean PSNR and SSIM versus eps per attack (white-box; adaptive for defended models). "
        "Dashed: same-norm random noise.",
        plots.robustness_curves,
        "No white-box perturbation cells with an eps: no robustness curves.",
    ),
    (
        "fnaf_hit_rate",
        "FNAF hit rate per model and defense (hits among accepted candidates).",
        plots.fnaf_hit_rates,
        "No white-box FNAF cells: no hit-rate bars.",
    ),
    (
        "transfer",
        "Black-box transfer: mean PSNR drop (clean − attacked) of each surrogate × target pair, "
        "undefended models; the framed diagonal is the white-box attack.",
        plots.transfer_heatmap,
        "No transfer cells (surrogate ≠ target model): no transfer heat map.",
    ),
    (
        "defense_tradeoff",
        "Defense cost (clean PSNR lost against the undefended model) versus gain (PSNR "
        "gained under the adaptive attack), at the largest eps of each attack.",
        plots.defense_tradeoff,
        "No defended cells with an undefended counterpart: no cost/gain plot.",
    ),
)

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 40px;color:#1d1d1f}
h1{margin-top:24px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:12px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left}th{background:#f4f4f6}
td{white-space:nowrap}td.num{text-align:right}
.verdict-vulnerable{background:#ffd9d6}.verdict-partly-vulnerable{background:#fff1cc}
.verdict-robust-at-the-tested-budgets{background:#dcf5dc}
figure{margin:16px 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:12px}
.missing{color:#8a5a00;background:#fff8e6;padding:4px 8px;border-left:3px solid #f0b400}
.rule{background:#f7f7f9;padding:8px 12px;border-left:3px solid #999}
.panels{display:flex;flex-wrap:wrap;gap:18px}.panel{border:1px solid #ddd;padding:8px;border-radius:6px}
.panel h3{font-size:13px;margin:0 0 4px}.panel p{margin:0 0 6px;font-size:12px;color:#444}
.panel img.view{width:320px;height:auto;image-rendering:pixelated;display:block}
.panel img.view[hidden]{display:none}
.buttons{margin-bottom:6px}.buttons button{font-size:12px;margin:0 4px 4px 0;cursor:pointer}
.buttons button[aria-pressed=true]{background:#1d1d1f;color:#fff}
pre{background:#f7f7f9;padding:8px;overflow:auto;font-size:12px}
"""

_JS = """
document.querySelectorAll('.panel').forEach(function (panel) {
  var buttons = panel.querySelectorAll('button[data-view]');
  var views = panel.querySelectorAll('img.view');
  buttons.forEach(function (button) {
    button.addEventListener('click', function () {
      views.forEach(function (img) { img.hidden = img.dataset.view !== button.dataset.view; });
      buttons.forEach(function (b) { b.setAttribute('aria-pressed', String(b === button)); });
    });
  });
});
"""


def write_report(outdir: str | os.PathLike) -> Path:
    """Write the report of the audit in ``outdir`` (see the module docstring for the files).

    Args:
        outdir: An audit output directory holding ``results.sqlite``.

    Returns:
        The path of ``outdir/report/index.html``.

    Raises:
        DataError: No results database in ``outdir``, it is not one, or it holds no records.
    """
    outdir = Path(outdir)
    database = outdir / DATABASE
    if not database.is_file():
        raise DataError(f"{outdir}: no {DATABASE} here (run 'reconguard audit' first)")
    store = Store(database)
    rows = slice_rows(store.records())
    if not rows:
        raise DataError(f"{database}: no records yet (has the audit finished a unit?)")
    cells = cell_means(rows)
    items = verdicts(rows)
    title = f"reconguard audit report: {outdir.resolve().name}"
    with _staged(outdir / REPORT_DIR) as staging:
        figures_dir = staging / "figures"
        figures_dir.mkdir()
        figures = _figures(rows, figures_dir)
        panels = _panels(store, rows, cells, figures_dir)
        write_text(staging / "summary.csv", summary_csv(cells))
        write_text(staging / "summary.md", summary_markdown(items, cells, title=title))
        page = _page(title, store.runs(), items, cells, figures, panels)
        write_text(staging / "index.html", page)
    return outdir / REPORT_DIR / "index.html"


@contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A fresh directory beside ``final``, swapped into its place if the block succeeds."""
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        yield staging
        os.chmod(staging, 0o755)
        trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        try:
            if final.exists():
                os.replace(final, trash / "old")
            os.replace(staging, final)
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _figures(rows: list[dict[str, Any]], directory: Path) -> list[tuple[str, str | None]]:
    """``(caption, PNG data URI)`` per figure, or ``(missing-figure sentence, None)``."""
    out: list[tuple[str, str | None]] = []
    for name, caption, build, missing in _FIGURES:
        try:
            fig = build(rows)
        except DataError:
            out.append((missing, None))
            continue
        png, _ = plots.save_png_pdf(fig, directory, name)
        out.append((caption, _data_uri(png.read_bytes())))
    return out


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- worst-slice panels ----------------------------------------------------------------------------


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
    loss = row.get("fnaf_feature_loss")
    return (float(row.get("fnaf_accepted") or 0.0), -np.inf if loss is None else float(loss))


def _panels(store: Store, rows: list[dict[str, Any]], cells: list[dict[str, Any]], directory: Path) -> list[str]:
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
        (k, labels[k], _data_uri(plots.view_png(images[k], vmax=peak, outline=mask))) for k in labels if k in images
    ]
    for index, twin in enumerate(twins):
        other = store.panel(twin["cell_id"], row["volume"], row["slice"]) or {}
        if "attacked" in other:
            png = plots.view_png(other["attacked"], vmax=peak, outline=mask)
            views.append((f"defended-{index}", f"defended: {twin['defense']}", _data_uri(png)))
    if "attacked" in images and "target" in images:
        error = np.abs(images["attacked"] - images["target"])
        png = plots.view_png(error, vmax=float(error.max()), cmap="inferno", outline=mask)
        views.append(("error", "error |attacked − target|", _data_uri(png)))
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
    return f"FNAF feature loss {show(row.get('fnaf_feature_loss'), '{:.3g}')}: {hit}, candidate {accepted}"


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
    outline = " The inserted feature is outlined in red." if row.get("fnaf_feature_loss") is not None else ""
    return (
        f'<div class="panel" id="panel-{index}"><h3>{e(_panel_title(row))}</h3>'
        f'<p>{e(_panel_numbers(row))}.{outline}</p><div class="buttons">{buttons}</div>{images}</div>'
    )


# -- page ------------------------------------------------------------------------------------------


def _table(
    header: Sequence[str], body: Sequence[Sequence[str]], row_class: Callable[[Sequence[str]], str] | None = None
) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    lines = []
    for cells in body:
        attr = f' class="{e(row_class(cells))}"' if row_class else ""
        lines.append(f"<tr{attr}>" + "".join(f"<td{_align(c)}>{e(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _align(cell: str) -> str:
    """Numbers (and ``n/a``) right-aligned, words left-aligned."""
    return ' class="num"' if _NUMBER.fullmatch(cell) else ""


_UNKNOWN = {"finished": "not finished", "git_revision": "unknown"}


def _runs_html(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return '<p class="missing">No run metadata in the database.</p>'
    e = html.escape
    header = ("run", "started", "finished", "git revision", "device", "world size", "host")
    columns = ("run_id", "started", "finished", "git_revision", "device", "world_size", "host")
    body = [[str(r[k] if r[k] is not None else _UNKNOWN.get(k, "")) for k in columns] for r in runs]
    last = runs[-1]
    versions = _table(("package", "version"), [[str(k), str(v)] for k, v in sorted(last["versions"].items())])
    config = e(json.dumps(last["config"], indent=2, sort_keys=True))
    return (
        _table(header, body) + f"<h3>Versions (run {e(str(last['run_id']))})</h3>{versions}"
        f"<details><summary>Configuration (run {e(str(last['run_id']))})</summary><pre>{config}</pre></details>"
    )


def _verdict_class(cells: Sequence[str]) -> str:
    return "verdict-" + cells[-1].replace(" ", "-")


def _page(
    title: str,
    runs: list[dict[str, Any]],
    items: list[Verdict],
    cells: list[dict[str, Any]],
    figures: list[tuple[str, str | None]],
    panels: list[str],
) -> str:
    e = html.escape
    parts = [
        f"<h1>{e(title)}</h1>",
        "<h2>Run</h2>",
        _runs_html(runs),
        "<h2>Verdicts</h2>",
        f'<p class="rule">{VERDICT_RULE}</p>',
        _table(VERDICT_HEADER, verdict_table(items), _verdict_class),
    ]
    perturbation, fnaf = perturbation_table(cells), fnaf_table(cells)
    parts.append("<h2>Perturbation attacks (mean over slices)</h2>")
    parts.append(
        _table(PERTURBATION_HEADER, perturbation) if perturbation else '<p class="missing">No perturbation cells.</p>'
    )
    parts.append("<h2>FNAF (false-negative adversarial features)</h2>")
    parts.append(_table(FNAF_HEADER, fnaf) if fnaf else '<p class="missing">No FNAF cells.</p>')
    artefacts = artefact_table(cells)
    if artefacts:
        parts += ["<h2>Artefacts (error map attacked − clean)</h2>", f'<p class="rule">{ARTEFACT_NOTE}</p>',
                  _table(ARTEFACT_HEADER, artefacts)]
    parts.append("<h2>Figures</h2>")
    for caption, uri in figures:
        parts.append(
            f'<figure><img src="{uri}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption></figure>'
            if uri
            else f'<p class="missing">{e(caption)}</p>'
        )
    parts.append("<h2>Worst slices</h2>")
    parts.append(
        '<div class="panels">' + "".join(panels) + "</div>"
        if panels
        else '<p class="missing">No image panels stored for these cells.</p>'
    )
    parts.append(
        '<p>Also in this directory: <a href="summary.md">summary.md</a>, <a href="summary.csv">'
        'summary.csv</a> and <a href="figures/">figures/</a> (PNG and PDF).</p>'
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
        f"<body>{''.join(parts)}<script>{_JS}</script></body></html>\n"
    )
