"""FNAF: feature generation, insertion, information check, searches and hit rates."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import ndimage

from reconguard.attacks.fnaf import FNAF, make_features
from reconguard.attacks.hits import summarize_hits
from reconguard.data.anatomy import phantom_volume
from reconguard.data.sample import Sample
from reconguard.errors import ConfigError
from reconguard.models import ZeroFilled
from reconguard.models.zero_filled import zero_filled
from reconguard.physics import RandomMask, fft2c, simulate_coil_maps


def run_fnaf(attack, model, kspace, mask, **options):
    """``attack`` with the call of every attack: the measurement, its mask, and the fully sampled ``kspace``."""
    return attack(model, kspace * mask, mask, kspace=kspace, **options)


def hit_rate(attack, model, batches, mask_fn):
    """The data-set loop the CLI runs: attack every batch, then aggregate."""
    results = []
    for sample in batches:
        _, mask = sample.undersample(mask_fn)
        results.append(run_fnaf(attack, model, sample.kspace, mask, coil_maps=sample.coil_maps,
                                max_value=sample.max_value))
    return summarize_hits(results)

def phantom_batch(batch=4, size=64, coils=1, phase=False, floor=0.0, seed=3) -> dict:
    """Central slices of the Shepp-Logan phantom (plus ``floor``), fully sampled, optionally with coils."""
    volume = torch.from_numpy(phantom_volume(size, seed=seed))
    first = size // 2 - 2 * batch
    image = torch.stack([volume[:, :, first + 4 * i].T for i in range(batch)])[:, None]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    image = torch.polar(image + floor, 0.8 * xx + 0.5 * yy if phase else torch.zeros_like(xx))
    maps = simulate_coil_maps(coils, (size, size)).expand(batch, -1, -1, -1) if coils > 1 else None
    kspace = fft2c(image if maps is None else image * maps)
    return {"kspace": kspace, "coil_maps": maps, "image": image, "max_value": image.abs().flatten(1).amax(dim=1)}


def samples(batches: int = 2, **kwargs) -> list[Sample]:
    """``batches`` Sample batches (phantoms with different lesions), one volume name per slice."""
    out = []
    for b in range(batches):
        data = phantom_batch(seed=b, **kwargs)
        names = tuple(f"vol{b}_{i}" for i in range(len(data["kspace"])))
        out.append(Sample(data["kspace"], data["image"].abs(), data["max_value"], data["coil_maps"], fname=names))
    return out


class Recorder(ZeroFilled):
    """Zero-filled, remembering the batch size, mode and grad state of every call."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, bool, bool]] = []

    def _reconstruct(self, masked_kspace, mask, coil_maps):
        self.calls.append((masked_kspace.shape[0], self.training, torch.is_grad_enabled()))
        return super()._reconstruct(masked_kspace, mask, coil_maps)


def full_mask(width: int) -> torch.Tensor:
    return torch.ones(1, 1, 1, width, dtype=torch.bool)


@pytest.mark.parametrize("size", [1, 4, 10, 25])
def test_features_are_connected_with_n_pixels_inside_the_region(size):
    inside = torch.zeros(44, 36, dtype=torch.bool)
    inside[7:37, 4:32] = True  # central (30, 28)
    for seed in range(15):
        gen = torch.Generator().manual_seed(seed)
        features = make_features(3, (44, 36), num=7, size=size, region=(30, 28), generator=gen)
        masks = features.mask((44, 36))
        assert masks.shape == (3, 7, 1, 44, 36) and features.intensity.shape == (3, 7)
        for feature in masks.flatten(0, 2):
            assert int(feature.sum()) == size
            assert ndimage.label(feature.numpy())[1] == 1  # scipy's default structure is 4-connectivity
            assert not (feature & ~inside).any()


def test_region_is_clipped_to_small_images_and_too_small_regions_raise():
    features = make_features(2, (12, 16), num=5, region=120, generator=torch.Generator().manual_seed(0))
    assert features.bounds == (0, 0, 12, 16) and int(features.mask((12, 16)).sum()) == 2 * 5 * 10
    with pytest.raises(ConfigError):
        make_features(1, (8, 8), generator=torch.Generator())
    with pytest.raises(ConfigError):
        FNAF(region=5)
    with pytest.raises(ConfigError):
        FNAF(region=1.5)


