"""Verdicts of an audit report: a quality gate, the same tests for every model, one rule.

A verdict is made per model x defense from the slice rows
(:func:`reconguard.report.summary.slice_rows`), in three steps:

1. **Quality gate** (:func:`quality_gates`). The audit records, for every slice, the PSNR of the
   model's clean reconstruction (``clean``) and of zero-filling the same under-sampled k-space
   (``zero_filled``). A model x defense whose mean clean PSNR does not beat zero-filling by
   ``margin_db`` (default :data:`GATE_MARGIN_DB`) on the audited slices, at every audited
   acceleration, gets :data:`UNUSABLE` instead of a robustness verdict; so does a defended model
   whose undefended model fails. Attacking a network that reconstructs worse than the adjoint says
   nothing about robustness.
2. **Same tests** (:func:`audit_tests`). The tests of the audit are every white-box attack x
   acceleration that any model x defense ran, a perturbation attack at the largest eps the audit
   gave it. Every verdict lists all of them (:class:`AttackTest`), a test a model was not given
   as "not tested".
3. **Rule** (:data:`VERDICT_RULE`). On the tests run: the worst excess PSNR drop (attack minus
   same-norm noise) and the worst FNAF hit rate decide between ``vulnerable``, ``partly
   vulnerable`` and ``robust at the tested budgets``. A model missing some tests keeps
   ``vulnerable`` if the tests it had already show it, and is otherwise :data:`INCOMPLETE`: a
   missing test never makes a verdict milder.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from reconguard.report.summary import is_perturbation, is_white_box, mean, psnr_drop, slice_rows, sort_key, summarize
from reconguard.report.tables import show, text_table

#: Default quality-gate margin: the clean PSNR must beat zero-filling by this much (dB).
GATE_MARGIN_DB = 1.0
#: Verdict thresholds (see :data:`VERDICT_RULE`).
VULNERABLE_DB, ROBUST_DB = 3.0, 1.0
VULNERABLE_HIT, ROBUST_HIT = 0.5, 0.1

VULNERABLE, PARTLY, ROBUST = "vulnerable", "partly vulnerable", "robust at the tested budgets"
INCOMPLETE, NOT_TESTED = "not fully tested", "not tested"
UNUSABLE = "not a usable reconstructor at this budget"
#: Every verdict.
VERDICTS = (VULNERABLE, PARTLY, ROBUST, INCOMPLETE, NOT_TESTED, UNUSABLE)


def verdict_rule(margin_db: float = GATE_MARGIN_DB) -> str:
    """The rule as shown on the page (HTML ``<b>`` marks the verdicts)."""
    return (
        f"<b>Quality gate</b>: a model (or defended model) whose mean clean PSNR on the audited slices does not "
        f"beat zero-filling of the same k-space by {margin_db:g} dB at every audited acceleration gets "
        f"<b>{UNUSABLE}</b>, not a robustness verdict. <b>Same tests</b>: every model is judged on every "
        f"white-box test of the audit (each attack and acceleration that any model ran, a perturbation attack at "
        f"its largest eps); a test it was not given is listed as not tested. <b>Rule</b>, on the tests run (for a "
        f"defended model the attack is adaptive, through the defense): the excess PSNR drop is (clean − attacked) − "
        f"(clean − same-norm noise) in dB, averaged over slices; the FNAF hit rate is hits among accepted "
        f"candidates; keep the worst of each. <b>{VULNERABLE}</b> if the worst excess drop ≥ {VULNERABLE_DB:g} dB "
        f"or a hit rate ≥ {VULNERABLE_HIT:.0%}; <b>{ROBUST}</b> if every excess drop < {ROBUST_DB:g} dB and every "
        f"hit rate < {ROBUST_HIT:.0%}; otherwise <b>{PARTLY}</b>. A model missing some of the tests stays "
        f"<b>{VULNERABLE}</b> if the tests it had show it, and is otherwise <b>{INCOMPLETE}</b> (a missing test never "
        f"makes a verdict milder); <b>{NOT_TESTED}</b> without any."
    )


@dataclass(frozen=True)
class Gate:
    """The quality gate of one model x defense: clean PSNR against zero-filling on the same slices.

    Attributes:
        acceleration: The audited acceleration where the model is closest to zero-filling.
        clean_psnr: Mean clean PSNR there (dB), over the slices that have both numbers.
        zero_filled_psnr: Mean zero-filled PSNR on the same slices (dB).
        margin_db: The advantage required.
        passed: Whether the model beats zero-filling by ``margin_db`` at every acceleration;
            ``None`` when the records hold no zero-filled baseline. Zero-filling itself (the same
            PSNR on every slice) passes: it is the reference, and its robustness is still judged.
        reason: Why it failed (empty when it passed or was not checked).
        baseline: Whether the model is zero-filling itself.
    """

    acceleration: float | None
    clean_psnr: float | None
    zero_filled_psnr: float | None
    margin_db: float
    passed: bool | None
    reason: str = ""
    baseline: bool = False

    @property
    def advantage_db(self) -> float | None:
        """Clean PSNR minus zero-filled PSNR (``None`` without both)."""
        if self.clean_psnr is None or self.zero_filled_psnr is None:
            return None
        return self.clean_psnr - self.zero_filled_psnr


@dataclass(frozen=True)
class AttackTest:
    """One test of the audit as run (or not) on one model x defense.

    Attributes:
        attack: Attack name.
        acceleration: Under-sampling factor.
        eps: The audit's largest eps of this attack (``None`` for FNAF).
        tested: Whether this model x defense has white-box cells of the test.
        drop_db: Mean clean − attacked PSNR.
        noise_drop_db: Mean clean − same-norm-noise PSNR.
        excess_db: ``drop_db - noise_drop_db`` (the plain drop without a noise baseline).
        hit_rate: FNAF hits among accepted candidates.
        hits: FNAF hits among accepted candidates (count).
        accepted: Accepted FNAF candidates.
    """

    attack: str
    acceleration: float
    eps: float | None
    tested: bool
    drop_db: float | None = None
    noise_drop_db: float | None = None
    excess_db: float | None = None
    hit_rate: float | None = None
    hits: int | None = None
    accepted: int | None = None

    @property
    def name(self) -> str:
        """``attack eps E Ax`` (``attack Ax`` for FNAF)."""
        eps = "" if self.eps is None else f" eps {self.eps:g}"
        return f"{self.attack}{eps} {self.acceleration:g}x"

    def label(self) -> str:
        """The test with its number, or ``not tested``."""
        if not self.tested:
            return f"{self.name}: not tested"
        if self.eps is None:
            count = "" if self.accepted is None else f" ({self.hits}/{self.accepted})"
            return f"{self.name}: hit rate {show(self.hit_rate, '{:.0%}')}{count}"
        return f"{self.name}: excess {show(self.excess_db, '{:+.2f}')} dB"


@dataclass(frozen=True)
class Verdict:
    """The verdict of one model x defense (see the module docstring).

    Attributes:
        model: Reconstructor name.
        defense: Defense name or ``"none"``.
        attack: Test with the worst excess PSNR drop (``None`` without perturbation tests run).
        eps: Its budget.
        acceleration: Its acceleration.
        drop_db: Its mean clean − attacked PSNR.
        noise_drop_db: Its mean clean − noise PSNR.
        excess_db: ``drop_db - noise_drop_db``.
        hit_rate: Worst FNAF hit rate among the FNAF tests run (``None`` without).
        verdict: One of :data:`VERDICTS`.
        tests: Every test of the audit, run or not.
        gate: The quality gate (``None`` for a model x defense without clean records).
        notes: Sentences the report prints under the verdict table (gate failure, training cut short...).
    """

    model: str
    defense: str
    attack: str | None
    eps: float | None
    acceleration: float | None
    drop_db: float | None
    noise_drop_db: float | None
    excess_db: float | None
    hit_rate: float | None
    verdict: str
    tests: tuple[AttackTest, ...] = ()
    gate: Gate | None = None
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``model`` or ``model + defense``."""
        return self.model if self.defense == "none" else f"{self.model} + {self.defense}"


