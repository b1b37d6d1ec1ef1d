"""Verdicts: the quality gate, the same tests for every model, the regime check, the rule, the evidence."""

from __future__ import annotations

import itertools

import pytest

from reconguard.errors import ConfigError
from reconguard.metrics import Interval
from reconguard.report.html import write_report
from reconguard.report.verdict_tables import compact_table, verdict_notes
from reconguard.report.verdicts import (
    INCOMPLETE,
    NOT_TESTED,
    PARTLY,
    ROBUST,
    UNSTABLE,
    UNUSABLE,
    VULNERABLE,
    AttackTest,
    Gate,
    Rule,
    judge,
    quality_gates,
    verdicts,
)

SLICES = (("vol1", 0), ("vol1", 1), ("vol2", 0), ("vol2", 1))


def perturbation(model, defense="none", *, attack="pgd-kspace", eps=0.05, clean=32.0, drop=0.5, noise_drop=0.1,
                 zero_filled=26.0, acceleration=4.0, spread=0.0):
    """Slice rows of one white-box perturbation cell (``zero_filled=None``: no baseline recorded);
    the attacked drop of slice ``k`` is ``drop + spread * (k - 1.5)``."""
    cell = dict(cell_id=f"{model}-{defense}-{attack}-{eps}-{acceleration}", model=model, defense=defense,
                attack=attack, source=model, eps=eps, seed=0, acceleration=acceleration)
    rows = []
    for k, (volume, index) in enumerate(SLICES):
        row = dict(cell, volume=volume, slice=index, clean_psnr=clean + 0.1 * k,
                   attacked_psnr=clean + 0.1 * k - drop - spread * (k - 1.5), noise_psnr=clean + 0.1 * k - noise_drop,
                   noise_gain=1.0 + noise_drop)
        if zero_filled is not None:
            row["zero_filled_psnr"] = zero_filled + 0.1 * k
        rows.append(row)
    return rows


def fnaf(model, defense="none", *, hits=3, clean=32.0, acceleration=4.0):
    """Slice rows of one FNAF cell: 4 accepted candidates, ``hits`` of them hit."""
    cell = dict(cell_id=f"{model}-{defense}-fnaf-{acceleration}", model=model, defense=defense, attack="fnaf",
                source=model, eps=None, seed=0, acceleration=acceleration)
    return [dict(cell, volume=v, slice=i, clean_psnr=clean, zero_filled_psnr=26.0, fnaf_accepted=1.0,
                 fnaf_hit=float(k < hits), fnaf_score=0.9 if k < hits else 0.1) for k, (v, i) in enumerate(SLICES)]


def by_pair(items):
    return {(v.model, v.defense): v for v in items}


# -- quality gate ---------------------------------------------------------------------------------


def test_a_model_that_does_not_beat_zero_filling_gets_no_robustness_verdict():
    rows = perturbation("weak", clean=26.5, drop=0.0) + perturbation("good", drop=0.0)
    rows += perturbation("weak", "cyclic", clean=28.0, drop=0.0)  # a better defended pipeline on a failing model
    items = by_pair(verdicts(rows))
    assert items[("good", "none")].verdict == ROBUST
    assert items[("weak", "none")].verdict == UNUSABLE == "not a usable reconstructor at this budget"
    assert items[("weak", "cyclic")].verdict == UNUSABLE  # its undefended model fails
    gate = items[("weak", "none")].gate
    assert gate.passed is False and gate.advantage_db == pytest.approx(0.5)
    notes = " ".join(verdict_notes(list(items.values())))
    assert "weak: not a usable reconstructor" in notes and "26.65 dB vs zero-filled 26.15 dB at 4x" in notes
    assert "the undefended weak fails" in notes
    # the margin is configurable: at 0.4 dB the same model passes and is judged
    assert by_pair(verdicts(rows, rule=Rule(margin_db=0.4)))[("weak", "none")].verdict == ROBUST


def test_the_gate_needs_the_margin_at_every_acceleration():
    rows = perturbation("m", acceleration=4.0) + perturbation("m", acceleration=8.0, clean=26.6)
    gate = quality_gates(rows)[("m", "none")]
    assert gate.passed is False and gate.acceleration == 8.0
    assert gate.clean_psnr == pytest.approx(26.75) and gate.zero_filled_psnr == pytest.approx(26.15)


