"""Defense effects: what each defense gains under attack and costs on clean data, with intervals.

For every defended white-box perturbation cell with an undefended twin (same model, attack, eps,
seed and acceleration), per slice:

- ``cost``: clean PSNR of the undefended model minus clean PSNR with the defense;
- ``gain_nonadaptive``: PSNR with the defense under the attack crafted on the bare model
  (condition ``nonadaptive``) minus the undefended model's attacked PSNR;
- ``gain_adaptive``: PSNR with the defense under the adaptive attack through it (``attacked``)
  minus the undefended model's attacked PSNR.

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

from reconguard.metrics import bootstrap_ci
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


@dataclass(frozen=True)
class Interval:
    """A mean over slices with its bootstrap interval.

    Attributes:
        mean: Mean over slices.
        low: Lower end of the interval.
        high: Upper end.
        n: Number of slices.
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def measurable(self) -> bool:
        """Two or more slices and an interval that excludes 0."""
        return self.n >= 2 and not self.low <= 0.0 <= self.high


def interval(values: Sequence[float | None], *, level: float = LEVEL) -> Interval | None:
    """Mean and percentile-bootstrap interval of the finite ``values`` (``None`` if there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    centre, low, high = bootstrap_ci(finite, level=level)
    return Interval(centre, low, high, len(finite))


def effect_label(value: Interval | None) -> str:
    """``+1.20 [+0.80, +1.60]``, ``no measurable effect (+0.10 [-0.20, +0.40])`` or ``n/a``."""
    if value is None:
        return "n/a"
    if value.n < 2:
        return f"{value.mean:+.2f} (1 slice: no interval)"
    text = f"{value.mean:+.2f} [{value.low:+.2f}, {value.high:+.2f}]"
    return text if value.measurable else f"no measurable effect ({text})"


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
    """

    model: str
    defense: str
    attack: str
    eps: float
    acceleration: float
    slices: int
    cost: Interval | None
    gain_nonadaptive: Interval | None
    gain_adaptive: Interval | None
    flagged: dict[str, tuple[int, int]] = field(default_factory=dict)


def defense_effects(rows: Sequence[dict[str, Any]], *, level: float = LEVEL) -> list[DefenseEffect]:
    """The :class:`DefenseEffect` of every defended model x attack x acceleration at its largest shared eps."""
    cells = [r for r in rows if is_white_box(r) and is_perturbation(r) and r["eps"] is not None]
    same = ("model", "attack", "eps", "seed", "acceleration", "volume", "slice")
    undefended = {tuple(r[k] for k in same): r for r in cells if r["defense"] == "none"}
    pairs: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for r in cells:
        base = undefended.get(tuple(r[k] for k in same))
        if r["defense"] != "none" and base is not None:
            pairs[(r["model"], r["defense"], r["attack"], r["acceleration"], r["eps"])].append((r, base))
    largest: dict[tuple, tuple] = {}
    for key in pairs:
        if key[:4] not in largest or key[4] > largest[key[:4]][4]:
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
    return DefenseEffect(
        model, defense, attack, eps, acceleration, len(per_slice),
        cost=interval(differences((1, "clean_psnr"), (0, "clean_psnr")), level=level),
        gain_nonadaptive=interval(differences((0, "nonadaptive_psnr"), (1, "attacked_psnr")), level=level),
        gain_adaptive=interval(differences((0, "attacked_psnr"), (1, "attacked_psnr")), level=level),
        flagged=flagged,
    )


def _difference(pair: tuple[dict, dict], first: tuple[int, str], second: tuple[int, str]) -> float | None:
    a, b = pair[first[0]].get(first[1]), pair[second[0]].get(second[1])
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
    """Rows of :data:`EFFECT_HEADER`."""
    return [
        [e.model, e.defense, e.attack, f"{e.eps:g}", f"{e.acceleration:g}", str(e.slices), effect_label(e.cost),
         effect_label(e.gain_nonadaptive), effect_label(e.gain_adaptive),
         *(flag_label(e.flagged.get(condition)) for condition, _ in DETECTOR_INPUTS)]
        for e in effects
    ]
