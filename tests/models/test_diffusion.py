"""The diffusion reconstructor: network, schedule, unsupervised loss, consistent seeded sampling, training."""

from __future__ import annotations

import pytest
import torch

from reconguard.errors import ConfigError, DataError
from reconguard.models import registry
from reconguard.models.classical import instance_scale
from reconguard.models.diffusion import (
    DiffusionReconstructor,
    NoiseSchedule,
    TimeUNet,
    ddim_timesteps,
    make_betas,
    project,
    residual_norm,
    timestep_embedding,
)
from reconguard.models.diffusion.model import calibration_block, calibration_scale
from reconguard.physics import MRIOperator, RandomMask, fft2c, ifft2c, simulate_coil_maps
from tests.conftest import random_complex

B, H, W = 2, 16, 16
TINY = {"chans": 8, "num_pool_layers": 2, "timesteps": 50, "steps": 4}


def _model(**overrides) -> DiffusionReconstructor:
    torch.manual_seed(0)
    return DiffusionReconstructor(**{**TINY, **overrides}).eval()


def _smooth_images(gen: torch.Generator, n: int = B) -> torch.Tensor:
    """Blurry complex images: a learnable distribution for a few optimiser steps."""
    coarse = random_complex((n, 1, 4, 4), gen)
    parts = [torch.nn.functional.interpolate(p, size=(H, W), mode="bilinear") for p in (coarse.real, coarse.imag)]
    return torch.complex(*parts)


def _acquisition(gen: torch.Generator, coils: int, *, full: bool = False):
    image = _smooth_images(gen)
    maps = simulate_coil_maps(coils, (H, W)).expand(B, coils, H, W) if coils > 1 else None
    kspace = fft2c(image if maps is None else image * maps)
    if full:
        mask = torch.ones((B, 1, 1, W), dtype=torch.bool)
    else:
        mask = torch.cat([RandomMask(acceleration=4, center_fraction=0.25)((1, 1, 1, W), seed=s) for s in (0, 1)])
    return kspace * mask, mask, maps


def test_unet_keeps_shape_at_any_size_and_depends_on_time(gen):
    torch.manual_seed(0)
    net = TimeUNet(in_chans=2, chans=8, num_pool_layers=2).eval()
    torch.nn.init.normal_(net.tail[-1].weight, std=0.1)  # the zero-initialised output layer hides t
    for size in ((16, 16), (15, 13)):
        x = torch.randn((B, 2, *size), generator=gen)
        out = net(x, torch.tensor([3, 3]))
        assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(net(x, torch.tensor([3, 3])), net(x, torch.tensor([40, 40])))
    embedding = timestep_embedding(torch.tensor([0, 1, 999]), 16)
    assert embedding.shape == (3, 16) and torch.allclose(embedding.square().sum(1), torch.full((3,), 8.0))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_is_a_decreasing_signal_level(schedule):
    betas = make_betas(schedule, 1000)
    assert betas.shape == (1000,) and bool(((betas > 0) & (betas < 1)).all())
    abar = NoiseSchedule(schedule, 1000).alphas_cumprod
    assert bool((abar[1:] < abar[:-1]).all()) and abar[0] > 0.999 and abar[-1] < 1e-3
    assert NoiseSchedule(schedule, 1000).abar(-1) == 1.0


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_the_exact_target_recovers_the_clean_image(prediction, gen):
    schedule = NoiseSchedule("linear", 1000)
    x0, noise = torch.randn((2, 2, 4, 4), generator=gen), torch.randn((2, 2, 4, 4), generator=gen)
    for t in (0, 500, 999):
        times = torch.full((2,), t)
        x_t = schedule.add_noise(x0, noise, times)
        recovered = schedule.predict_x0(schedule.target(x0, noise, times, prediction), x_t, t, prediction)
        torch.testing.assert_close(recovered, x0, atol=2e-3 if prediction == "eps" else 1e-5, rtol=0)


