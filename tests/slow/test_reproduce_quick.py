"""Slow: ``reconguard reproduce all --quick`` on the shipped reference models (`make test-slow`):
every claim prints its table with one of the verdicts, a claim whose model does not ship says "not run"."""

from __future__ import annotations

import json

import pytest

from reconguard.audit.reproduce.common import VERDICTS
from reconguard.cli.main import main
from reconguard.models import pretrained

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not pretrained.pretrained_names(), reason="no reference models ship here")]


def test_reproduce_all_quick(tmp_path, capsys):
    pytest.importorskip("nilearn")
    assert main(["reproduce", "all", "--quick", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    rows = json.loads((tmp_path / "out" / "claims.json").read_text())
    claims = {row["claim"].split("/")[0] for row in rows}
    assert claims == {"cyclic", "cyclic-sweep", "fnaf", "fnaf-robust", "diffusion", "pgd-vs-noise", "transfer"}
    assert all(row["verdict"] in VERDICTS for row in rows)
    for name in ("unet", "modl", "varnet"):  # the demo's models ship, so their claims ran
        assert name in pretrained.pretrained_names()
    assert not [row for row in rows if row["verdict"] == "not run" and not row["claim"].startswith("diffusion")]
