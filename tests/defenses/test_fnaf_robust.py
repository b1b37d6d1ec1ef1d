"""FNAF-robust training as the paper: the feature term averaged over the whole image, clean slices
mixed in, the attack's insertion; and the ``fnaf``/``fnaf-robust`` reproduce claims on tiny models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from reconguard.attacks import FNAF
from reconguard.audit.reproduce import fnaf as repro
from reconguard.audit.reproduce.common import VERDICTS, ReproContext
from reconguard.data import SliceDataset
from reconguard.data.sample import Sample
from reconguard.defenses.strategies import build_strategy
from reconguard.defenses.training import FNAFTraining, TrainBatch
from reconguard.errors import ConfigError
from reconguard.metrics import magnitude
from reconguard.models import build, save
from reconguard.physics.masks import RandomMask


def _mse(recon, target, _):
    return torch.nn.functional.mse_loss(recon, target)


def _batch_with_error(size: int, pixels: int) -> tuple[torch.Tensor, TrainBatch]:
    """Reconstruction off by 1 on ``pixels`` pixels of the feature region, exact elsewhere."""
    target = torch.zeros(1, 1, size, size)
    region = torch.zeros(1, 1, size, size, dtype=torch.bool)
    region.view(-1)[:pixels] = True
    kspace = torch.zeros(1, 1, size, size, dtype=torch.complex64)
    batch = TrainBatch(kspace, torch.ones(1, 1, 1, size, dtype=torch.bool), target, torch.ones(1), region=region)
    return target + region.float(), batch


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_beta_weighs_a_feature_pixel_against_an_image_pixel_at_every_size(loss):
    """The paper's normalisation: alpha L(x, y) + beta MSE(T x, T y), both means over the image."""
    strategy = FNAFTraining(loss=loss, alpha=1.0, beta=100.0, mix=0.0)
    fn = _mse if loss == "mse" else (lambda r, t, _: torch.nn.functional.l1_loss(r, t))
    for size in (32, 128, 320):
        recon, batch = _batch_with_error(size, pixels=30)
        value = strategy.objective(recon, batch, fn)
        assert float(value) * size**2 / 30 == pytest.approx(1 + 100, rel=1e-5)  # (alpha + beta) per pixel


def test_clean_slices_are_mixed_in_with_their_weight(tiny_data):
    sample = Sample.collate([SliceDataset(Path(tiny_data) / "train")[i] for i in range(4)])
    masked_kspace, mask = sample.undersample(RandomMask(acceleration=4, center_fraction=0.08), seed=0)
    torch.manual_seed(0)
    model = build("unet", chans=4, num_pool_layers=2)
    strategy = build_strategy("fnaf", {"candidates": 2, "mix": 0.25}, loss="mse")
    step = strategy.prepare(model, sample, masked_kspace, mask, seed=(0, 0, 0, 0))
    assert step.masked_kspace.shape[0] == 8 and step.mask.shape[0] == 8 and step.region.shape[0] == 8
    assert torch.equal(step.masked_kspace[4:], masked_kspace) and torch.equal(step.target[4:], sample.target)
    assert not step.region[4:].any() and bool(step.region[:4].flatten(1).any(1).all())
    assert not torch.equal(step.masked_kspace[:4], masked_kspace)  # the featured half
    recon = magnitude(model(step.masked_kspace, step.mask), step.target)
    whole = strategy.objective(recon, step, _mse)
    featured = build_strategy("fnaf", {"candidates": 2, "mix": 0.0}, loss="mse")
    head = TrainBatch(*(t[:4] for t in (step.masked_kspace, step.mask, step.target, step.max_value)),
                      region=step.region[:4])
    expected = 0.75 * featured.objective(recon[:4], head, _mse) + 0.25 * _mse(recon[4:], step.target[4:], None)
    torch.testing.assert_close(whole, expected)
    unmixed = build_strategy("fnaf", {"candidates": 2, "mix": 0.0}, loss="mse")
    assert unmixed.prepare(model, sample, masked_kspace, mask, seed=(0, 0, 0, 0)).masked_kspace.shape[0] == 4


