"""The verdicts as tables: the report's (one row per model x defense, with every test) and the
terminal's compact one (:func:`compact_table`, printed by ``reconguard demo``)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from reconguard.report.summary import slice_rows
from reconguard.report.tables import show, text_table
from reconguard.report.verdicts import DEFAULT_RULE, Gate, Rule, Verdict, verdicts


def gate_label(gate: Gate | None) -> str:
    """``clean (zero-filled)`` PSNR of a gate, e.g. ``31.20 (23.30)``."""
    if gate is None or gate.clean_psnr is None:
        return "n/a"
    return f"{gate.clean_psnr:.2f} ({show(gate.zero_filled_psnr, '{:.2f}')})"


VERDICT_HEADER = ("model", "defense", "clean PSNR (zero-filled)", "verdict", "decided by [95% CI]",
                  "worst excess drop (dB) [95% CI]", "FNAF hit rate [95% CI]", "evidence")


def _decided(v: Verdict) -> str:
    return "n/a" if v.decided_by is None else v.decided_by.label()


def _worst_excess(v: Verdict) -> str:
    test = v.worst_excess
    return "n/a" if test is None else f"{test.excess.label()} ({test.name})"


def _fnaf(v: Verdict) -> str:
    test = v.fnaf
    return "n/a" if test is None else test.hit_rate.label("{:.0%}")


def verdict_table(items: Sequence[Verdict]) -> list[list[str]]:
    """Rows of :data:`VERDICT_HEADER`."""
    return [[v.model, v.defense, gate_label(v.gate), v.verdict, _decided(v), _worst_excess(v), _fnaf(v), v.evidence()]
            for v in items]


def verdict_notes(items: Sequence[Verdict]) -> list[str]:
    """Every note of the verdicts, in table order, each once."""
    return list(dict.fromkeys(note for v in items for note in v.notes))


COMPACT_HEADER = ("model", "defense", "clean PSNR", "vs zero-filled", "worst excess drop [95% CI]",
                  "FNAF hits [95% CI]", "verdict")


def compact_table(
    records: Iterable[dict[str, Any]],
    *,
    rule: Rule = DEFAULT_RULE,
    training_notes: Mapping[str, str] | None = None,
) -> str:
    """The verdicts as a short plain-text table, one line per model x defense, then one line of
    evidence per model x defense (for the terminal).

    Args:
        records: Tidy records, as :meth:`reconguard.audit.store.Store.records` returns them.
        rule: Quality-gate margin and regime threshold.
        training_notes: See :func:`~reconguard.report.verdicts.verdicts`; a model with a note is
            starred, the note printed below.

    Returns:
        The table and its notes, lines joined by ``\\n`` (no trailing newline).
    """
    items = verdicts(slice_rows(records), rule=rule, training_notes=training_notes)
    body = []
    for v in items:
        gate = v.gate or Gate(None, None, None, rule.margin_db, None)
        star = "*" if training_notes and v.model in training_notes else ""
        versus = "baseline" if gate.baseline else show(gate.advantage_db, "{:+.2f} dB")
        worst = "n/a" if v.worst_excess is None else f"{v.worst_excess.excess.label()} dB ({v.worst_excess.name})"
        body.append([v.model + star, v.defense, show(gate.clean_psnr, "{:.2f} dB"), versus, worst, _fnaf(v),
                     v.verdict])
    lines = [text_table(COMPACT_HEADER, body), ""]
    lines += [f"{v.label}: {v.evidence()}" for v in items]
    lines += [f"* {model}: {note}" for model, note in (training_notes or {}).items()
              if any(v.model == model for v in items)]
    return "\n".join(lines)
