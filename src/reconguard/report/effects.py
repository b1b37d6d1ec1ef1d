"""Defense effects: what each defense gains under attack and costs on clean data, with intervals.

For every defended white-box cell with an undefended twin (same model, attack, eps, seed and
acceleration), per slice:

- ``cost``: clean PSNR of the undefended model minus clean PSNR with the defense;
- ``gain_nonadaptive``: PSNR with the defense under the attack crafted on the bare model
  (condition ``nonadaptive``) minus the undefended model's attacked PSNR;
- ``gain_adaptive``: PSNR with the defense under the adaptive attack through it (``attacked``)
  minus the undefended model's attacked PSNR;
- feature attacks (FNAF) also: the hit rate without and with the defense (the features searched
  on each), their paired difference and the change of the criterion's score.

Seeds are averaged per slice, then a percentile bootstrap over slices gives a 95 % interval
(:func:`reconguard.metrics.bootstrap_ci`); an interval that contains 0 is
reported as "no measurable effect". Defenses with a detector (the cyclic defense with a
calibrated threshold) also record, per slice and input, whether it flagged the input
(metric ``flagged``): flagged attacked inputs are true alarms, flagged clean inputs false alarms.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from reconguard.metrics import Interval, interval
from reconguard.report.summary import is_perturbation, is_white_box, mean, sort_key
from reconguard.report.tables import show

#: Confidence level of the intervals.
LEVEL = 0.95
#: Inputs the detector is evaluated on, in table order: (condition, what it is).
DETECTOR_INPUTS = (("nonadaptive", "attacked, non-adaptive"), ("attacked", "attacked, adaptive"),
                   ("clean", "clean"))
EFFECT_NOTE = (
    "Gain: PSNR with the defense minus PSNR without it under the same attack, budget, seed and slices — "
    "non-adaptive: the attack crafted on the undefended model, then defended; adaptive: the attack through the "
    "defense. Cost: clean PSNR lost to the defense. Mean over slices with a 95 % bootstrap interval (seeds "
    "averaged per slice), at the largest eps both were attacked with; an interval containing 0 is "
    "<b>no measurable effect</b>. Detector columns: slices whose input the defense's detector flagged "
    "(score above its calibrated threshold) — on attacked inputs the true-alarm rate, on clean inputs the "
    "false-alarm rate."
)


def effect_label(value: Interval | None) -> str:
    """``+1.20 [+0.80, +1.60]``, ``no measurable effect (+0.10 [-0.20, +0.40])`` or ``n/a``."""
    if value is None:
        return "n/a"
    text = value.label()
    return text if value.measurable or value.n < 2 else f"no measurable effect ({text})"


@dataclass(frozen=True)
class DefenseEffect:
    """Cost and gains of one defense on one model under one attack (see the module docstring).

    Attributes:
        model: Reconstructor name.
        defense: Defense name.
        attack: Attack name.
        eps: The largest eps both the defended and the undefended model were attacked with.
        acceleration: Under-sampling factor.
        slices: Slices paired.
        cost: Clean PSNR lost (dB).
        gain_nonadaptive: PSNR gained under the non-adaptive attack (dB).
        gain_adaptive: PSNR gained under the adaptive attack (dB).
        flagged: Per detector input (:data:`DETECTOR_INPUTS`), ``(flagged, evaluated)`` slice
            counts; empty for a defense without a detector.
        hit_rate_undefended, hit_rate: FNAF hit rate without and with the defense (feature attacks).
        hit_change: Paired change of the hit indicator per slice (with minus without; points / 100).
        score_change: Paired change of the FNAF criterion's score.
    """

    model: str
    defense: str
    attack: str
    eps: float | None
    acceleration: float
    slices: int
    cost: Interval | None
    gain_nonadaptive: Interval | None
    gain_adaptive: Interval | None
    flagged: dict[str, tuple[int, int]] = field(default_factory=dict)
    hit_rate_undefended: Interval | None = None
    hit_rate: Interval | None = None
    hit_change: Interval | None = None
    score_change: Interval | None = None


def defense_effects(rows: Sequence[dict[str, Any]], *, level: float = LEVEL) -> list[DefenseEffect]:
    """The :class:`DefenseEffect` of every defended model x attack x acceleration at its largest shared eps
    (feature attacks: ``eps`` is ``None``)."""
    cells = [r for r in rows if is_white_box(r) and (r["eps"] is not None or not is_perturbation(r))]
    same = ("model", "attack", "eps", "seed", "acceleration", "volume", "slice")
    undefended = {tuple(r[k] for k in same): r for r in cells if r["defense"] == "none"}
    pairs: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for r in cells:
        base = undefended.get(tuple(r[k] for k in same))
        if r["defense"] != "none" and base is not None:
            pairs[(r["model"], r["defense"], r["attack"], r["acceleration"], r["eps"])].append((r, base))
    largest: dict[tuple, tuple] = {}
    for key in pairs:
        if key[:4] not in largest or (key[4] or 0) > (largest[key[:4]][4] or 0):
            largest[key[:4]] = key
    return [_effect(key, pairs[key], level) for key in sorted(largest.values(), key=sort_key)]


def _effect(key: tuple, pairs: list[tuple[dict, dict]], level: float) -> DefenseEffect:
    per_slice: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for defended, base in pairs:
        per_slice[(defended["volume"], defended["slice"])].append((defended, base))

    def differences(first: tuple[str, str], second: tuple[str, str]) -> list[float | None]:
        """Per slice, the mean over seeds of ``first`` minus ``second`` ((row 0 or 1, column) each)."""
        return [mean(_difference(pair, first, second) for pair in group) for group in per_slice.values()]

    flagged = {}
    for condition, _ in DETECTOR_INPUTS:
        values = [d.get(f"{condition}_flagged") for d, _ in pairs]
        values = [v for v in values if v is not None and math.isfinite(v)]
        if values:
            flagged[condition] = (sum(v >= 0.5 for v in values), len(values))
    model, defense, attack, acceleration, eps = key
    features = {}
    if eps is None:
        def per_slice_mean(which: int, column: str) -> list[float | None]:
            return [mean(_value(pair[which], column) for pair in group) for group in per_slice.values()]

        features = dict(
            hit_rate_undefended=interval(per_slice_mean(1, "fnaf_hit"), level=level),
            hit_rate=interval(per_slice_mean(0, "fnaf_hit"), level=level),
            hit_change=interval(differences((0, "fnaf_hit"), (1, "fnaf_hit")), level=level),
            score_change=interval(differences((0, "fnaf_score"), (1, "fnaf_score")), level=level))
    return DefenseEffect(
        model, defense, attack, eps, acceleration, len(per_slice),
        cost=interval(differences((1, "clean_psnr"), (0, "clean_psnr")), level=level),
        gain_nonadaptive=interval(differences((0, "nonadaptive_psnr"), (1, "attacked_psnr")), level=level),
        gain_adaptive=interval(differences((0, "attacked_psnr"), (1, "attacked_psnr")), level=level),
        flagged=flagged, **features,
    )


def _value(row: dict[str, Any], column: str) -> float | None:
    """A column of a slice row; FNAF columns only where the candidate was accepted."""
    if column.startswith("fnaf_") and (row.get("fnaf_accepted") or 0) < 0.5:
        return None
    return row.get(column)


def _difference(pair: tuple[dict, dict], first: tuple[int, str], second: tuple[int, str]) -> float | None:
    a, b = _value(pair[first[0]], first[1]), _value(pair[second[0]], second[1])
    if a is None or b is None or not math.isfinite(a - b):
        return None
    return a - b


EFFECT_HEADER = (
    "model",
    "defense",
    "attack",
    "eps",
    "accel.",
    "slices",
    "clean cost (dB) [95% CI]",
    "gain non-adaptive (dB) [95% CI]",
    "gain adaptive (dB) [95% CI]",
    *(f"detector flagged: {label}" for _, label in DETECTOR_INPUTS),
)


def flag_label(counts: tuple[int, int] | None) -> str:
    """``7/8 (88%)``, or ``n/a`` without a detector."""
    if counts is None:
        return "n/a"
    return f"{counts[0]}/{counts[1]} ({show(counts[0] / counts[1], '{:.0%}')})"


def effect_table(effects: Sequence[DefenseEffect]) -> list[list[str]]:
    """Rows of :data:`EFFECT_HEADER`: the perturbation attacks' effects."""
    return [
        [e.model, e.defense, e.attack, f"{e.eps:g}", f"{e.acceleration:g}", str(e.slices), effect_label(e.cost),
         effect_label(e.gain_nonadaptive), effect_label(e.gain_adaptive),
         *(flag_label(e.flagged.get(condition)) for condition, _ in DETECTOR_INPUTS)]
        for e in effects if e.eps is not None
    ]


