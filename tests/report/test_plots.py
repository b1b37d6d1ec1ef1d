"""Report figures: a legend entry for every series, one-eps sweeps, a cost/gain plot readable near zero."""

from __future__ import annotations

import pytest

from reconguard.report import plots

SLICES = (("vol1", 0), ("vol1", 1), ("vol2", 0))


def rows_of(model, defense, attack, eps, *, clean=30.0, drop=2.0, gain=0.0, zero_filled=26.0):
    cell = dict(cell_id=f"{model}-{defense}-{attack}-{eps}", model=model, defense=defense, attack=attack,
                source=model, eps=eps, seed=0, acceleration=4.0)
    out = []
    for k, (volume, index) in enumerate(SLICES):
        psnr = clean + 0.01 * k
        out.append(dict(cell, volume=volume, slice=index, clean_psnr=psnr, attacked_psnr=psnr - drop + gain,
                        noise_psnr=psnr - 0.1, nonadaptive_psnr=psnr - drop + gain, clean_ssim=0.8,
                        attacked_ssim=0.7, noise_ssim=0.79, zero_filled_psnr=zero_filled + 0.01 * k,
                        zero_filled_ssim=0.6))
    return out


def legend_texts(fig):
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def test_every_series_of_the_robustness_curves_has_a_legend_entry():
    # the demo's layout: zero-filled and the defense only under the second attack (alphabetically)
    rows = []
    for eps in (0.01, 0.05):
        rows += rows_of("unet", "none", "pgd-image", eps) + rows_of("unet", "none", "pgd-kspace", eps)
        rows += rows_of("zero-filled", "none", "pgd-kspace", eps, clean=26.0)
        rows += rows_of("unet", "cyclic", "pgd-kspace", eps)
    fig = plots.robustness_curves(rows)
    texts = legend_texts(fig)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    # (PSNR, SSIM) x (attacked + noise of unet under pgd-image, of 3 series under pgd-kspace; zero-filled line each)
    assert len(labels) == 2 * (2 + 1) + 2 * (3 * 2 + 1)
    assert set(labels) <= set(texts) and len(texts) == len(set(texts))
    for entry in ("zero-filled: attacked", "zero-filled: matched noise", "unet + cyclic: attacked (adaptive)",
                  "unet + cyclic: matched noise", "zero-filled, clean input"):
        assert entry in texts


def test_a_sweep_with_one_eps_is_drawn_as_points_on_a_readable_axis():
    rows = rows_of("unet", "none", "pgd-kspace", 0.02) + rows_of("modl", "none", "pgd-kspace", 0.02, drop=1.0)
    fig = plots.robustness_curves(rows)
    fig.canvas.draw()
    psnr = fig.axes[0]
    low, high = psnr.get_xlim()
    assert low == pytest.approx(0.01) and high == pytest.approx(0.03)
    assert list(psnr.get_xticks()) == [0.02] and psnr.get_xticklabels()[0].get_text() == "0.02"
    assert psnr.xaxis.get_offset_text().get_text() == ""
    series = [line for line in psnr.get_lines() if len(line.get_xdata()) == 1]
    assert len(series) == 4 and all(line.get_marker() not in (None, "None", "") for line in series)
    noise = [line for line in series if "noise" in line.get_label()]
    assert len(noise) == 2 and all(line.get_ydata()[0] == pytest.approx(29.91) for line in noise)


def test_cost_gain_plot_is_readable_when_every_point_is_near_zero():
    rows = []
    for defense, gain in (("cyclic", 0.002), ("smooth", -0.001)):
        rows += rows_of("unet", "none", "pgd-kspace", 0.05)
        rows += rows_of("unet", defense, "pgd-kspace", 0.05, gain=gain)
    fig = plots.defense_tradeoff(rows)
    fig.canvas.draw()
    ax = fig.axes[0]
    for low, high in (ax.get_xlim(), ax.get_ylim()):
        assert low < 0 < high and high - low >= 1.0
    assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
    texts = legend_texts(fig)
    assert texts == [f"unet + {d}, pgd-kspace eps 0.05 4x: {kind}" for d in ("cyclic", "smooth")
                     for kind in ("adaptive", "non-adaptive")]
    assert [c.get_label() for c in ax.containers] == texts