def test_a_defense_that_ruins_clean_quality_fails_the_gate_itself():
    rows = perturbation("m", drop=0.0) + perturbation("m", "smooth", clean=26.2, drop=0.0)
    items = by_pair(verdicts(rows))
    assert items[("m", "none")].verdict == ROBUST and items[("m", "smooth")].verdict == UNUSABLE


def test_records_without_a_baseline_are_judged_and_say_the_gate_was_not_checked():
    items = verdicts(perturbation("m", clean=20.0, drop=4.0, zero_filled=None))
    assert items[0].verdict == VULNERABLE and items[0].gate == Gate(None, None, None, 1.0, None)
    assert "quality gate not checked" in items[0].notes[0]


# -- same tests, same rule --------------------------------------------------------------------------


def test_a_defended_model_that_escaped_a_test_is_not_judged_milder():
    rows = perturbation("unet", drop=5.0) + fnaf("unet", hits=3)
    rows += perturbation("unet", "cyclic", drop=0.3)  # cyclic was never given FNAF
    items = by_pair(verdicts(rows))
    assert items[("unet", "none")].verdict == VULNERABLE
    cyclic = items[("unet", "cyclic")]
    assert cyclic.verdict == INCOMPLETE != ROBUST
    labels = [t.label() for t in cyclic.tests]
    assert labels == ["fnaf 4x: not tested", "pgd-kspace eps 0.05 4x: excess +0.20 [+0.20, +0.20] dB"]
    assert "not tested on fnaf 4x" in cyclic.notes[0]
    # a test it had already shows it vulnerable: a missing test does not hide that
    rows = perturbation("unet", drop=5.0) + fnaf("unet") + perturbation("unet", "cyclic", drop=4.0)
    assert by_pair(verdicts(rows))[("unet", "cyclic")].verdict == VULNERABLE


def test_every_model_is_judged_on_the_largest_eps_of_the_audit():
    rows = perturbation("a", eps=0.01, drop=0.2) + perturbation("a", eps=0.05, drop=0.2) + fnaf("a", hits=0)
    rows += perturbation("b", eps=0.01, drop=0.2) + fnaf("b", hits=0)  # b: the small budget only
    items = by_pair(verdicts(rows))
    assert items[("a", "none")].verdict == ROBUST
    assert items[("b", "none")].verdict == INCOMPLETE
    assert [t.label() for t in items[("b", "none")].tests] == ["fnaf 4x: hit rate 0% [0%, 0%] (0/4)",
                                                                 "pgd-kspace eps 0.05 4x: not tested"]
    assert verdicts(perturbation("a") + perturbation("b", eps=0.01))[1].verdict == NOT_TESTED
    assert verdicts(fnaf("c", hits=0) + perturbation("d"))[0].tests[1].label() == "pgd-kspace eps 0.05 4x: not tested"


# -- the regime check ------------------------------------------------------------------------------


def test_noise_that_alone_destroys_the_image_makes_the_test_unstable_not_vulnerable():
    """The same attack numbers read differently when matched random noise alone costs more than the
    threshold: a case that must come out unstable and, with the threshold above the noise drop,
    the same rows must come out vulnerable."""
    rows = perturbation("modl", attack="pgd-input", eps=0.01, drop=23.8, noise_drop=20.4) + fnaf("modl", hits=0)
    item = verdicts(rows)[0]
    assert item.verdict == UNSTABLE and item.decided_by.attack == "pgd-input"
    assert item.decided_by.noise_drop_db.mean == pytest.approx(20.4)
    assert item.decided_by.number() == ("random noise alone costs 20.40 [20.40, 20.40] dB, noise gain 21.4x, "
                                        "the worst case +3.40 [+3.40, +3.40] dB more")
    assert item.evidence() == (
        "unstable to any perturbation of the size of pgd-input eps 0.01 4x (random noise alone costs 20.40 "
        "[20.40, 20.40] dB, noise gain 21.4x, the worst case +3.40 [+3.40, +3.40] dB more); robust to fnaf 4x "
        "(hit rate 0% [0%, 0%] (0/4)) at the tested budgets")
    assert item.worst_excess is None  # an unstable test is no evidence of an adversarial excess
    judged = verdicts(rows, rule=Rule(regime_db=25.0))[0]
    assert judged.verdict == VULNERABLE and judged.decided_by.excess.mean == pytest.approx(3.4)
    # a stable test of the same model still decides when it is worse
    rows += perturbation("modl", drop=8.0, noise_drop=0.5)
    assert verdicts(rows)[0].verdict == VULNERABLE
    assert verdicts(rows)[0].evidence().startswith("vulnerable to pgd-kspace eps 0.05 4x (excess +7.50")


