"""Slow: the demo as `make demo` runs it -- the shipped reference models on the real built-in data
(MNI152) -- gives verdicts that differ where the evidence does, shows a defense working, and writes
the same records on a second, fresh run (`make test-slow`)."""

from __future__ import annotations

import pytest

from reconguard.audit import Store
from reconguard.cli.main import main
from reconguard.models import pretrained
from reconguard.report.effects import defense_effects
from reconguard.report.summary import slice_rows
from reconguard.report.verdicts import ROBUST, UNSTABLE, VULNERABLE, verdicts

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not pretrained.pretrained_names(), reason="no reference models ship here")]


def test_demo_audits_the_shipped_models_and_shows_what_each_defense_does(tmp_path, capsys):
    pytest.importorskip("nilearn")
    assert main(["demo", "--workdir", str(tmp_path / "a"), "--quiet"]) == 0
    assert (tmp_path / "a" / "report" / "index.html").exists()
    out = capsys.readouterr().out
    assert "not a usable reconstructor" not in out, out
    rows = slice_rows(Store(tmp_path / "a").records())
    items = {(v.model, v.defense): v for v in verdicts(rows)}
    for pair in (("unet", "none"), ("modl", "none"), ("varnet", "none"), ("unet", "fnaf-robust")):
        assert items[pair].gate.advantage_db > 1.0, items[pair].gate
    # zero-filling, a linear reconstruction, is not vulnerable; the trained networks are
    assert items[("zero-filled", "none")].verdict == ROBUST
    assert items[("unet", "none")].verdict == VULNERABLE
    # MoDL is destroyed by random noise of the network-input attack's size: unstable, not "vulnerable +16 dB"
    (network_input,) = [t for t in items[("modl", "none")].tests if t.attack == "pgd-input"]
    assert network_input.outcome == UNSTABLE and network_input.noise_drop_db.mean > 10
    # the FNAF column separates the U-Net from its FNAF-robust fine-tune, with non-overlapping intervals
    plain, robust = items[("unet", "none")].fnaf.hit_rate, items[("unet", "fnaf-robust")].fnaf.hit_rate
    assert robust.high < plain.low, (plain, robust)
    # both defenses are paired with their undefended model; the cyclic detector flags attacked inputs only
    effects = {(e.model, e.defense, e.attack): e for e in defense_effects(rows)}
    assert effects[("unet", "fnaf-robust", "fnaf")].hit_change.high < 0
    cyclic = effects[("modl", "cyclic", "pgd-input")]
    assert cyclic.flagged["nonadaptive"][0] == cyclic.flagged["nonadaptive"][1] and cyclic.flagged["clean"][0] == 0
    # nothing is trained, so a second demo from scratch writes the same records
    assert main(["demo", "--workdir", str(tmp_path / "b"), "--quiet"]) == 0
    assert Store(tmp_path / "b").records() == Store(tmp_path / "a").records()
