"""Verdicts of an audit report: a quality gate, the same tests for every model, one rule, named evidence.

A verdict is made per model x defense from the slice rows
(:func:`reconguard.report.summary.slice_rows`), in four steps:

1. **Quality gate** (:func:`quality_gates`). The audit records, for every slice, the PSNR of the
   model's clean reconstruction (``clean``) and of zero-filling the same under-sampled k-space
   (``zero_filled``). A model x defense whose mean clean PSNR does not beat zero-filling by
   ``margin_db`` (default :data:`GATE_MARGIN_DB`) on the audited slices, at every audited
   acceleration, gets :data:`UNUSABLE` instead of a robustness verdict; so does a defended model
   whose undefended model fails. Attacking a network that reconstructs worse than the adjoint says
   nothing about robustness. Zero-filling itself passes: it is the reference.
2. **Same tests** (:func:`audit_tests`). The tests of the audit are every white-box attack x
   acceleration that any model x defense ran, a perturbation attack at the largest eps the audit
   gave it. Every verdict lists all of them (:class:`AttackTest`), a test a model was not given
   as "not tested".
3. **Outcome of each test** (:func:`outcome`), with a 95 % bootstrap interval over slices (seeds
   averaged per slice). A perturbation test first gets a **regime check**: when random noise
   matched to the attack (condition ``noise``) alone costs ``regime_db`` (default
   :data:`REGIME_DB`) or more, the model is :data:`UNSTABLE` at that budget -- any perturbation of
   that size destroys the image, so the attack's excess says little; otherwise the excess drop
   (attack minus matched noise) decides: :data:`VULNERABLE` at :data:`VULNERABLE_DB` or more,
   :data:`ROBUST` below :data:`ROBUST_DB`, :data:`PARTLY` between. An FNAF test is decided by its
   hit rate (:data:`VULNERABLE_HIT`, :data:`ROBUST_HIT`).
4. **Verdict** (:func:`judge`): the most severe outcome of the tests run (vulnerable, then
   unstable, partly, robust). A model missing some tests keeps ``vulnerable`` if the tests it had
   show it, and is otherwise :data:`INCOMPLETE`: a missing test never makes a verdict milder.
   :attr:`Verdict.decided_by` is the test that decided it, and :meth:`Verdict.evidence` says what
   every test showed ("vulnerable to X, robust to Y at the tested budgets").
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from reconguard.metrics import Interval, interval
from reconguard.report.summary import is_perturbation, is_white_box, mean, per_slice, sort_key

#: Default quality-gate margin: the clean PSNR must beat zero-filling by this much (dB).
GATE_MARGIN_DB = 1.0
#: Default regime threshold: matched random noise costing this much (dB) makes a test "unstable".
REGIME_DB = 3.0
#: Outcome thresholds (see the module docstring).
VULNERABLE_DB, ROBUST_DB = 3.0, 1.0
VULNERABLE_HIT, ROBUST_HIT = 0.5, 0.1

VULNERABLE, PARTLY, ROBUST = "vulnerable", "partly vulnerable", "robust at the tested budgets"
UNSTABLE = "unstable to noise at the tested budgets"
INCOMPLETE, NOT_TESTED = "not fully tested", "not tested"
UNUSABLE = "not a usable reconstructor at this budget"
#: Every verdict.
VERDICTS = (VULNERABLE, UNSTABLE, PARTLY, ROBUST, INCOMPLETE, NOT_TESTED, UNUSABLE)
#: Outcomes of a test run, most severe first (a verdict is the first one any test has).
SEVERITY = (VULNERABLE, UNSTABLE, PARTLY, ROBUST)


@dataclass(frozen=True)
class Rule:
    """The numbers a verdict depends on that a user may set.

    Attributes:
        margin_db: Quality-gate margin over zero-filling (dB; config ``quality_gate_db``).
        regime_db: Matched-noise PSNR drop from which a test is unstable (dB; config ``regime_db``).
    """

    margin_db: float = GATE_MARGIN_DB
    regime_db: float = REGIME_DB

    def text(self) -> str:
        """The rule as shown on the page (HTML ``<b>`` marks the verdicts)."""
        return (
            f"<b>Quality gate</b>: a model (or defended model) whose mean clean PSNR on the audited slices does not "
            f"beat zero-filling of the same k-space by {self.margin_db:g} dB at every audited acceleration gets "
            f"<b>{UNUSABLE}</b>, not a robustness verdict. <b>Same tests</b>: every model is judged on every "
            f"white-box test of the audit (each attack and acceleration that any model ran, a perturbation attack "
            f"at its largest eps; adaptive through the defense for a defended model); a test it was not given is "
            f"listed as not tested. <b>Regime check</b>: random noise matched to the attack in every norm that "
            f"matters (its l2 and l-inf size for an l-inf attack); if that noise alone costs {self.regime_db:g} dB "
            f"or more, the model is <b>unstable</b> at that budget — any perturbation of that size destroys the "
            f"image — and the test says so instead of scoring the attack. <b>Outcome</b> of the other perturbation "
            f"tests, on the excess drop (attacked PSNR drop minus matched-noise drop, mean over slices): "
            f"vulnerable ≥ {VULNERABLE_DB:g} dB, robust < {ROBUST_DB:g} dB, partly vulnerable between; of an FNAF "
            f"test, on the hit rate (hits among accepted candidates): vulnerable ≥ {VULNERABLE_HIT:.0%}, robust "
            f"< {ROBUST_HIT:.0%}. <b>Verdict</b>: the most severe outcome — <b>{VULNERABLE}</b>, then "
            f"<b>{UNSTABLE}</b>, <b>{PARTLY}</b>, <b>{ROBUST}</b>; the test that decided it is named with its 95 % "
            f"bootstrap interval over slices. A model missing some tests stays <b>{VULNERABLE}</b> if the tests it "
            f"had show it, and is otherwise <b>{INCOMPLETE}</b> (a missing test never makes a verdict milder); "
            f"<b>{NOT_TESTED}</b> without any."
        )


#: The rule with its defaults.
DEFAULT_RULE = Rule()


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
        noise_drop_db: Mean clean − matched-noise PSNR, with its interval.
        excess: Attacked minus matched-noise drop per slice, with its interval.
        noise_gain: Mean output change per input change under the matched noise (l2).
        hit_rate: FNAF hits among accepted candidates, with its interval.
        hits, accepted: FNAF counts.
        outcome: One of :data:`SEVERITY` (``None`` when not tested).
    """

    attack: str
    acceleration: float
    eps: float | None
    tested: bool
    drop_db: float | None = None
    noise_drop_db: Interval | None = None
    excess: Interval | None = None
    noise_gain: float | None = None
    hit_rate: Interval | None = None
    hits: int | None = None
    accepted: int | None = None
    outcome: str | None = None

    @property
    def name(self) -> str:
        """``attack eps E Ax`` (``attack Ax`` for FNAF)."""
        eps = "" if self.eps is None else f" eps {self.eps:g}"
        return f"{self.attack}{eps} {self.acceleration:g}x"

    @property
    def excess_db(self) -> float | None:
        """Mean excess drop (dB)."""
        return None if self.excess is None else self.excess.mean

    def number(self) -> str:
        """The deciding number with its interval: ``excess +1.20 dB [+0.80, +1.60]``,
        ``hit rate 75% [50%, 100%] (3/4)``, or for an unstable test the noise drop."""
        if self.eps is None:
            rate = "n/a" if self.hit_rate is None else self.hit_rate.label("{:.0%}")
            count = "" if self.accepted is None else f" ({self.hits}/{self.accepted})"
            return f"hit rate {rate}{count}"
        if self.outcome == UNSTABLE and self.noise_drop_db is not None:
            gain = "" if self.noise_gain is None else f", noise gain {self.noise_gain:.1f}x"
            excess = "" if self.excess is None else f", the worst case {self.excess.label()} dB more"
            return f"random noise alone costs {self.noise_drop_db.label('{:.2f}')} dB{gain}{excess}"
        return f"excess {'n/a' if self.excess is None else self.excess.label()} dB"

    def label(self) -> str:
        """The test with its number, or ``not tested``."""
        return f"{self.name}: {self.number()}" if self.tested else f"{self.name}: not tested"


