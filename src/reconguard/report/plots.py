"""Figures of an audit report, drawn from slice rows (:func:`reconguard.report.summary.slice_rows`).

Each function returns a :class:`matplotlib.figure.Figure` on an explicit Agg canvas (never
``pyplot``, so no global state and no display); :func:`save_png_pdf` writes one as PNG and PDF.
matplotlib is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reconguard.errors import DataError
from reconguard.metrics import interval
from reconguard.report.effects import defense_effects
from reconguard.report.figures import save_figure
from reconguard.report.summary import group, is_perturbation, is_white_box, mean, per_slice, psnr_drop, sort_key

_FEATURE_RGBA = (255, 59, 48, 255)
_PANEL_ORDER = ("target", "clean", "attacked", "nonadaptive", "noise")


def save_png_pdf(fig: Any, directory: Path, name: str) -> tuple[Path, Path]:
    """Save ``fig`` as ``directory/name.png`` and ``directory/name.pdf`` (atomically)."""
    png = save_figure(fig, directory / f"{name}.png")
    fig.set_layout_engine("none")  # keep the layout of the PNG: solving it again doubles the time
    return png, save_figure(fig, directory / f"{name}.pdf")


def _figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional dependency (extra 'plot'): imported on use
    from matplotlib.figure import Figure  # optional dependency (extra 'plot'): imported on use

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _colors(pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """One colour per model x defense: the model's dark tab20 shade undefended, its light shade defended."""
    from matplotlib import colormaps  # optional dependency (extra 'plot'): imported on use

    cycle = colormaps["tab20"].colors
    models = sorted({model for model, _ in pairs})
    return {(m, d): cycle[(2 * models.index(m) + (d != "none")) % len(cycle)] for m, d in pairs}