def test_ddim_timesteps_skip_evenly():
    times = ddim_timesteps(1000, 20)
    assert len(times) == 20 and times[0] == 999 and times[-1] == 0
    assert all(a > b for a, b in zip(times, times[1:]))
    assert ddim_timesteps(1000, 1) == [999] and ddim_timesteps(5, 5) == [4, 3, 2, 1, 0]
    with pytest.raises(ConfigError, match="steps"):
        ddim_timesteps(10, 11)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_training_loss_decreases_on_a_fixed_batch(prediction, gen):
    # Cosine over 1000 steps: fewer timesteps of pure noise, where the v target is unpredictable.
    model = _model(prediction=prediction, timesteps=1000, schedule="cosine").train()
    images = _smooth_images(gen, 4) * 7.0  # the loss divides out the scale
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss(seed: int) -> torch.Tensor:
        return model.training_loss(images, generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        before = sum(loss(s) for s in range(4))
    for step in range(15):
        optimiser.zero_grad()
        loss(100 + step).backward()
        optimiser.step()
    with torch.no_grad():
        assert sum(loss(s) for s in range(4)) < 0.8 * before
    assert loss(0).item() == loss(0).item()  # seeded by the generator
    with pytest.raises(DataError):
        model.training_loss(images[:, 0])
    with pytest.raises(DataError, match="NaN"):
        model.training_loss(images * float("nan"))


def test_calibration_scale_is_the_same_for_fully_sampled_and_under_sampled_data(gen):
    # The prior must see a training image and its measurement at one scale: the old scale, the
    # maximum of A^H y, differs from the fully sampled maximum (aliasing moves the peak).
    size, fraction = 32, 0.125
    coarse = random_complex((4, 1, 6, 6), gen)
    image = torch.complex(*(torch.nn.functional.interpolate(p, size=(size, size), mode="bicubic")
                            for p in (coarse.real, coarse.imag)))
    kspace = fft2c(image)
    mask = RandomMask(acceleration=4, center_fraction=0.25)((4, 1, 1, size), seed=3)
    zero_filled = ifft2c(kspace * mask)
    full_scale = calibration_scale(image, fraction)
    torch.testing.assert_close(calibration_scale(zero_filled, fraction), full_scale, rtol=1e-5, atol=0)
    assert not torch.allclose(instance_scale(zero_filled), instance_scale(image), rtol=1e-2)
    rows, cols = calibration_block(size, size, fraction)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (4, 4) and rows.start == cols.start == 14
    torch.testing.assert_close(calibration_scale(image * 3.0, fraction), 3.0 * full_scale)


def test_a_mask_without_the_calibration_block_is_refused(gen):
    masked, mask, _ = _acquisition(gen, 1)
    with pytest.raises(DataError, match="central"):
        _model(calib_fraction=0.5)(masked, mask)  # an 8x8 block; the masks acquire 4 central lines


def test_reconstruction_is_equivariant_to_the_data_scale(gen):
    masked, mask, _ = _acquisition(gen, 1)
    with torch.no_grad():
        out = _model(seed=5)(masked, mask)
        scaled = _model(seed=5)(masked * 1e-4, mask)  # fastMRI-like k-space magnitudes
    torch.testing.assert_close(scaled, out * 1e-4, rtol=1e-4, atol=1e-5 * 1e-4 * float(out.abs().max()))


def test_averaged_posterior_samples(gen):
    masked, mask, _ = _acquisition(gen, 1)
    averaged, single = _model(samples=3, seed=2), _model(seed=2)
    with torch.no_grad():
        out = averaged(masked, mask)
        # The same draws as one batched run of a one-sample model on the repeated batch.
        draws = single(masked.repeat(3, 1, 1, 1), mask.repeat(3, 1, 1, 1))
    torch.testing.assert_close(out, draws.reshape(3, B, 1, H, W).mean(0), rtol=1e-5, atol=1e-6)
    scale = fft2c(out).abs().max()
    torch.testing.assert_close(fft2c(out) * mask, masked, atol=1e-6 * float(scale), rtol=0)
    assert not torch.allclose(out, draws[:B]) and "samples=3" in repr(averaged)
    with torch.no_grad():  # one slice: its k-space is repeated, a shared (1, ...) mask broadcasts
        one = _model(samples=3, seed=2)(masked[:1], mask[:1])
        draws = _model(seed=2)(masked[:1].repeat(3, 1, 1, 1), mask[:1])
    torch.testing.assert_close(one, draws.mean(0, keepdim=True), rtol=1e-5, atol=1e-6)


def test_augmentation_is_seeded_and_changes_what_the_prior_sees(gen):
    images = _smooth_images(gen, 4)
    plain, augmented = _model(), _model(augment=True)

    def loss(model, seed: int) -> float:
        with torch.no_grad():
            return model.training_loss(images, generator=torch.Generator().manual_seed(seed)).item()

    assert loss(augmented, 1) == loss(augmented, 1)
    assert loss(augmented, 1) != loss(plain, 1)
    torch.testing.assert_close(  # scale-free with or without augmentation
        augmented.training_loss(images * 1e3, generator=torch.Generator().manual_seed(1)),
        augmented.training_loss(images, generator=torch.Generator().manual_seed(1)),
    )


def test_projection_single_coil_is_exact_and_idempotent(gen):
    masked, mask, _ = _acquisition(gen, 1)
    x = random_complex((B, 1, H, W), gen)
    projected = project(x, masked, mask, None)
    torch.testing.assert_close(fft2c(projected) * mask, masked, atol=1e-5, rtol=0)
    torch.testing.assert_close(project(projected, masked, mask, None), projected, atol=1e-5, rtol=0)
    assert residual_norm(projected, masked, mask, None).max() < 1e-4


def test_projection_multi_coil_is_a_unit_data_consistency_step(gen):
    masked, mask, maps = _acquisition(gen, 3)
    operator = MRIOperator(mask, maps)
    x = random_complex((B, 1, H, W), gen)
    projected = project(x, masked, mask, maps)
    # sum_c |S_c|^2 == 1: per-coil replacement + SENSE adjoint == x + A^H (y - A x) ...
    torch.testing.assert_close(projected, x + operator.adjoint(masked - operator(x)), atol=1e-5, rtol=1e-5)
    # ... which never increases the data residual and leaves consistent images alone.
    assert bool((residual_norm(projected, masked, mask, maps) <= residual_norm(x, masked, mask, maps)).all())
    consistent = operator(x)
    torch.testing.assert_close(project(x, consistent, mask, maps), x, atol=1e-5, rtol=1e-5)


def test_single_coil_output_matches_measured_samples(gen):
    masked, mask, _ = _acquisition(gen, 1)
    with torch.no_grad():
        out = _model()(masked, mask)
    assert out.shape == (B, 1, H, W) and out.dtype == torch.complex64
    scale = fft2c(out).abs().max()
    torch.testing.assert_close(fft2c(out) * mask, masked, atol=1e-6 * float(scale), rtol=0)


def test_multi_coil_fully_sampled_output_is_the_sense_combination(gen):
    # Undersampled multi-coil data cannot be matched exactly by one image; what the final
    # projection guarantees is x = x0 + A^H (y - A x0), which for a full mask is A^H y whatever x0.
    masked, mask, maps = _acquisition(gen, 3, full=True)
    with torch.no_grad():
        out = _model()(masked, mask, coil_maps=maps)
    expected = MRIOperator(mask, maps).adjoint(masked)
    torch.testing.assert_close(out, expected, atol=1e-5 * float(expected.abs().max()), rtol=0)


def test_same_seed_same_output_and_fresh_noise_per_call(gen):
    masked, mask, maps = _acquisition(gen, 3)
    first, second = _model(seed=7), _model(seed=7)
    with torch.no_grad():
        a1, a2 = first(masked, mask, coil_maps=maps), first(masked, mask, coil_maps=maps)
        b1 = second(masked, mask, coil_maps=maps)
        first.manual_seed(7)
        again = first(masked, mask, coil_maps=maps)
        other = _model(seed=8)(masked, mask, coil_maps=maps)
    assert torch.equal(a1, b1) and torch.equal(a1, again)
    assert not torch.allclose(a1, a2) and not torch.allclose(a1, other)
    assert first.config["seed"] == 7 and first.stochastic and first.differentiable


@pytest.mark.parametrize("guidance", ["projection", "dps"])
def test_gradients_through_the_sampler_with_and_without_checkpointing(guidance, gen):
    masked, mask, maps = _acquisition(gen, 3)
    grads = []
    for checkpointing in (False, True):
        model = _model(guidance=guidance, eta=0.5, checkpointing=checkpointing)
        kspace = masked.clone().requires_grad_(True)
        model(kspace, mask, coil_maps=maps).abs().sum().backward()
        grads.append(torch.view_as_real(kspace.grad))
    assert torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6 * float(grads[0].abs().max()))