def test_default_region_is_the_papers_fraction_of_the_image():
    """120 of 320 pixels in the paper: the central 48x48 of a 128x128 image."""
    features = make_features(4, (128, 128), num=11, generator=torch.Generator().manual_seed(0))
    assert features.bounds == (40, 40, 88, 88)
    masks = features.mask((128, 128))
    assert not masks[..., :40, :].any() and not masks[..., 88:, :].any() and not masks[..., :40].any()


def test_same_seed_same_features():
    draw = lambda seed: make_features(2, (32, 32), num=11, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = draw(4), draw(4), draw(5)
    assert torch.equal(a.mask((32, 32)), b.mask((32, 32))) and torch.equal(a.intensity, b.intensity)
    assert not torch.equal(a.mask((32, 32)), c.mask((32, 32)))
    low, high = 0.2, 0.3
    d = make_features(2, (32, 32), intensity_range=(low, high), generator=torch.Generator().manual_seed(0))
    assert bool(((d.intensity >= low) & (d.intensity <= high)).all())


@pytest.mark.parametrize(
    "coils, insertion", [(1, "magnitude"), (1, "complex"), (3, "complex"), (3, "magnitude")]
)
def test_insertion_changes_the_fully_sampled_image_only_inside_the_feature(coils, insertion):
    data = phantom_batch(batch=2, size=32, coils=coils, phase=True, floor=0.1)
    attack = FNAF(insertion=insertion, info_threshold=0.0, num_candidates=3)
    result = run_fnaf(attack, ZeroFilled(), data["kspace"], full_mask(32), coil_maps=data["coil_maps"])
    inserted = zero_filled(result.adv_kspace, data["coil_maps"])  # fully sampled: the image itself
    base = data["image"] if insertion == "complex" else data["image"].abs().to(torch.complex64)
    change = inserted - base
    outside = ~result.feature_mask
    scale = data["max_value"].max()
    assert float(change[outside].abs().max()) < 1e-5 * scale
    assert float((result.target - base.abs())[outside].abs().max()) < 1e-6 * scale
    amplitude = result.intensity.reshape(-1, 1, 1, 1).expand_as(result.target)[result.feature_mask]
    assert torch.allclose(change.abs()[result.feature_mask], amplitude, atol=1e-5 * scale)
    # The feature follows the local phase of the image (zero phase in magnitude mode).
    phase = (base / base.abs())[result.feature_mask]
    assert torch.allclose(change[result.feature_mask], amplitude * phase, atol=1e-5 * scale)


def test_information_threshold_extremes():
    data = phantom_batch(batch=3, size=32)
    mask = RandomMask(acceleration=4, center_fraction=0.08)((1, 1, 32, 32), seed=0)
    none = run_fnaf(FNAF(info_threshold=0.0), ZeroFilled(), data["kspace"], mask)
    assert none.rejected.tolist() == [0, 0, 0] and bool(none.accepted.all())
    every = run_fnaf(FNAF(info_threshold=1e9), ZeroFilled(), data["kspace"], mask)
    assert every.rejected.tolist() == [11, 11, 11] and not every.accepted.any() and not every.hit.any()
    mask_fn = RandomMask(acceleration=4, center_fraction=0.08)
    stats = hit_rate(FNAF(info_threshold=1e9), ZeroFilled(), samples(batches=1, batch=3, size=32), mask_fn)
    assert stats.excluded == 3 and stats.slices == 0 and math.isnan(stats.rate)


def test_information_rejects_a_feature_the_acquisition_does_not_measure():
    # Only the k-space centre line is acquired: the zero-filled image of a feature is its row mean
    # (I n_row / W) smeared along the row, far below the threshold; fully sampled it is I itself.
    image = torch.rand(2, 1, 32, 128, generator=torch.Generator().manual_seed(0))  # any image will do
    kspace = fft2c(image.to(torch.complex64))
    centre = torch.zeros(1, 1, 1, 128, dtype=torch.bool)
    centre[..., 64] = True
    attack = FNAF(intensity_range=(0.25, 0.25))
    blind = run_fnaf(attack, ZeroFilled(), kspace, centre)
    assert blind.rejected.tolist() == [11, 11] and not blind.accepted.any()
    rows = blind.feature_mask.sum(dim=-1, keepdim=True).float()
    expected = ((0.25 * rows / 128).square() * blind.loss_mask).flatten(1).sum(1) / blind.loss_mask.flatten(1).sum(1)
    assert torch.allclose(blind.information, expected, rtol=1e-4)
    seen = run_fnaf(attack, ZeroFilled(), kspace, full_mask(128))
    assert seen.rejected.tolist() == [0, 0] and bool(seen.accepted.all())


def test_an_exact_reconstruction_has_hit_rate_zero():
    # Acceleration 1 with the zero-filled model is an oracle: it returns the target with its feature.
    stats = hit_rate(FNAF(), ZeroFilled(), samples(batches=2), RandomMask(acceleration=1, center_fraction=1.0))
    assert stats.rate == 0 and stats.hits == 0 and stats.slices == 8 and stats.excluded == 0
    assert stats.mean_feature_loss < 1e-10 and stats.mean_region_loss < 1e-10
    assert stats.mean_control_region_loss < 1e-10


class Eraser(ZeroFilled):
    """Zero-filling followed by a 5x5 median filter of the magnitude: it keeps anatomy and erases
    small features (a reconstructor that should be FNAF-vulnerable)."""

    def _reconstruct(self, masked_kspace, mask, coil_maps):
        image = super()._reconstruct(masked_kspace, mask, coil_maps).abs()
        patches = torch.nn.functional.pad(image, (2, 2, 2, 2), mode="replicate").unfold(2, 5, 1).unfold(3, 5, 1)
        return patches.flatten(-2).median(dim=-1).values.to(torch.complex64)


@pytest.mark.parametrize("acceleration", [4, 8])
def test_zero_filling_is_not_fnaf_vulnerable_and_an_eraser_is(acceleration):
    """The default (linear) criterion separates a linear reconstruction, which keeps what was
    measured (score exactly 0), from a model that erases small features; the old ``missing``
    criterion called zero-filling vulnerable for the blur of under-sampling alone."""
    mask_fn = RandomMask(acceleration=acceleration, center_fraction=0.32 / acceleration)
    linear = hit_rate(FNAF(), ZeroFilled(), samples(batches=2), mask_fn)
    assert linear.rate == 0 and linear.slices + linear.excluded == 8 and linear.slices >= 6
    assert abs(linear.mean_score) < 1e-5 and linear.mean_score == linear.mean_linear_loss
    erased = hit_rate(FNAF(), Eraser(), samples(batches=2), mask_fn)
    assert erased.rate >= 0.75 and erased.mean_score > 0.5
    missing = hit_rate(FNAF(criterion="missing"), ZeroFilled(), samples(batches=2), mask_fn)
    assert missing.rate > 0.5 and missing.mean_feature_loss > 1e-3
    # the raw region error with the feature exceeds the model's error there without it
    assert missing.mean_region_loss > missing.mean_control_region_loss


def test_linear_score_does_not_depend_on_the_image_size():
    """The same feature at the same place of the same anatomy, in a 128x128 image and in that image
    zero-padded to 320x320 (the paper's size), scores the same under the linear criterion (a ratio
    of sums over the feature's region); the paper's score averaged over the image does not (it is
    divided by the image's pixels and its standard deviation). Full sampling and a local model, so
    that nothing else differs."""
    small = phantom_batch(batch=1, size=128)
    big = {"kspace": fft2c(torch.nn.functional.pad(small["image"], (96, 96, 96, 96))), "max_value": small["max_value"]}
    scores = {}
    for name, data, size in (("small", small, 128), ("big", big, 320)):
        for criterion, pixels in (("linear", 320 * 320), ("paper", None)):
            attack = FNAF(criterion=criterion, paper_pixels=pixels, region=(40, 40), num_candidates=4, seed=5,
                          dilation=1)
            result = run_fnaf(attack, Eraser(), data["kspace"], full_mask(size), max_value=data["max_value"])
            scores[name, criterion] = result.score
    torch.testing.assert_close(scores["big", "linear"], scores["small", "linear"], rtol=1e-4, atol=0)
    assert bool((scores["small", "linear"] > 0.5).all())  # the eraser loses the features
    assert bool(((scores["small", "paper"] / scores["big", "paper"] - 1).abs() > 0.05).all())


def test_random_search_is_one_batch_in_eval_mode_without_grad():
    data = phantom_batch(batch=2, size=32)
    model = Recorder().train()
    result = run_fnaf(FNAF(num_candidates=5), model, data["kspace"], full_mask(32))
    assert [c[0] for c in model.calls] == [2, 10]  # clean control, 2 slices x 5 candidates
    assert not any(training or grad for _, training, grad in model.calls)
    assert model.training and result.evaluations == 2 and result.candidates == 5


def test_max_batch_chunks_the_candidates_without_changing_the_result():
    data = phantom_batch(batch=2, size=32)
    mask = RandomMask(acceleration=4, center_fraction=0.08)((1, 1, 32, 32), seed=1)
    whole = run_fnaf(FNAF(num_candidates=5, region=20), ZeroFilled(), data["kspace"], mask)
    model = Recorder()
    chunked = run_fnaf(FNAF(num_candidates=5, region=20, max_batch=4), model, data["kspace"], mask)
    assert [c[0] for c in model.calls] == [2, 4, 4, 2]
    for name in ("loss", "feature_loss", "information", "position", "recon"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name))
    with pytest.raises(ConfigError, match="max_batch"):
        FNAF(max_batch=0)



