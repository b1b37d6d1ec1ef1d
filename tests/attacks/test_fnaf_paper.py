"""FNAF's paper criterion: mean/std normalisation, raw error in T per 320x320 pixels, the hit rule."""

from __future__ import annotations

import pytest
import torch

from reconguard.attacks.features import make_features
from reconguard.attacks.fnaf import FNAF, PAPER_PIXELS
from reconguard.attacks.hits import summarize_hits
from reconguard.attacks.insertion import dilate, insert_features
from reconguard.errors import ConfigError
from reconguard.models import ZeroFilled
from reconguard.models.zero_filled import zero_filled
from reconguard.physics import RandomMask
from tests.attacks.test_fnaf import phantom_batch


def run_fnaf(attack, model, kspace, mask, **options):
    """``attack`` with the call of every attack: the measurement, its mask, and the fully sampled ``kspace``."""
    return attack(model, kspace * mask, mask, kspace=kspace, **options)


class Offset(torch.nn.Module):
    """Zero-filled plus a constant magnitude offset: every feature intact, baseline error everywhere."""

    differentiable, stochastic = True, False

    def __init__(self, offset: float):
        super().__init__()
        self.offset = offset

    def forward(self, masked_kspace, mask, *, coil_maps=None):
        exact = ZeroFilled()(masked_kspace, mask)
        return torch.polar(exact.abs() + self.offset, exact.angle())


def _mask(size: int, seed: int = 0) -> torch.Tensor:
    return RandomMask(acceleration=4, center_fraction=0.08)((1, 1, size, size), seed=seed)


def test_paper_score_is_the_raw_error_in_t_over_the_input_std_per_320_squared_pixels():
    data = phantom_batch(batch=3, size=32, floor=0.05)
    mask = _mask(32)
    result = run_fnaf(FNAF(criterion="paper", dilation=1), ZeroFilled(), data["kspace"], mask)
    region = dilate(result.feature_mask, 1)
    assert torch.equal(result.loss_mask, region)
    std = zero_filled(result.adv_kspace).abs().flatten(1).std(dim=1).reshape(-1, 1, 1, 1)
    error = ((result.recon.abs() - result.target) / std).square()
    expected = (error * region).flatten(1).sum(1) / PAPER_PIXELS
    torch.testing.assert_close(result.paper_loss, expected, rtol=1e-4, atol=0)
    # the clean control: the same T, the clean reconstruction, the clean input's std
    clean_std = zero_filled(data["kspace"] * mask).abs().flatten(1).std(dim=1).reshape(-1, 1, 1, 1)
    control = (((result.clean_recon.abs() - data["image"].abs()) / clean_std).square() * region).flatten(1).sum(1)
    torch.testing.assert_close(result.control_paper_loss, control / PAPER_PIXELS, rtol=1e-4, atol=0)
    # averaging over the image itself scores the same feature (320 / 32)^2 = 100x higher
    own = run_fnaf(FNAF(criterion="paper", dilation=1, paper_pixels=None), ZeroFilled(), data["kspace"], mask)
    torch.testing.assert_close(own.paper_loss, result.paper_loss * PAPER_PIXELS / 32**2, rtol=1e-5, atol=0)


def test_both_scores_are_invariant_to_the_image_scale():
    data = phantom_batch(batch=2, size=32, phase=True, floor=0.1)
    mask = _mask(32, seed=2)
    runs = [run_fnaf(FNAF(criterion="paper"), ZeroFilled(), scale * data["kspace"], mask) for scale in (1.0, 37.0)]
    for name in ("paper_loss", "feature_loss", "control_paper_loss", "information"):
        torch.testing.assert_close(getattr(runs[1], name), getattr(runs[0], name), rtol=1e-3, atol=1e-9)
    assert torch.equal(runs[0].feature_mask, runs[1].feature_mask)


def test_the_paper_rule_counts_baseline_error_and_ours_does_not():
    """A model that keeps every feature but is off everywhere hits by the paper's raw rule only."""
    data = phantom_batch(batch=3, size=32)
    full = torch.ones(1, 1, 1, 32, dtype=torch.bool)
    paper = run_fnaf(FNAF(criterion="paper", paper_pixels=None, gamma=1e-3), Offset(0.3), data["kspace"], full)
    ours = run_fnaf(FNAF(criterion="missing"), Offset(0.3), data["kspace"], full)
    assert bool(paper.hit.all()) and bool((paper.paper_loss > 1e-3).all())
    assert bool((paper.control_paper_loss > 1e-3).all())  # ...without any feature, too
    assert not ours.hit.any() and bool((ours.feature_loss < 1e-10).all())
    exact = run_fnaf(FNAF(criterion="paper"), ZeroFilled(), data["kspace"], full)  # an oracle at full sampling
    assert not exact.hit.any() and bool((exact.paper_loss < 1e-10).all())


def test_hit_follows_the_criterion_and_gamma():
    data = phantom_batch(batch=4, size=64)
    mask = _mask(64, seed=1)
    for criterion, score in (("paper", "paper_loss"), ("missing", "feature_loss")):
        result = run_fnaf(FNAF(criterion=criterion, seed=3), ZeroFilled(), data["kspace"], mask)
        values = getattr(result, score)
        gamma = float(values.median())
        split = run_fnaf(FNAF(criterion=criterion, seed=3, gamma=gamma), ZeroFilled(), data["kspace"], mask)
        assert torch.equal(split.hit, split.accepted & (values > gamma))
        assert 0 < int(split.hit.sum()) < 4
    stats = summarize_hits([result])
    assert stats.mean_paper_loss == pytest.approx(float(result.paper_loss.mean()), rel=1e-6)
    assert stats.mean_control_paper_loss == pytest.approx(float(result.control_paper_loss.mean()), rel=1e-6)


def test_the_criteria_rank_candidates_by_their_own_loss():
    data = phantom_batch(batch=2, size=64)
    mask = _mask(64, seed=4)
    paper = FNAF(criterion="paper", alpha=0.0, num_candidates=1, seed=5)
    # One candidate: both criteria see the same feature; the paper's loss is then beta x its score.
    ours = FNAF(criterion="missing", alpha=0.0, num_candidates=1, seed=5)
    a, b = run_fnaf(paper, ZeroFilled(), data["kspace"], mask), run_fnaf(ours, ZeroFilled(), data["kspace"], mask)
    assert torch.equal(a.feature_mask, b.feature_mask)
    torch.testing.assert_close(a.loss, a.paper_loss * PAPER_PIXELS / 64**2, rtol=1e-5, atol=0)
    torch.testing.assert_close(b.loss, b.feature_loss, rtol=1e-6, atol=0)


def test_attack_and_insertion_default_to_complex_insertion():
    assert FNAF().insertion == "complex"
    data = phantom_batch(batch=1, size=32, phase=True, floor=0.1)
    drawn = make_features(1, (32, 32), num=1, region=20, generator=torch.Generator().manual_seed(0))
    default = insert_features(data["kspace"], _mask(32), drawn)
    explicit = insert_features(data["kspace"], _mask(32), drawn, insertion="complex")
    assert torch.equal(default.adv_kspace, explicit.adv_kspace)


@pytest.mark.parametrize("bad", [{"criterion": "raw"}, {"paper_pixels": 0}, {"insertion": "auto"}])
def test_bad_paper_options_raise(bad):
    with pytest.raises(ConfigError):
        FNAF(**bad)
