"""Slow: the demo as `make demo` runs it -- the shipped reference models on the real built-in data
(MNI152) -- and the records it writes are the same on a second, fresh run (`make test-slow`)."""

from __future__ import annotations

import pytest

from reconguard.audit import Store
from reconguard.cli.main import main
from reconguard.models import pretrained

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not pretrained.pretrained_names(), reason="no reference models ship here")]


def test_demo_audits_the_shipped_models_which_beat_zero_filling(tmp_path, capsys):
    pytest.importorskip("nilearn")
    assert main(["demo", "--workdir", str(tmp_path / "a"), "--quiet"]) == 0
    assert (tmp_path / "a" / "report" / "index.html").exists()
    out = capsys.readouterr().out
    assert "not a usable reconstructor" not in out, out
    rows = Store(tmp_path / "a").query(
        "SELECT c.model, AVG(r.value) AS psnr FROM records r JOIN cells c USING (cell_id) "
        "WHERE c.defense = 'none' AND c.attack = 'pgd-kspace' AND c.source = c.model "
        "AND r.condition = 'clean' AND r.metric = 'psnr' GROUP BY c.model")
    psnr = {row["model"]: row["psnr"] for row in rows}
    for model in ("unet", "modl", "varnet", "unet-fnaf"):
        assert psnr[model] > psnr["zero-filled"] + 1.0, psnr
    # nothing is trained, so a second demo from scratch writes the same records
    assert main(["demo", "--workdir", str(tmp_path / "b"), "--quiet"]) == 0
    assert Store(tmp_path / "b").records() == Store(tmp_path / "a").records()
