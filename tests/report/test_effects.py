"""Defense effects: paired gains with bootstrap intervals, "no measurable effect", detector alarm rates."""

from __future__ import annotations

import pytest

from reconguard.report.effects import (
    DefenseEffect,
    Interval,
    defense_effects,
    effect_label,
    effect_table,
    flag_label,
    interval,
)

SLICES = [("vol1", i) for i in range(4)] + [("vol2", i) for i in range(4)]


def cell_rows(defense, *, eps=0.05, seed=0, clean, attacked, nonadaptive=None, flagged=None):
    """Slice rows of one white-box cell of model ``m``; per-slice values come from the lists."""
    cell = dict(cell_id=f"m-{defense}-{eps}-{seed}", model="m", defense=defense, attack="pgd-kspace", source="m",
                eps=eps, seed=seed, acceleration=4.0)
    rows = []
    for k, (volume, index) in enumerate(SLICES):
        row = dict(cell, volume=volume, slice=index, clean_psnr=clean[k], attacked_psnr=attacked[k])
        if nonadaptive is not None:
            row["nonadaptive_psnr"] = nonadaptive[k]
        for condition, flags in (flagged or {}).items():
            row[f"{condition}_flagged"] = flags[k]
        rows.append(row)
    return rows


BASE_CLEAN = [30.0, 31.0, 29.5, 30.5, 30.0, 31.5, 29.0, 30.0]
BASE_ATTACKED = [20.0, 21.0, 19.0, 22.0, 20.5, 21.5, 19.5, 20.0]
#: Gains that straddle zero (mean 0): no measurable effect.
NOISE = [0.4, -0.5, 0.3, -0.2, 0.1, -0.3, 0.5, -0.3]


def test_gain_whose_interval_contains_zero_is_no_measurable_effect():
    rows = cell_rows("none", clean=BASE_CLEAN, attacked=BASE_ATTACKED)
    rows += cell_rows(
        "cyclic",
        clean=[c - 0.2 for c in BASE_CLEAN],  # costs 0.2 dB on every slice
        attacked=[a + n for a, n in zip(BASE_ATTACKED, NOISE)],  # adaptive: nothing left of the gain
        nonadaptive=[a + 3.0 + n for a, n in zip(BASE_ATTACKED, NOISE)],  # non-adaptive: +3 dB
        flagged={"clean": [0, 0, 1, 0, 0, 0, 0, 0], "attacked": [1, 1, 0, 1, 1, 1, 0, 1],
                 "nonadaptive": [1] * 8},
    )
    (effect,) = defense_effects(rows)
    assert (effect.model, effect.defense, effect.attack, effect.eps, effect.slices) == ("m", "cyclic", "pgd-kspace",
                                                                                        0.05, 8)
    assert effect.cost.mean == pytest.approx(0.2) and effect.cost.measurable
    assert effect.gain_adaptive.mean == pytest.approx(0.0, abs=1e-12)
    assert effect.gain_adaptive.low < 0 < effect.gain_adaptive.high and not effect.gain_adaptive.measurable
    assert effect.gain_nonadaptive.mean == pytest.approx(3.0) and effect.gain_nonadaptive.low > 2.0
    assert effect.flagged == {"nonadaptive": (8, 8), "attacked": (6, 8), "clean": (1, 8)}
    row = effect_table([effect])[0]
    assert row[6] == "+0.20 [+0.20, +0.20]"
    assert row[7].startswith("+3.00 [") and "no measurable" not in row[7]
    assert row[8].startswith("no measurable effect (+0.00 [-") and row[8].endswith("])")
    assert row[9:] == ["8/8 (100%)", "6/8 (75%)", "1/8 (12%)"]


def test_pairs_by_seed_and_slice_and_uses_the_largest_shared_eps():
    rows = []
    for seed, shift in ((0, 1.0), (1, 3.0)):
        rows += cell_rows("none", seed=seed, clean=BASE_CLEAN, attacked=BASE_ATTACKED)
        rows += cell_rows("smooth", seed=seed, clean=BASE_CLEAN, attacked=[a + shift for a in BASE_ATTACKED])
        rows += cell_rows("smooth", seed=seed, eps=0.01, clean=BASE_CLEAN, attacked=BASE_ATTACKED)
    rows += cell_rows("smooth", eps=0.1, clean=BASE_CLEAN, attacked=BASE_ATTACKED)  # no undefended twin
    (effect,) = defense_effects(rows)
    assert effect.eps == 0.05 and effect.slices == 8 and effect.flagged == {}
    assert effect.gain_adaptive == Interval(2.0, 2.0, 2.0, 8)  # seeds averaged per slice: (1 + 3) / 2
    assert effect.gain_nonadaptive is None and effect_label(effect.gain_nonadaptive) == "n/a"


def test_labels_and_intervals():
    assert interval([None, float("nan")]) is None
    one = interval([0.7])
    assert one == Interval(0.7, 0.7, 0.7, 1) and effect_label(one) == "+0.70 (1 slice: no interval)"
    assert not one.measurable
    assert effect_label(Interval(0.0, 0.0, 0.0, 5)) == "no measurable effect (+0.00 [+0.00, +0.00])"
    assert effect_label(Interval(-1.0, -1.5, -0.5, 5)) == "-1.00 [-1.50, -0.50]"
    assert flag_label(None) == "n/a" and flag_label((0, 3)) == "0/3 (0%)"
    assert DefenseEffect("m", "d", "a", 0.1, 4.0, 0, None, None, None).flagged == {}