def test_dps_output_is_consistent_after_the_final_projection(gen):
    masked, mask, _ = _acquisition(gen, 1)
    with torch.no_grad():
        out = _model(guidance="dps", zeta=0.5)(masked, mask)
    scale = fft2c(out).abs().max()
    torch.testing.assert_close(fft2c(out) * mask, masked, atol=1e-6 * float(scale), rtol=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": 0},
        {"steps": 51},
        {"timesteps": 1},
        {"guidance": "langevin"},
        {"eta": 1.5},
        {"zeta": -1.0},
        {"schedule": "quadratic"},
        {"chans": 3},
        {"num_res_blocks": 0},
        {"seed": 1.5},
        {"checkpointing": "yes"},
        {"zeta": float("nan")},
        {"steps": True},
        {"clip": 0.0},
        {"prediction": "x0"},
        {"samples": 0},
        {"calib_fraction": 0.0},
        {"calib_fraction": 1.5},
        {"augment": 1},
    ],
)
def test_bad_hyper_parameters_raise(bad):
    with pytest.raises(ConfigError):
        DiffusionReconstructor(**{**TINY, **bad})


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch):
    """The model under its registry name (a no-op once the registry lists it)."""
    monkeypatch.setitem(registry.MODELS, "diffusion", DiffusionReconstructor)