def quality_gates(rows: Sequence[dict[str, Any]], *, margin_db: float = GATE_MARGIN_DB) -> dict[tuple, Gate]:
    """The :class:`Gate` of every model x defense with clean records (step 1 of the module docstring).

    Each slice counts once per acceleration (its clean and zero-filled PSNR averaged over the
    cells that hold it); a defended model also fails when its undefended model does.
    """
    slices: dict[tuple, dict[tuple, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    pairs = set()
    for r in rows:
        pairs.add((r["model"], r["defense"]))
        clean, zero = r.get("clean_psnr"), r.get("zero_filled_psnr")
        if clean is not None and zero is not None and math.isfinite(clean) and math.isfinite(zero):
            slices[(r["model"], r["defense"], r["acceleration"])][(r["volume"], r["slice"])].append((clean, zero))
    gates = {}
    for model, defense in pairs:
        worst, baseline = None, True
        for (m, d, acceleration), values in slices.items():
            if (m, d) != (model, defense):
                continue
            baseline = baseline and all(abs(c - z) < 1e-6 for v in values.values() for c, z in v)
            clean = mean(mean(c for c, _ in v) for v in values.values())
            zero = mean(mean(z for _, z in v) for v in values.values())
            if worst is None or clean - zero < worst[1] - worst[2]:
                worst = (acceleration, clean, zero)
        if worst is None:
            gates[(model, defense)] = Gate(None, None, None, margin_db, None)
            continue
        passed = baseline or worst[1] - worst[2] >= margin_db
        reason = "" if passed else (
            f"clean PSNR {worst[1]:.2f} dB vs zero-filled {worst[2]:.2f} dB at {worst[0]:g}x "
            f"({worst[1] - worst[2]:+.2f} dB; the gate needs +{margin_db:g} dB)")
        gates[(model, defense)] = Gate(*worst, margin_db, passed, reason, baseline=baseline)
    for (model, defense), gate in gates.items():
        base = gates.get((model, "none"))
        if defense != "none" and base is not None and base.passed is False and gate.passed is not False:
            gates[(model, defense)] = replace(gate, passed=False, reason=f"the undefended {model} fails: {base.reason}")
    return gates


def audit_tests(rows: Sequence[dict[str, Any]]) -> list[tuple[str, float, float | None]]:
    """Every white-box test of the audit: ``(attack, acceleration, eps)``, eps the largest the audit
    gave that perturbation attack at that acceleration, ``None`` for FNAF (step 2)."""
    largest: dict[tuple[str, float], float | None] = {}
    for r in rows:
        if not is_white_box(r):
            continue
        key = (r["attack"], r["acceleration"])
        if not is_perturbation(r):
            largest[key] = None
        elif r["eps"] is not None:
            largest[key] = max(largest.get(key) or r["eps"], r["eps"])
    return [(attack, acc, eps) for (attack, acc), eps in sorted(largest.items(), key=lambda i: (i[0][1], i[0][0]))]


def _outcome(own: list[dict[str, Any]], test: tuple[str, float, float | None]) -> AttackTest:
    attack, acceleration, eps = test
    chosen = [r for r in own if (r["attack"], r["acceleration"], r["eps"]) == test]
    if not chosen:
        return AttackTest(attack, acceleration, eps, tested=False)
    if eps is None:
        stats = summarize(chosen)
        rate, accepted = stats["fnaf_hit_rate"], stats["fnaf_accepted"]
        hits = None if rate is None else round(rate * accepted)
        return AttackTest(attack, acceleration, eps, True, hit_rate=rate, hits=hits, accepted=accepted)
    drop = mean(psnr_drop(r) for r in chosen)
    noise = mean(psnr_drop(r, "noise") for r in chosen)
    excess = drop - noise if drop is not None and noise is not None else drop
    return AttackTest(attack, acceleration, eps, True, drop, noise, excess)


def _rule(excess: float | None, hit_rate: float | None) -> str:
    if excess is None and hit_rate is None:
        return NOT_TESTED
    if (excess is not None and excess >= VULNERABLE_DB) or (hit_rate is not None and hit_rate >= VULNERABLE_HIT):
        return VULNERABLE
    if (excess is None or excess < ROBUST_DB) and (hit_rate is None or hit_rate < ROBUST_HIT):
        return ROBUST
    return PARTLY


def judge(tests: Sequence[AttackTest], gate: Gate | None = None) -> str:
    """The verdict of one model x defense from its tests (all of the audit's) and its gate."""
    if gate is not None and gate.passed is False:
        return UNUSABLE
    run = [t for t in tests if t.tested]
    excess = max((t.excess_db for t in run if t.excess_db is not None), default=None)
    hit_rate = max((t.hit_rate for t in run if t.hit_rate is not None), default=None)
    verdict = _rule(excess, hit_rate)
    if verdict in (PARTLY, ROBUST) and len(run) < len(tests):
        return INCOMPLETE
    return verdict


def verdicts(
    rows: Sequence[dict[str, Any]],
    *,
    margin_db: float = GATE_MARGIN_DB,
    training_notes: Mapping[str, str] | None = None,
) -> list[Verdict]:
    """The verdict of every model x defense of the slice rows (see the module docstring).

    Args:
        rows: Slice rows.
        margin_db: Quality-gate margin over zero-filling (dB).
        training_notes: Per model name, a sentence about its training shown with its verdicts --
            the hook for "a wall-clock cap stopped training early" (e.g. ``{"unet": "training
            stopped by max_minutes after 1 of 20 epochs"}``).
    """
    gates = quality_gates(rows, margin_db=margin_db)
    tests = audit_tests(rows)
    own: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if is_white_box(r):
            own[(r["model"], r["defense"])].append(r)
    out = []
    for pair in sorted({(r["model"], r["defense"]) for r in rows}, key=sort_key):
        outcomes = tuple(_outcome(own[pair], t) for t in tests)
        gate = gates.get(pair)
        worst = max((t for t in outcomes if t.excess_db is not None), key=lambda t: t.excess_db, default=None)
        numbers = (None,) * 6 if worst is None else (worst.attack, worst.eps, worst.acceleration, worst.drop_db,
                                                      worst.noise_drop_db, worst.excess_db)
        hit_rate = max((t.hit_rate for t in outcomes if t.hit_rate is not None), default=None)
        verdict = judge(outcomes, gate)
        item = Verdict(*pair, *numbers, hit_rate=hit_rate, verdict=verdict, tests=outcomes, gate=gate)
        note = (training_notes or {}).get(pair[0])
        out.append(replace(item, notes=_notes(item, margin_db) + ((f"{pair[0]}: {note}.",) if note else ())))
    return out


def _notes(v: Verdict, margin_db: float) -> tuple[str, ...]:
    if v.verdict == UNUSABLE and v.gate is not None:
        return (f"{v.label}: {UNUSABLE} — {v.gate.reason}. A reconstructor that does not beat zero-filling by "
                f"{margin_db:g} dB gets no robustness verdict; its attack numbers stay in the tables.",)
    if v.verdict == INCOMPLETE:
        missing = ", ".join(t.name for t in v.tests if not t.tested)
        return (f"{v.label}: {INCOMPLETE} — not tested on {missing}; the tests it had do not show it vulnerable, "
                "and an untested attack cannot make a verdict milder.",)
    if v.gate is not None and v.gate.passed is None and v.tests:
        return (f"{v.label}: quality gate not checked — the records hold no zero-filled baseline (written by an "
                "older reconguard).",)
    return ()


# -- tables ---------------------------------------------------------------------------------------

VERDICT_HEADER = ("model", "defense", "clean PSNR (zero-filled)", "worst attack", "PSNR drop (dB)", "noise drop (dB)",
                  "excess (dB)", "FNAF hit rate", "tests", "verdict")


def gate_label(gate: Gate | None) -> str:
    """``clean (zero-filled)`` PSNR of a gate, e.g. ``31.20 (23.30)``."""
    if gate is None or gate.clean_psnr is None:
        return "n/a"
    return f"{gate.clean_psnr:.2f} ({show(gate.zero_filled_psnr, '{:.2f}')})"


def verdict_table(items: Sequence[Verdict]) -> list[list[str]]:
    """Rows of :data:`VERDICT_HEADER`."""
    return [
        [
            v.model,
            v.defense,
            gate_label(v.gate),
            _attack_label(v),
            show(v.drop_db, "{:.2f}"),
            show(v.noise_drop_db, "{:.2f}"),
            show(v.excess_db, "{:.2f}"),
            show(v.hit_rate, "{:.0%}"),
            "; ".join(t.label() for t in v.tests) or "none",
            v.verdict,
        ]
        for v in items
    ]


def _attack_label(v: Verdict) -> str:
    if v.attack is None:
        return "n/a"
    return f"{v.attack} (eps {v.eps:g}, {v.acceleration:g}x)"


def verdict_notes(items: Sequence[Verdict]) -> list[str]:
    """Every note of the verdicts, in table order, each once."""
    return list(dict.fromkeys(note for v in items for note in v.notes))


COMPACT_HEADER = ("model", "defense", "clean PSNR", "vs zero-filled", "worst excess drop", "FNAF hits", "verdict")


def compact_table(
    records: Iterable[dict[str, Any]],
    *,
    margin_db: float = GATE_MARGIN_DB,
    training_notes: Mapping[str, str] | None = None,
) -> str:
    """The verdicts as a short plain-text table, one line per model x defense (for the terminal).

    Args:
        records: Tidy records, as :meth:`reconguard.audit.store.Store.records` returns them.
        margin_db: Quality-gate margin (dB).
        training_notes: See :func:`verdicts`; a model with a note is starred, the note printed below.

    Returns:
        The table and its notes, lines joined by ``\\n`` (no trailing newline).
    """
    items = verdicts(slice_rows(records), margin_db=margin_db, training_notes=training_notes)
    body = []
    for v in items:
        gate = v.gate or Gate(None, None, None, margin_db, None)
        worst = "n/a" if v.excess_db is None else f"{v.excess_db:+.2f} dB ({v.attack} eps {v.eps:g})"
        star = "*" if training_notes and v.model in training_notes else ""
        versus = "baseline" if gate.baseline else show(gate.advantage_db, "{:+.2f} dB")
        body.append([v.model + star, v.defense, show(gate.clean_psnr, "{:.2f} dB"), versus, worst,
                     show(v.hit_rate, "{:.0%}"), v.verdict])
    lines = [text_table(COMPACT_HEADER, body)]
    lines += [f"* {model}: {note}" for model, note in (training_notes or {}).items()
              if any(v.model == model for v in items)]
    return "\n".join(lines)