def test_finite_difference_is_at_least_as_bad_as_random_search():
    data = phantom_batch(batch=4, size=64)
    mask = RandomMask(acceleration=4, center_fraction=0.08)((1, 1, 64, 64), seed=1)
    random = run_fnaf(FNAF(seed=3, region=40), ZeroFilled(), data["kspace"], mask)
    refined = run_fnaf(FNAF(seed=3, region=40, search="finite_difference"), ZeroFilled(), data["kspace"], mask)
    keep = random.accepted
    assert bool((refined.loss[keep] >= random.loss[keep] * (1 - 1e-5)).all())
    assert refined.candidates == 11 + 2 * 5 and refined.evaluations == 1 + 1 + 2 * 2
    assert bool((refined.loss > random.loss * (1 + 1e-4)).any())  # the search moved somewhere worse
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[12:52, 12:52] = True
    assert not (refined.feature_mask & ~inside).any() and (refined.feature_mask.flatten(1).sum(1) == 10).all()


def test_results_are_deterministic_per_seed():
    data = phantom_batch(batch=2, size=32, coils=3, phase=True)
    mask = RandomMask(acceleration=4, center_fraction=0.08)((1, 1, 32, 32), seed=0)
    run = lambda seed: run_fnaf(FNAF(seed=seed, search="finite_difference"),  # noqa: E731
                                ZeroFilled(), data["kspace"], mask, coil_maps=data["coil_maps"])
    a, b, c = run(0), run(0), run(1)
    for name in ("feature_mask", "loss", "recon", "adv_kspace", "rejected", "position"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.feature_mask, c.feature_mask)
    assert a.adv_kspace.shape == (2, 3, 32, 32) and a.recon.shape == a.target.shape == (2, 1, 32, 32)
    assert a.position.shape == (2, 2) and a.hit.dtype == torch.bool