FEATURE_EFFECT_HEADER = ("model", "defense", "attack", "accel.", "slices", "clean cost (dB) [95% CI]",
                         "hit rate without [95% CI]", "hit rate with [95% CI]", "hit-rate change [95% CI]",
                         "score change [95% CI]")
FEATURE_EFFECT_NOTE = (
    "Feature attacks (FNAF): the hit rate of the features searched on the undefended model and on the defended "
    "one (accepted candidates), the paired change per slice (negative: fewer false negatives with the defense) "
    "and the change of the criterion's score, each with a 95 % bootstrap interval over slices; the clean cost "
    "as above."
)


def _rate(value: Interval | None) -> str:
    return "n/a" if value is None else value.label("{:.0%}")


def feature_effect_table(effects: Sequence[DefenseEffect]) -> list[list[str]]:
    """Rows of :data:`FEATURE_EFFECT_HEADER`: the feature attacks' effects."""
    return [
        [e.model, e.defense, e.attack, f"{e.acceleration:g}", str(e.slices), effect_label(e.cost),
         _rate(e.hit_rate_undefended), _rate(e.hit_rate),
         "n/a" if e.hit_change is None else e.hit_change.label("{:+.0%}"),
         "n/a" if e.score_change is None else e.score_change.label("{:+.3f}")]
        for e in effects if e.eps is None
    ]