@dataclass(frozen=True)
class Verdict:
    """The verdict of one model x defense (see the module docstring).

    Attributes:
        model: Reconstructor name.
        defense: Defense name or ``"none"``.
        verdict: One of :data:`VERDICTS`.
        tests: Every test of the audit, run or not.
        decided_by: The test whose outcome is the verdict (the worst of that outcome), if any.
        gate: The quality gate (``None`` for a model x defense without clean records).
        notes: Sentences the report prints under the verdict table (gate failure, training cut short...).
    """

    model: str
    defense: str
    verdict: str
    tests: tuple[AttackTest, ...] = ()
    decided_by: AttackTest | None = None
    gate: Gate | None = None
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``model`` or ``model + defense``."""
        return self.model if self.defense == "none" else f"{self.model} + {self.defense}"

    @property
    def worst_excess(self) -> AttackTest | None:
        """The perturbation test with the largest excess drop among the stable ones run."""
        stable = [t for t in self.tests if t.excess is not None and t.outcome != UNSTABLE]
        return max(stable, key=lambda t: t.excess.mean, default=None)

    @property
    def fnaf(self) -> AttackTest | None:
        """The FNAF test with the highest hit rate run."""
        run = [t for t in self.tests if t.hit_rate is not None]
        return max(run, key=lambda t: t.hit_rate.mean, default=None)

    def evidence(self) -> str:
        """What every test showed, grouped by outcome, e.g. ``vulnerable to pgd-kspace eps 0.05 4x
        (excess +5.21 dB [+4.10, +6.30]); robust to fnaf 4x (hit rate 0% [0%, 0%] (0/8)) at the
        tested budgets``."""
        if self.verdict == UNUSABLE:
            return "no robustness verdict: " + (self.gate.reason if self.gate is not None else "quality gate failed")
        words = {VULNERABLE: "vulnerable to", PARTLY: "partly vulnerable to", ROBUST: "robust to",
                 UNSTABLE: "unstable to any perturbation of the size of"}
        parts = []
        for outcome in SEVERITY:
            tests = [t for t in self.tests if t.tested and t.outcome == outcome]
            if tests:
                listed = ", ".join(f"{t.name} ({t.number()})" for t in tests)
                parts.append(f"{words[outcome]} {listed}" + (" at the tested budgets" if outcome == ROBUST else ""))
        missing = [t.name for t in self.tests if not t.tested]
        if missing:
            parts.append("not tested on " + ", ".join(missing))
        return "; ".join(parts) or "no tests"


# -- the steps ------------------------------------------------------------------------------------


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


def _difference(row: dict[str, Any], first: str, second: str) -> float | None:
    a, b = row.get(first), row.get(second)
    return None if a is None or b is None or not math.isfinite(a - b) else a - b


def outcome(rows: Sequence[dict[str, Any]], test: tuple[str, float, float | None],
            rule: Rule = DEFAULT_RULE) -> AttackTest:
    """The :class:`AttackTest` of one model x defense on ``test`` from its white-box slice rows (step 3)."""
    attack, acceleration, eps = test
    chosen = [r for r in rows if (r["attack"], r["acceleration"], r["eps"]) == test]
    if not chosen:
        return AttackTest(attack, acceleration, eps, tested=False)
    if eps is None:
        accepted = [r for r in chosen if (r.get("fnaf_accepted") or 0) >= 0.5]
        rate = interval(per_slice(accepted, lambda r: float((r.get("fnaf_hit") or 0) >= 0.5)))
        hits = sum((r.get("fnaf_hit") or 0) >= 0.5 for r in accepted)
        result = None if rate is None else (VULNERABLE if rate.mean >= VULNERABLE_HIT else
                                            ROBUST if rate.mean < ROBUST_HIT else PARTLY)
        return AttackTest(attack, acceleration, eps, True, hit_rate=rate, hits=hits, accepted=len(accepted),
                          outcome=result)
    drop = mean(per_slice(chosen, lambda r: _difference(r, "clean_psnr", "attacked_psnr")))
    noise = interval(per_slice(chosen, lambda r: _difference(r, "clean_psnr", "noise_psnr")))
    excess = interval(per_slice(chosen, lambda r: _difference(r, "noise_psnr", "attacked_psnr")))
    gain = mean(per_slice(chosen, lambda r: r.get("noise_gain")))
    if noise is not None and noise.mean >= rule.regime_db:
        result: str | None = UNSTABLE
    else:
        if excess is None:  # records without a noise baseline: the plain drop decides
            excess = interval(per_slice(chosen, lambda r: _difference(r, "clean_psnr", "attacked_psnr")))
        result = None if excess is None else (VULNERABLE if excess.mean >= VULNERABLE_DB else
                                              ROBUST if excess.mean < ROBUST_DB else PARTLY)
    return AttackTest(attack, acceleration, eps, True, drop, noise, excess, gain, outcome=result)


def judge(tests: Sequence[AttackTest], gate: Gate | None = None) -> tuple[str, AttackTest | None]:
    """The verdict of one model x defense from its tests (all of the audit's) and its gate, and
    the test that decided it (step 4)."""
    if gate is not None and gate.passed is False:
        return UNUSABLE, None
    run = [t for t in tests if t.tested and t.outcome is not None]
    if not run:
        return NOT_TESTED, None
    verdict = next(o for o in SEVERITY if any(t.outcome == o for t in run))
    decided = [t for t in run if t.outcome == verdict]
    by = max(decided, key=_severity_number)
    if verdict != VULNERABLE and len(run) < len(tests):
        return INCOMPLETE, by
    return verdict, by


def _severity_number(test: AttackTest) -> float:
    """How bad a test is within its outcome, in multiples of the threshold that makes it
    vulnerable (hit rate, excess drop; the noise drop over the default regime threshold for an
    unstable test), so that FNAF and perturbation tests compare."""
    if test.hit_rate is not None:
        return test.hit_rate.mean / VULNERABLE_HIT
    if test.outcome == UNSTABLE and test.noise_drop_db is not None:
        return test.noise_drop_db.mean / REGIME_DB
    return test.excess.mean / VULNERABLE_DB if test.excess is not None else -math.inf


def verdicts(
    rows: Sequence[dict[str, Any]],
    *,
    rule: Rule = DEFAULT_RULE,
    training_notes: Mapping[str, str] | None = None,
) -> list[Verdict]:
    """The verdict of every model x defense of the slice rows (see the module docstring).

    Args:
        rows: Slice rows.
        rule: The quality-gate margin and the regime threshold.
        training_notes: Per model name, a sentence about its training shown with its verdicts --
            the hook for "a wall-clock cap stopped training early" (e.g. ``{"unet": "training
            stopped by max_minutes after 1 of 20 epochs"}``).
    """
    gates = quality_gates(rows, margin_db=rule.margin_db)
    tests = audit_tests(rows)
    own: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if is_white_box(r):
            own[(r["model"], r["defense"])].append(r)
    out = []
    for pair in sorted({(r["model"], r["defense"]) for r in rows}, key=sort_key):
        outcomes = tuple(outcome(own[pair], t, rule) for t in tests)
        verdict, decided = judge(outcomes, gates.get(pair))
        item = Verdict(*pair, verdict, outcomes, decided, gates.get(pair))
        note = (training_notes or {}).get(pair[0])
        out.append(replace(item, notes=_notes(item, rule.margin_db) + ((f"{pair[0]}: {note}.",) if note else ())))
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