def test_training_searches_like_the_attack_with_the_papers_loss():
    strategy = FNAFTraining(loss="mse")
    attack = strategy.attack(seed=0)
    assert isinstance(attack, FNAF) and attack.insertion == FNAF().insertion == "complex"
    assert (attack.criterion, attack.alpha, attack.beta, attack.dilation) == ("paper", 1.0, 100.0, 1)
    assert strategy.mix == 0.5


@pytest.mark.parametrize("options", [{"mix": 1.0}, {"mix": -0.1}, {"mix": "half"}, {"insertion": "auto"}])
def test_bad_fnaf_training_options_raise(options):
    with pytest.raises(ConfigError):
        build_strategy("fnaf", options, loss="mse")


def test_hit_fractions_per_criterion():
    score = torch.tensor([[2e-3, 5e-4], [1e-5, math.nan], [math.nan, math.nan]], dtype=torch.float64)
    scores = {"paper": {"score": score}, "missing": {"score": 10 * score}, "pixels": 128 * 128}
    paper = repro.hit_fractions(scores, "paper")
    assert paper[:2].tolist() == [0.5, 0.0] and math.isnan(float(paper[2]))
    assert repro.hit_fractions(scores, "paper-image")[:2].tolist() == [1.0, 0.0]  # x 6.25
    assert repro.hit_fractions(scores, "missing")[:2].tolist() == [1.0, 0.0]


TINY = repro.Protocol(slices=4, draws=1, epochs=1, betas=(100.0,), train_volumes=1,
                      options={"candidates": 1}, train={"batch_size": 4, "lr": 1e-4, "loss": "l1"})


@pytest.fixture
def models(tmp_path):
    torch.manual_seed(0)
    save(build("unet", in_chans=2, chans=4, num_pool_layers=2), tmp_path / "models" / "unet")
    return tmp_path / "models"


def test_reproduce_fnaf_rows(tiny_data, models, tmp_path):
    ctx = ReproContext(data=Path(tiny_data), out=tmp_path / "out", models=models, quick=True, progress=False)
    rows = {row.claim: row for row in repro.run(ctx, plan=TINY)}
    assert list(rows) == ["fnaf/hit-rate/paper", "fnaf/hit-rate/paper-image", "fnaf/hit-rate/linear",
                          "fnaf/hit-rate/missing"]
    for row in rows.values():
        assert row.verdict in VERDICTS and row.ci[0] <= row.ours <= row.ci[1] and row.paper == 84.0
        assert 0 <= row.ours <= 100 and 1 <= row.n <= 4
    # the same scores judged over 32x32 instead of 320x320 pixels: never fewer hits
    assert rows["fnaf/hit-rate/paper-image"].ours >= rows["fnaf/hit-rate/paper"].ours


def test_reproduce_fnaf_robust_rows_and_cache(tiny_data, models, tmp_path, monkeypatch):
    ctx = ReproContext(data=Path(tiny_data), out=tmp_path / "out", models=models, quick=True, progress=False)
    rows = {row.claim: row for row in repro.run_robust(ctx, plan=TINY)}
    assert set(rows) == {"fnaf-robust/hit-rate-change/paper", "fnaf-robust/hit-rate-change/paper-image",
                         "fnaf-robust/hit-rate-change/linear", "fnaf-robust/hit-rate-change/missing",
                         "fnaf-robust/clean-ssim-change"}
    ssim = rows["fnaf-robust/clean-ssim-change"]
    assert ssim.verdict in VERDICTS and ssim.n == 4 and math.isfinite(ssim.extra["vs_clean_finetune"])
    table = (ctx.out / "sweep.md").read_text()
    assert all(f"| {name} |" in table for name in ("start", "clean", "fnaf-beta100"))
    for run in ("clean", "fnaf-beta100"):
        assert (ctx.out / "finetune" / run / "last.safetensors").exists()
    monkeypatch.setattr(repro, "feature_scores", lambda *a, **k: pytest.fail("scored again, not read from the cache"))
    assert {row.claim: row for row in repro.run_robust(ctx, plan=TINY)} == rows