def test_restores_model_mode_and_flags(tiny_unet):
    data = phantom_batch(batch=2, size=32)
    mask = RandomMask(acceleration=4, center_fraction=0.08)((1, 1, 32, 32), seed=0)
    tiny_unet.train()
    flags = [p.requires_grad for p in tiny_unet.parameters()]
    result = run_fnaf(FNAF(search="finite_difference", iterations=1), tiny_unet, data["kspace"], mask)
    assert tiny_unet.training and [p.requires_grad for p in tiny_unet.parameters()] == flags
    assert torch.isfinite(result.loss).all() and result.control_region_loss.shape == (2,)


def test_user_errors_raise_config_errors():
    data = phantom_batch(batch=1, size=32, coils=3)
    with pytest.raises(ConfigError):
        run_fnaf(FNAF(), ZeroFilled(), data["kspace"], full_mask(32))  # multi-coil without coil maps
    with pytest.raises(ConfigError, match="fully sampled"):
        FNAF()(ZeroFilled(), data["kspace"], full_mask(32), coil_maps=data["coil_maps"])  # no kspace=
    for bad in ({"search": "grid"}, {"step": 0}, {"intensity_range": (0.5, 0.1)}, {"alpha": 0, "beta": 0}):
        with pytest.raises(ConfigError):
            FNAF(**bad)
    with pytest.raises(TypeError):
        FNAF(K=3)


def test_hit_measures_the_missing_feature_not_baseline_error():
    """A model with large error everywhere but that adds every feature exactly never 'hits'."""

    class Blurry(torch.nn.Module):
        differentiable, stochastic = True, False

        def forward(self, masked_kspace, mask, *, coil_maps=None):
            exact = ZeroFilled()(masked_kspace, mask)  # full sampling: the target with its feature
            return torch.polar(exact.abs() + 0.2, exact.angle())  # a constant offset: bad PSNR, feature intact

    data = phantom_batch(batch=3, size=32)
    result = run_fnaf(FNAF(), Blurry(), data["kspace"], full_mask(32))
    assert bool((result.region_loss > 1e-3).all())  # the paper's raw rule would call every slice a hit
    assert not result.hit.any() and bool((result.feature_loss < 1e-10).all())
