"""``summary.md``: the report's verdicts, defense effects and per-cell tables as Markdown."""

from __future__ import annotations

from typing import Any, Sequence

from reconguard.report.effects import (
    EFFECT_HEADER,
    EFFECT_NOTE,
    FEATURE_EFFECT_HEADER,
    FEATURE_EFFECT_NOTE,
    DefenseEffect,
    effect_table,
    feature_effect_table,
)
from reconguard.report.summary import (
    ARTEFACT_HEADER,
    ARTEFACT_NOTE,
    FNAF_HEADER,
    PERTURBATION_HEADER,
    artefact_table,
    fnaf_table,
    perturbation_table,
)
from reconguard.report.tables import markdown_table
from reconguard.report.verdict_tables import VERDICT_HEADER, verdict_notes, verdict_table
from reconguard.report.verdicts import DEFAULT_RULE, Rule, Verdict


def bold(text: str) -> str:
    """HTML ``<b>`` marks as Markdown ``**``."""
    return text.replace("<b>", "**").replace("</b>", "**")


def summary_markdown(
    items: Sequence[Verdict],
    effects: Sequence[DefenseEffect],
    cells: Sequence[dict[str, Any]],
    *,
    title: str,
    rule: Rule = DEFAULT_RULE,
) -> str:
    """``summary.md``: verdicts with their rule and notes, defense effects, then the per-cell tables."""
    verdict = markdown_table(VERDICT_HEADER, verdict_table(items), align="llrllrrl")
    parts = [f"# {title}", "## Verdicts", bold(rule.text()), verdict]
    notes = verdict_notes(items)
    if notes:
        parts.append("\n".join(f"- {note}" for note in notes))
    if effects:
        parts.append("## Defense effects")
    if effect_table(effects):
        parts += [bold(EFFECT_NOTE), markdown_table(EFFECT_HEADER, effect_table(effects), align="lll" + "r" * 9)]
    if feature_effect_table(effects):
        table = markdown_table(FEATURE_EFFECT_HEADER, feature_effect_table(effects), align="lll" + "r" * 7)
        parts += [FEATURE_EFFECT_NOTE, table]
    perturbation, fnaf = perturbation_table(cells), fnaf_table(cells)
    if perturbation:
        table = markdown_table(PERTURBATION_HEADER, perturbation, align="llll" + "r" * 16)
        parts += ["## Perturbation attacks (mean over slices)", table]
    if fnaf:
        table = markdown_table(FNAF_HEADER, fnaf, align="llll" + "r" * 8)
        parts += ["## FNAF (false-negative adversarial features)", table]
    artefacts = artefact_table(cells)
    if artefacts:
        table = markdown_table(ARTEFACT_HEADER, artefacts, align="llll" + "r" * 5 + "l")
        parts += ["## Artefacts (error map attacked − clean, mean over slices)", ARTEFACT_NOTE, table]
    return "\n\n".join(parts) + "\n"