def test_evidence_names_every_outcome_with_its_interval():
    rows = perturbation("unet", drop=5.0, spread=1.0) + perturbation("unet", attack="pgd-image", eps=0.01, drop=1.8)
    rows += fnaf("unet", hits=0)
    item = verdicts(rows)[0]
    assert item.verdict == VULNERABLE and item.decided_by.attack == "pgd-kspace"
    low, high = item.decided_by.excess.low, item.decided_by.excess.high
    assert low < 4.9 < high and item.decided_by.excess.n == 4
    assert item.evidence() == (
        f"vulnerable to pgd-kspace eps 0.05 4x (excess +4.90 [{low:+.2f}, {high:+.2f}] dB); partly vulnerable to "
        "pgd-image eps 0.01 4x (excess +1.70 [+1.70, +1.70] dB); robust to fnaf 4x (hit rate 0% [0%, 0%] (0/4)) "
        "at the tested budgets")


def _test(kind: str, value: float | None) -> AttackTest:
    tested = value is not None
    if kind == "fnaf":
        rate = None if value is None else Interval(value, value, value, 4)
        outcome = None if value is None else VULNERABLE if value >= 0.5 else ROBUST if value < 0.1 else PARTLY
        return AttackTest("fnaf", 4.0, None, tested, hit_rate=rate, outcome=outcome)
    if value is None:
        return AttackTest(kind, 4.0, 0.05, False)
    if value < 0:  # unstable: random noise alone costs -value dB
        return AttackTest(kind, 4.0, 0.05, True, noise_drop_db=Interval(-value, -value, -value, 4), outcome=UNSTABLE)
    outcome = VULNERABLE if value >= 3 else ROBUST if value < 1 else PARTLY
    return AttackTest(kind, 4.0, 0.05, True, excess=Interval(value, value, value, 4), outcome=outcome)


def test_fewer_tests_never_give_a_milder_verdict():
    """Over a grid of outcomes of three tests, dropping any of them never turns a verdict into a
    milder robustness claim: the result is the full verdict's severity or more, or no claim."""
    grid = itertools.product((0.2, 2.0, 5.0, -20.0), (0.0, 1.5, 4.0), (0.0, 0.3, 0.8))
    checked = 0
    for pgd, image, hit in grid:
        full = [_test("pgd-kspace", pgd), _test("pgd-image", image), _test("fnaf", hit)]
        whole, _ = judge(full)
        assert whole in (VULNERABLE, UNSTABLE, PARTLY, ROBUST)
        for drop in range(1, 4):
            for missing in itertools.combinations(range(3), drop):
                partial = [t if i not in missing else AttackTest(t.attack, 4.0, t.eps, False)
                           for i, t in enumerate(full)]
                verdict, _ = judge(partial)
                assert verdict in (VULNERABLE, INCOMPLETE, NOT_TESTED)
                if verdict == VULNERABLE:
                    assert whole == VULNERABLE
                checked += 1
    assert checked == 36 * 7


# -- page, compact table ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    from tests.report.test_html import build_audit

    return build_audit(tmp_path_factory.mktemp("verdicts"))


def store_of(rows, outdir, config):
    """A results database holding ``rows`` (one unit per cell, no panels)."""
    from reconguard.audit.store import Store, Unit

    store = Store(outdir)
    run_id = store.start_run(config=config, versions={}, git_revision=None, device="cpu", world_size=1, host="ci",
                             started="2024-01-01T00:00")
    cells = {r["cell_id"]: r for r in rows}
    store.add_cells([dict({k: c[k] for k in ("cell_id", "model", "defense", "attack", "source", "eps", "seed",
                                             "acceleration")}, spec={}) for c in cells.values()])
    for cell_id in cells:
        records = tuple((r["volume"], r["slice"], *key.rsplit("_", 1), value) for r in rows if r["cell_id"] == cell_id
                        for key, value in r.items() if key.endswith(("_psnr", "_gain")))
        store.commit_unit(Unit(cell_id, 0, len(SLICES), 1.0, 0, records, ()), run_id)
    return outdir