def _markers(pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """One marker per defense (circles undefended), so defenses sharing a light shade stay apart."""
    defenses = sorted({d for _, d in pairs}, key=lambda d: (d != "none", d))
    return {(m, d): "os^Dvp"[defenses.index(d) % 6] for m, d in pairs}


def _label(model: str, defense: str) -> str:
    return model if defense == "none" else f"{model} + {defense}"


def robustness_curves(rows: Sequence[dict[str, Any]]) -> Any:
    """Mean PSNR and SSIM versus eps of every white-box perturbation attack.

    One row of axes per attack (PSNR left, SSIM right), one colour and marker per model x defense
    (defended models under the adaptive attack): attacked solid with filled markers, the matched
    noise baseline dashed with hollow markers, zero-filling of the clean input dotted grey. Every
    series has an entry in the figure's legend. An attack with one eps is drawn as points on an
    axis with that one tick.

    Raises:
        DataError: No white-box perturbation cell with an eps.
    """
    chosen = [r for r in rows if is_white_box(r) and is_perturbation(r) and r["eps"] is not None]
    stats = group(chosen, ("attack", "model", "defense", "eps"))
    if not stats:
        raise DataError("robustness curves: no white-box perturbation cells with an eps")
    attacks = sorted({k[0] for k in stats})
    pairs = sorted({k[1:3] for k in stats}, key=sort_key)
    colors, markers = _colors(pairs), _markers(pairs)
    fig = _figure(12.5, 3.0 * len(attacks) + 0.6)
    axes = fig.subplots(len(attacks), 2, squeeze=False)
    for row, attack in zip(axes, attacks):
        for pair, color in colors.items():
            points = sorted((k[3], s) for k, s in stats.items() if k[0] == attack and k[1:3] == pair)
            if not points:
                continue
            eps, style = [p[0] for p in points], dict(marker=markers[pair], color=color)
            attacked = "attacked (adaptive)" if pair[1] != "none" else "attacked"
            for ax, metric in zip(row, ("psnr", "ssim")):
                ax.plot(eps, [_nan(s[f"attacked_{metric}"]) for _, s in points], "-", **style,
                        label=f"{_label(*pair)}: {attacked}")
                ax.plot(eps, [_nan(s[f"noise_{metric}"]) for _, s in points], "--", **style, alpha=0.7,
                        markerfacecolor="none", label=f"{_label(*pair)}: matched noise")
        own = [r for r in chosen if r["attack"] == attack]
        for ax, metric in zip(row, ("psnr", "ssim")):
            zero = mean(r.get(f"zero_filled_{metric}") for r in own)
            if zero is not None:
                ax.axhline(zero, color="0.4", linestyle=":", linewidth=1.2, label="zero-filled, clean input")
            _eps_axis(ax, sorted({k[3] for k in stats if k[0] == attack}))
        for ax, metric in zip(row, ("PSNR (dB)", "SSIM")):
            ax.set(title=f"{attack}: {metric.split()[0]} vs eps", xlabel="eps", ylabel=metric)
            ax.grid(alpha=0.3)
    _figure_legend(fig, axes.flat)
    return fig


def _eps_axis(ax: Any, eps: list[float]) -> None:
    """Plain tick labels; one eps gets a symmetric range around it and a single tick."""
    if len(eps) == 1:
        centre = eps[0]
        half = 0.5 * abs(centre) if centre else 1.0
        ax.set_xlim(centre - half, centre + half)
        ax.set_xticks([centre], [f"{centre:g}"])
    ax.ticklabel_format(axis="y", useOffset=False)


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend for the whole figure (right of the axes) with every labelled series once."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize=8)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def fnaf_hit_rates(rows: Sequence[dict[str, Any]]) -> Any:
    """FNAF per model x defense: the hit rate with its 95 % interval over slices (left), and the
    distribution of the worst feature's score over slices (right: one dot per slice and seed, a box
    of the quartiles, the hit threshold dashed), so a reader sees how far each model is from it.

    Raises:
        DataError: No white-box FNAF cell.
    """
    accepted: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if is_white_box(r) and not is_perturbation(r) and (r.get("fnaf_accepted") or 0) >= 0.5:
            accepted.setdefault((r["model"], r["defense"]), []).append(r)
    if not accepted:
        raise DataError("FNAF hit rates: no white-box FNAF cells")
    pairs = sorted(accepted, key=sort_key)
    colors = _colors(pairs)
    fig = _figure(max(7.0, 1.6 * len(pairs) + 3.0), 3.8)
    rate_ax, score_ax = fig.subplots(1, 2)
    for i, pair in enumerate(pairs):
        hits = per_slice(accepted[pair], lambda r: float((r.get("fnaf_hit") or 0) >= 0.5))
        rate = interval(hits)
        if rate is not None:
            rate_ax.bar(i, 100 * rate.mean, color=colors[pair], yerr=[[100 * (rate.mean - rate.low)],
                        [100 * (rate.high - rate.mean)]], capsize=4)
            rate_ax.annotate(f"{sum(h >= 0.5 for h in hits if h is not None)}/{rate.n}", (i, 100 * rate.high),
                             ha="center", va="bottom", fontsize=8)
        scores = [r["fnaf_score"] for r in accepted[pair] if r.get("fnaf_score") is not None]
        if scores:
            score_ax.boxplot([scores], positions=[i], widths=0.5, showfliers=False)
            jitter = np.linspace(-0.15, 0.15, len(scores)) if len(scores) > 1 else [0.0]
            score_ax.scatter(i + np.asarray(jitter), scores, s=12, color=colors[pair], zorder=3)
    gammas = {r.get("fnaf_gamma") for pair in pairs for r in accepted[pair]} - {None}
    for gamma in gammas:
        score_ax.axhline(gamma, color="tab:red", linestyle="--", linewidth=1, label=f"hit threshold {gamma:g}")
    labels = [_label(*pair) for pair in pairs]
    for ax in (rate_ax, score_ax):
        ax.set_xticks(range(len(pairs)), labels, rotation=20, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    rate_ax.set(ylim=(0, 110), ylabel="hit rate (%)", title="FNAF hit rate, 95 % interval")
    score_ax.set(ylabel="score of the worst feature", title="FNAF score per slice")
    if gammas:
        score_ax.legend(fontsize=8)
    return fig


def transfer_setting(rows: Sequence[dict[str, Any]]) -> tuple[str, float | None] | None:
    """``(attack, eps)`` shown by :func:`transfer_heatmap`: the setting with the most undefended
    transfer cells (ties: largest eps); ``None`` without transfer cells."""
    counts: dict[tuple, set] = {}
    for r in rows:
        if not is_white_box(r) and r["defense"] == "none":
            counts.setdefault((r["attack"], r["eps"]), set()).add(r["cell_id"])
    if not counts:
        return None
    return max(counts, key=lambda k: (len(counts[k]), -math.inf if k[1] is None else k[1]))


def transfer_heatmap(rows: Sequence[dict[str, Any]]) -> Any:
    """Mean PSNR drop (clean − attacked) of every surrogate x target pair, undefended models.

    The attack and eps are :func:`transfer_setting`; the diagonal is the white-box attack, framed.

    Raises:
        DataError: No transfer cell.
    """
    setting = transfer_setting(rows)
    if setting is None:
        raise DataError("transfer heat map: no transfer cells (source != model)")
    drops: dict[tuple[str, str], list[float | None]] = {}
    for r in rows:
        if r["defense"] == "none" and (r["attack"], r["eps"]) == setting:
            drops.setdefault((r["source"], r["model"]), []).append(psnr_drop(r))
    names = sorted({n for pair in drops for n in pair})
    matrix = np.full((len(names), len(names)), np.nan)
    for (source, model), values in drops.items():
        matrix[names.index(source), names.index(model)] = _nan(mean(values))
    fig = _figure(1.3 * len(names) + 3.0, 1.1 * len(names) + 1.6)
    ax = fig.subplots()
    shown = ax.imshow(np.ma.masked_invalid(matrix), cmap="Reds", vmin=0.0)
    fig.colorbar(shown, ax=ax, label="PSNR drop (dB)")
    dark = 0.6 * np.nanmax(matrix) if np.isfinite(matrix).any() else np.inf
    for i, j in np.ndindex(matrix.shape):
        value = matrix[i, j]
        ax.text(
            j,
            i,
            "n/a" if np.isnan(value) else f"{value:.1f}",
            ha="center",
            va="center",
            fontsize=9,
            color="white" if value > dark else "black",
        )
    for i in range(len(names)):
        ax.add_patch(_frame(i))
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_yticks(range(len(names)), names)
    eps = "" if setting[1] is None else f", eps {setting[1]:g}"
    ax.set(xlabel="target model", ylabel="surrogate (source)", title=f"transfer: {setting[0]}{eps}")
    return fig


def _frame(i: int) -> Any:
    from matplotlib.patches import Rectangle  # optional dependency (extra 'plot'): imported on use

    return Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5)


def defense_tradeoff(rows: Sequence[dict[str, Any]]) -> Any:
    """Defense cost (x) versus gain (y) with their 95 % intervals over slices.

    One colour and marker per defended model x attack x acceleration
    (:func:`reconguard.report.effects.defense_effects`, largest shared eps; markers of decreasing
    size, so coinciding points stay visible): the gain under the adaptive attack filled, under the
    non-adaptive attack hollow. The axes always span at least 1 dB and include 0, so
    points near zero stay readable.

    Raises:
        DataError: No defended cell with an undefended twin.
    """
    from matplotlib import colormaps  # optional dependency (extra 'plot'): imported on use

    effects = [e for e in defense_effects(rows) if e.cost is not None and e.eps is not None]
    if not effects:
        raise DataError("defense trade-off: no defended cell with an undefended counterpart")
    cycle = colormaps["tab10"].colors
    fig = _figure(9.0, 4.8)
    ax = fig.subplots()
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axvline(0, color="grey", linewidth=0.8)
    xs, ys = [0.0], [0.0]
    for index, e in enumerate(effects):
        name = f"{_label(e.model, e.defense)}, {e.attack} eps {e.eps:g} {e.acceleration:g}x"
        for gain, kind, face in ((e.gain_adaptive, "adaptive", None), (e.gain_nonadaptive, "non-adaptive", "none")):
            if gain is None:
                continue
            ax.errorbar(e.cost.mean, gain.mean, xerr=_error(e.cost), yerr=_error(gain), fmt="osD^vp"[index % 6],
                        color=cycle[index % len(cycle)], markerfacecolor=face, markersize=9 - index % 3 * 1.5,
                        capsize=3, alpha=0.85, label=f"{name}: {kind}")
            xs += [e.cost.low, e.cost.high]
            ys += [gain.low, gain.high]
    ax.set_xlim(*_readable_range(xs))
    ax.set_ylim(*_readable_range(ys))
    ax.ticklabel_format(useOffset=False)
    ax.set(xlabel="clean PSNR cost of the defense (dB)", ylabel="PSNR gain under attack (dB)",
           title="defense cost vs gain, 95 % intervals (upper left is better)")
    ax.grid(alpha=0.3)
    _figure_legend(fig, [ax])
    return fig


def _error(value: Any) -> list[list[float]]:
    return [[max(value.mean - value.low, 0.0)], [max(value.high - value.mean, 0.0)]]


def _readable_range(values: list[float], *, minimum: float = 1.0) -> tuple[float, float]:
    """Limits around ``values`` with 15 % padding, at least ``minimum`` wide."""
    low, high = min(values), max(values)
    if high - low < minimum:
        middle = (low + high) / 2
        low, high = middle - minimum / 2, middle + minimum / 2
    pad = 0.15 * (high - low)
    return low - pad, high + pad


def slice_panel(images: dict[str, np.ndarray], *, title: str) -> Any:
    """One slice: target and reconstructions on one grey scale, then ``|attacked − target|``.

    ``images`` is a :meth:`~reconguard.audit.store.Store.panel` dict; ``feature_mask`` (FNAF) is
    outlined and ``max_value`` is the top of the grey scale.

    Shapes:
        every image: ``(h, w)``
    """
    shown = [k for k in _PANEL_ORDER if k in images]
    if not shown:
        raise DataError(f"slice panel {title!r}: no images")
    peak = panel_peak(images)
    mask = images.get("feature_mask")
    errors = "attacked" in images and "target" in images
    ncols = len(shown) + errors
    fig = _figure(2.0 * ncols + 0.4, 2.5, layout=None)
    # fixed margins: a layout engine would double the drawing time of these small panels
    fig.subplots_adjust(left=0.01, right=1 - 0.45 / fig.get_figwidth(), bottom=0.02, top=0.8, wspace=0.08)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax, name in zip(axes, shown):
        ax.imshow(images[name], cmap="gray", vmin=0.0, vmax=peak)
        _decorate(ax, "non-adaptive" if name == "nonadaptive" else name, mask)
    if errors:
        ax = axes[-1]
        err = np.abs(images["attacked"] - images["target"])
        fig.colorbar(ax.imshow(err, cmap="inferno", vmin=0.0), ax=ax, fraction=0.046)
        _decorate(ax, "|attacked − target|", mask)
    fig.suptitle(title, fontsize=9)
    return fig


def _decorate(ax: Any, label: str, mask: np.ndarray | None) -> None:
    ax.set_title(label, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if mask is not None and 0 < float(mask.sum()) < mask.size:
        ax.contour(mask.astype(float), levels=[0.5], colors="#ff3b30", linewidths=0.8)


def panel_peak(images: dict[str, np.ndarray]) -> float:
    """Top of the grey scale: the stored ``max_value``, else the target's (or any image's) maximum."""
    if "max_value" in images and float(images["max_value"]) > 0:
        return float(images["max_value"])
    reference = images.get("target", next(iter(v for k, v in images.items() if k in _PANEL_ORDER), None))
    peak = float(np.max(reference)) if reference is not None else 1.0
    return peak if peak > 0 else 1.0


def view_png(image: np.ndarray, *, vmax: float, cmap: str = "gray", outline: np.ndarray | None = None) -> bytes:
    """PNG bytes of one image at its native resolution, with an optional mask outline in red.

    Shapes:
        image, outline: ``(h, w)``
    """
    from matplotlib import colormaps  # optional dependency (extra 'plot'): imported on use
    from matplotlib.image import imsave  # optional dependency (extra 'plot'): imported on use

    scaled = np.clip(np.nan_to_num(image / (vmax if vmax > 0 else 1.0)), 0.0, 1.0)
    rgba = colormaps[cmap](scaled, bytes=True)
    if outline is not None:
        rgba[_edge(outline > 0.5)] = _FEATURE_RGBA
    buffer = io.BytesIO()
    imsave(buffer, rgba, format="png")
    return buffer.getvalue()


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner
