"""The HTML report of an audit: one self-contained page built from ``results.sqlite``.

:func:`write_report` writes, under ``OUTDIR/report/``:

- ``index.html``: run metadata, a verdict per model x defense (rule on the page; see
  :mod:`reconguard.report.verdicts`), the defense effects with intervals
  (:mod:`reconguard.report.effects`), tables of clean / attacked / noise PSNR, SSIM and NMSE, the
  figures (base64 PNG data URIs) and image panels of the worst slices with buttons that switch
  between target / clean / attacked / defended / error views (inline CSS and JS; nothing is
  fetched from the network);
- ``figures/*.png`` and ``figures/*.pdf``: the same figures for papers and slides;
- ``summary.md`` and ``summary.csv``: per-cell means.

The directory is built beside the old one and swapped in with a rename, so a failed run never
leaves a half-written report. Every string that comes from the database goes through
:func:`html.escape`.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from reconguard.audit.store import DATABASE, Store
from reconguard.errors import ConfigError, DataError
from reconguard.files import atomic_directory, atomic_write
from reconguard.report import plots
from reconguard.report.effects import (
    EFFECT_HEADER,
    EFFECT_NOTE,
    FEATURE_EFFECT_HEADER,
    FEATURE_EFFECT_NOTE,
    DefenseEffect,
    defense_effects,
    effect_table,
    feature_effect_table,
)
from reconguard.report.markdown import summary_markdown
from reconguard.report.panels import data_uri, panels_html
from reconguard.report.summary import (
    ARTEFACT_HEADER,
    ARTEFACT_NOTE,
    FNAF_HEADER,
    PERTURBATION_HEADER,
    artefact_table,
    cell_means,
    fnaf_table,
    perturbation_table,
    slice_rows,
    summary_csv,
)
from reconguard.report.verdict_tables import VERDICT_HEADER, verdict_notes, verdict_table
from reconguard.report.verdicts import GATE_MARGIN_DB, REGIME_DB, Rule, Verdict, verdicts

REPORT_DIR = "report"
#: Keys of an audit config (recorded in the ``runs`` table) that set the quality-gate margin and the
#: regime threshold in dB.
GATE_CONFIG_KEY, REGIME_CONFIG_KEY = "quality_gate_db", "regime_db"
_NUMBER = re.compile(r"-?[0-9.]+(e[-+]?[0-9]+)?%?|n/a")

# name, caption, builder, sentence shown when the records cannot make the figure
_FIGURES: tuple[tuple[str, str, Callable[[Sequence[dict[str, Any]]], Any], str], ...] = (
    (
        "robustness",
        "Mean PSNR and SSIM versus eps per attack (white-box; adaptive for defended models). Solid: "
        "attacked; dashed: random noise matched to the attack (its l2 and l-inf size for l-inf attacks); dotted: "
        "zero-filling of the clean input.",
        plots.robustness_curves,
        "No white-box perturbation cells with an eps: no robustness curves.",
    ),
    (
        "fnaf_hit_rate",
        "FNAF per model and defense: hit rate (hits among accepted candidates) with its 95 % bootstrap interval "
        "over slices, and the score of the worst feature found on each slice (dots; boxes: quartiles) against "
        "the hit threshold (dashed).",
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
        "Defense cost (clean PSNR lost against the undefended model) versus gain (PSNR gained under "
        "the adaptive attack: filled; non-adaptive: hollow), at the largest eps of each attack, with 95 % "
        "bootstrap intervals over slices (the table of defense effects gives the numbers).",
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
.verdict-robust-at-the-tested-budgets{background:#dcf5dc}.verdict-not-fully-tested{background:#eef0f4}
.verdict-unstable-to-noise-at-the-tested-budgets{background:#ffe2bf}
.verdict-not-a-usable-reconstructor-at-this-budget{background:#e4e4e4;color:#555}
table.verdicts td{white-space:normal}table.verdicts td:nth-child(8){min-width:320px;font-size:11px}
ul.notes{font-size:13px;color:#333}
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


def write_report(
    outdir: str | os.PathLike,
    *,
    margin_db: float | None = None,
    regime_db: float | None = None,
    training_notes: Mapping[str, str] | None = None,
) -> Path:
    """Write the report of the audit in ``outdir`` (see the module docstring for the files).

    Args:
        outdir: An audit output directory holding ``results.sqlite``.
        margin_db: Quality-gate margin over zero-filling in dB; ``None``: the last run's config
            value :data:`GATE_CONFIG_KEY` if it has one, else
            :data:`~reconguard.report.verdicts.GATE_MARGIN_DB`.
        regime_db: Matched-noise PSNR drop from which a test is unstable, in dB; ``None``: the last
            run's config value :data:`REGIME_CONFIG_KEY` if it has one, else
            :data:`~reconguard.report.verdicts.REGIME_DB`.
        training_notes: Per model, a sentence about its training shown with its verdicts (see
            :func:`reconguard.report.verdicts.verdicts`).

    Returns:
        The path of ``outdir/report/index.html``.

    Raises:
        DataError: No results database in ``outdir``, it is not one, or it holds no records.
        ConfigError: A negative or non-finite ``margin_db`` or ``regime_db``.
    """
    outdir = Path(outdir)
    database = outdir / DATABASE
    if not database.is_file():
        raise DataError(f"{outdir}: no {DATABASE} here (run 'reconguard audit' first)")
    store = Store(database)
    rows = slice_rows(store.records())
    if not rows:
        raise DataError(f"{database}: no records yet (has the audit finished a unit?)")
    runs = store.runs()
    rule = Rule(margin_db=_setting(runs, GATE_CONFIG_KEY, GATE_MARGIN_DB) if margin_db is None else margin_db,
                regime_db=_setting(runs, REGIME_CONFIG_KEY, REGIME_DB) if regime_db is None else regime_db)
    for label, value in (("quality-gate margin", rule.margin_db), ("regime threshold", rule.regime_db)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"{label} must be a finite number of dB >= 0, got {value!r}")
    cells = cell_means(rows)
    items = verdicts(rows, rule=rule, training_notes=training_notes)
    effects = defense_effects(rows)
    title = f"reconguard audit report: {outdir.resolve().name}"
    with atomic_directory(outdir / REPORT_DIR) as staging:
        figures_dir = staging / "figures"
        figures_dir.mkdir()
        figures = _figures(rows, figures_dir)
        panels = panels_html(store, rows, cells, figures_dir)
        atomic_write(staging / "summary.csv", summary_csv(cells))
        markdown = summary_markdown(items, effects, cells, title=title, rule=rule)
        atomic_write(staging / "summary.md", markdown)
        page = _page(title, runs, (items, effects, rule), cells, figures, panels)
        atomic_write(staging / "index.html", page)
    return outdir / REPORT_DIR / "index.html"


def _setting(runs: Sequence[dict[str, Any]], key: str, default: float) -> float:
    """The value of ``key`` in the last run's config, else ``default``."""
    value = runs[-1]["config"].get(key) if runs and isinstance(runs[-1]["config"], dict) else None
    return default if value is None else value