def test_report_shows_the_gate_and_takes_its_margin_from_the_config(tmp_path):
    rows = perturbation("unet", clean=32.0, drop=0.5) + perturbation("unet", "cyclic", clean=31.0, drop=0.2)
    outdir = store_of(rows, tmp_path, {"quality_gate_db": 10.0})  # clean 32.15 dB vs zero-filled 26.15 dB
    page = write_report(outdir).read_text(encoding="utf-8")
    assert 'class="verdict-not-a-usable-reconstructor-at-this-budget"' in page
    assert "does not beat zero-filling of the same k-space by 10 dB" in page
    assert ("unet: not a usable reconstructor at this budget — clean PSNR 32.15 dB vs zero-filled 26.15 dB at 4x "
            "(+6.00 dB; the gate needs +10 dB)") in page
    assert "unet + cyclic: not a usable reconstructor at this budget — clean PSNR 31.15 dB" in page
    markdown = (outdir / "report" / "summary.md").read_text(encoding="utf-8")
    assert "| unet | none | 32.15 (26.15) |" in markdown and "## Defense effects" in markdown
    # an explicit margin wins over the config's
    write_report(outdir, margin_db=1.0)
    markdown = (outdir / "report" / "summary.md").read_text(encoding="utf-8")
    assert markdown.count(UNUSABLE) == 1 and "| robust at the tested budgets |" in markdown  # only in the rule
    with pytest.raises(ConfigError, match="margin"):
        write_report(outdir, margin_db=-1.0)


def test_report_takes_the_regime_threshold_from_the_config(tmp_path):
    rows = perturbation("modl", attack="pgd-input", eps=0.01, drop=23.8, noise_drop=20.4)
    page = write_report(store_of(rows, tmp_path, {"regime_db": 3.0})).read_text(encoding="utf-8")
    assert 'class="verdict-unstable-to-noise-at-the-tested-budgets"' in page
    assert "random noise alone costs 20.40 [20.40, 20.40] dB, noise gain 21.4x" in page
    assert "if that noise alone costs 3 dB or more" in page
    page = write_report(tmp_path, regime_db=30.0).read_text(encoding="utf-8")
    assert 'class="verdict-vulnerable"' in page and "if that noise alone costs 30 dB or more" in page
    with pytest.raises(ConfigError, match="regime"):
        write_report(tmp_path, regime_db=float("nan"))


def test_compact_table_has_one_line_per_model_and_defense_then_the_evidence(audit_dir):
    from reconguard.audit.store import Store

    records = Store(audit_dir).records()
    text = compact_table(records, training_notes={"varnet": "training stopped by max_minutes after 1 of 8 epochs"})
    lines = text.splitlines()
    assert lines[0].split() == ["model", "defense", "clean", "PSNR", "vs", "zero-filled", "worst", "excess", "drop",
                                "[95%", "CI]", "FNAF", "hits", "[95%", "CI]", "verdict"]
    start = lines[0].index("verdict")
    verdict = {tuple(line.split()[:2]): line[start:] for line in lines[1:5]}
    assert verdict == {("unet", "none"): VULNERABLE, ("unet", "cyclic"): ROBUST, ("varnet*", "none"): VULNERABLE,
                       ("varnet*", "cyclic"): ROBUST}
    unet = lines[1]
    assert "+5.20 dB" in unet  # (4 x (3 x 32 + 30) / 4 + 30) / 5 dB clean vs 26 dB zero-filled
    assert "+10.05" in unet and "(pgd-kspace eps 0.05 4x)" in unet and "75%" in unet  # 10.25 dB drop - 0.2 dB noise
    assert lines[5] == ""
    assert lines[6].startswith("unet: vulnerable to fnaf 4x (hit rate 75% [")
    assert lines[-1] == "* varnet: training stopped by max_minutes after 1 of 8 epochs"
