"""``reconguard reproduce diffusion`` on tiny models: the rows, their arithmetic and the pairing by seed."""

from __future__ import annotations

import pytest
import torch

from reconguard.audit.reproduce import diffusion
from reconguard.audit.reproduce.common import VERDICTS, ReproContext
from reconguard.models import build, save

TINY = diffusion.Size(clean_slices=2, attack_volumes=1, steps=2, samples=2, eps=(0.0, 0.05),
                      pgd_steps=1, eot_draws=1, surrogate_steps=2)  # fmt: skip


@pytest.fixture
def models(tmp_path):
    torch.manual_seed(0)
    directory = tmp_path / "models"
    save(build("diffusion", chans=8, num_pool_layers=2, timesteps=20, steps=2), directory / "diffusion")
    return directory


def _run(tiny_data, models, tmp_path):
    ctx = ReproContext(data=tiny_data, out=tmp_path / "out", models=models, quick=True, progress=False)
    return {row.claim: row for row in diffusion.run(ctx, size=TINY)}


def test_rows_without_surrogates_are_clean_quality_and_white_box(tiny_data, models, tmp_path, monkeypatch):
    rows = _run(tiny_data, models, tmp_path)
    expected = ["diffusion/clean-4x", "diffusion/clean-8x", "diffusion/white-box@0", "diffusion/white-box@0.05"]
    assert list(rows) == expected
    for row in rows.values():
        assert row.verdict in VERDICTS and row.ci[0] <= row.ours <= row.ci[1] and row.paper is None
    clean = rows["diffusion/clean-8x"]
    assert clean.n == 2 and clean.ours == pytest.approx(clean.extra["diffusion"] - clean.extra["zero_filled"], abs=1e-4)
    # eps 0: no perturbation and the sampler reseeded for every reconstruction -> no effect at all.
    unperturbed = rows["diffusion/white-box@0"]
    assert unperturbed.ours == 0 and unperturbed.verdict == "not reproduced"
    assert unperturbed.extra["psnr_attack"] == unperturbed.extra["psnr_clean"]
    attacked = rows["diffusion/white-box@0.05"]
    excess = attacked.extra["psnr_noise"] - attacked.extra["psnr_attack"]
    assert attacked.ours == pytest.approx(excess, abs=1e-4) and attacked.n == 1

    def fail(*args, **kwargs):
        raise AssertionError("attacked again instead of reading the cache")

    monkeypatch.setattr(diffusion, "_attack_slice", fail)  # a second run resumes from the cache
    assert _run(tiny_data, models, tmp_path)["diffusion/white-box@0.05"] == attacked


def test_surrogates_add_transfer_and_artefact_rows(tiny_data, models, tmp_path):
    torch.manual_seed(0)
    save(build("resunet", chans=4, num_pool_layers=2), models / "resunet-8x")
    save(build("irim", num_steps=2, chans=4, hidden_chans=4, num_layers=2), models / "irim-8x")
    rows = _run(tiny_data, models, tmp_path)
    for eps in ("0", "0.05"):
        assert {f"diffusion/transfer-resunet-8x@{eps}", f"diffusion/transfer-irim-8x@{eps}"} <= set(rows)
    assert rows["diffusion/transfer-irim-8x@0"].ours == 0
    flatness, edges = rows["diffusion/artefact-spectral@0.05"], rows["diffusion/artefact-edge@0.05"]
    assert "diffusion/artefact-spectral@0" not in rows  # artefacts at the largest budget only
    supervised = (flatness.extra["resunet-8x"] + flatness.extra["irim-8x"]) / 2
    assert flatness.ours == pytest.approx(flatness.extra["diffusion"] - supervised, abs=1e-5)
    assert set(edges.extra) == {"diffusion", "resunet-8x", "resunet-8x->diffusion", "irim-8x", "irim-8x->diffusion"}
