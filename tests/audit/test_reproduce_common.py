"""The reproduction tables' shared rules: bootstrap interval, verdict, table files, ROC AUC."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reconguard.audit.reproduce.common import ClaimRow, verdict, write_table
from reconguard.audit.reproduce.cyclic import roc_auc
from reconguard.metrics import bootstrap_ci


def test_bootstrap_interval_holds_the_mean_and_shrinks_with_more_slices():
    rng = np.random.default_rng(0)
    few, many = rng.normal(1.0, 1.0, 10), rng.normal(1.0, 1.0, 1000)
    for values in (few, many):
        mean, low, high = bootstrap_ci(values)
        assert low <= mean <= high and mean == pytest.approx(values.mean())
    assert np.subtract(*bootstrap_ci(many)[2:0:-1]) < np.subtract(*bootstrap_ci(few)[2:0:-1])
    assert bootstrap_ci([2.5]) == (2.5, 2.5, 2.5)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, float("nan")])


@pytest.mark.parametrize("paper, ci, expected", [
    (2.0, (1.5, 2.5), "reproduced"),          # the paper's value inside our interval
    (2.0, (1.1, 1.4), "reproduced"),          # within the 1.0 tolerance of it
    (2.0, (0.2, 0.4), "direction only"),      # same sign, too small
    (2.0, (-0.1, 0.3), "not reproduced"),     # no measurable effect
    (2.0, (-0.9, -0.2), "not reproduced"),    # the opposite direction
    (-1.0, (-1.2, -0.8), "reproduced"),
])
def test_verdict_rule(paper, ci, expected):
    assert verdict(paper, ci, tolerance=1.0) == expected


def test_tables_are_written_as_markdown_and_json(tmp_path):
    row = ClaimRow(claim="x/y", quantity="gain (dB)", paper=2.0, source="A et al.", ours=1.5, ci=(1.0, 2.0), n=8,
                   verdict="reproduced", setting="tiny")
    path = write_table([row], tmp_path)
    assert "| x/y | gain (dB) | 2 (A et al.) | 1.5 [1, 2] (8) | reproduced | tiny |" in path.read_text()
    assert json.loads((tmp_path / "claims.json").read_text())[0]["ours"] == 1.5
    with pytest.raises(ValueError):
        ClaimRow(claim="x", quantity="q", paper=None, source="s", ours=0, ci=(0, 0), n=1, verdict="maybe",
                 setting="")


def test_roc_auc_counts_ordered_pairs():
    assert roc_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert roc_auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert roc_auc([0.1, 0.3], [0.2, 0.3]) == pytest.approx((1 + 0 + 1 + 0.5) / 4)


def test_a_claim_without_its_reference_models_is_one_not_run_row(tmp_path):
    from reconguard.audit.reproduce import ReproContext, reproduce

    ctx = ReproContext(data=tmp_path / "data", out=tmp_path / "out", models=tmp_path / "models", quick=True)
    (row,) = reproduce(["diffusion"], ctx, report=lambda text: None)
    assert row.verdict == "not run" and "diffusion" in row.note and "--export" in row.note
    assert "| diffusion/not-run |" in (tmp_path / "out" / "claims.md").read_text()