def test_trainer_trains_the_prior_on_images(registered, tiny_data, tmp_path):
    from reconguard.training import TrainConfig, train

    config = dict(model="diffusion", model_config={**TINY, "steps": 3}, data=str(tiny_data), epochs=1, batch_size=16)
    history = train(TrainConfig(**config, out=str(tmp_path / "run")), progress=False)
    assert len(history) == 1 and history[0]["psnr"] > 0
    best = registry.load(tmp_path / "run" / "best")
    assert isinstance(best, DiffusionReconstructor) and best.config == {**_model().config, "steps": 3}
    with pytest.raises(ConfigError, match="robust"):
        TrainConfig(**config, out=str(tmp_path / "robust"), robust="pgd")


def test_clean_images_are_the_fully_sampled_complex_images(gen):
    from reconguard.data.sample import Sample
    from reconguard.training.trainer import clean_images

    image = _smooth_images(gen)
    maps = simulate_coil_maps(3, (H, W)).expand(B, 3, H, W)
    for kspace, coil_maps in ((fft2c(image), None), (fft2c(image * maps), maps)):
        batch = Sample(kspace=kspace, target=image.abs(), max_value=image.abs().amax((1, 2, 3)), coil_maps=coil_maps)
        torch.testing.assert_close(clean_images(batch), image, atol=1e-5, rtol=1e-5)
    estimated = clean_images(Sample(kspace=fft2c(image * maps), target=image.abs(), max_value=torch.ones(B)))
    assert estimated.shape == image.shape and torch.isfinite(torch.view_as_real(estimated)).all()