def _figures(rows: list[dict[str, Any]], directory: Path) -> dict[str, tuple[str, str | None]]:
    """``{name: (caption, PNG data URI)}`` per figure, or ``(missing-figure sentence, None)``."""
    out: dict[str, tuple[str, str | None]] = {}
    for name, caption, build, missing in _FIGURES:
        try:
            fig = build(rows)
        except DataError:
            out[name] = (missing, None)
            continue
        png, _ = plots.save_png_pdf(fig, directory, name)
        out[name] = (caption, data_uri(png.read_bytes()))
    return out


def _figure_html(caption: str, uri: str | None) -> str:
    e = html.escape
    if uri is None:
        return f'<p class="missing">{e(caption)}</p>'
    return f'<figure><img src="{uri}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption></figure>'


#: The figure shown with the defense effects (the others are in the Figures section).
_EFFECTS_FIGURE = "defense_tradeoff"


# -- page ------------------------------------------------------------------------------------------


def _table(
    header: Sequence[str],
    body: Sequence[Sequence[str]],
    row_class: Callable[[Sequence[str]], str] | None = None,
    *,
    css_class: str | None = None,
) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    lines = []
    for cells in body:
        attr = f' class="{e(row_class(cells))}"' if row_class else ""
        lines.append(f"<tr{attr}>" + "".join(f"<td{_align(c)}>{e(str(c))}</td>" for c in cells) + "</tr>")
    attr = f' class="{e(css_class)}"' if css_class else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


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
    return "verdict-" + cells[VERDICT_HEADER.index("verdict")].replace(" ", "-")


def _page(
    title: str,
    runs: list[dict[str, Any]],
    judged: tuple[list[Verdict], list[DefenseEffect], Rule],
    cells: list[dict[str, Any]],
    figures: dict[str, tuple[str, str | None]],
    panels: list[str],
) -> str:
    e = html.escape
    parts = [f"<h1>{e(title)}</h1>", "<h2>Run</h2>", _runs_html(runs), *_verdicts_html(*judged),
             _figure_html(*figures[_EFFECTS_FIGURE])]
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
    parts += [_figure_html(*figure) for name, figure in figures.items() if name != _EFFECTS_FIGURE]
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


def _verdicts_html(items: list[Verdict], effects: list[DefenseEffect], rule: Rule) -> list[str]:
    """The verdicts (rule, table, notes) and the defense effects."""
    parts = ["<h2>Verdicts</h2>", f'<p class="rule">{rule.text()}</p>',
             _table(VERDICT_HEADER, verdict_table(items), _verdict_class, css_class="verdicts")]
    notes = verdict_notes(items)
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Defense effects</h2>")
    perturbation, features = effect_table(effects), feature_effect_table(effects)
    if perturbation:
        parts += [f'<p class="rule">{EFFECT_NOTE}</p>', _table(EFFECT_HEADER, perturbation)]
    if features:
        parts += [f'<p class="rule">{FEATURE_EFFECT_NOTE}</p>', _table(FEATURE_EFFECT_HEADER, features)]
    if not effects:
        parts.append('<p class="missing">No defended cell with an undefended counterpart: no defense effects.</p>')
    return parts
