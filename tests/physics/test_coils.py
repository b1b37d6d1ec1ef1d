"""ESPIRiT coil-map estimation against known simulated sensitivities."""

from __future__ import annotations

import pytest
import torch

from reconguard.errors import ConfigError, DataError
from reconguard.physics import (
    RandomMask,
    VariableDensityMask,
    estimate_coil_maps,
    fft2c,
    ifft2c,
    rss,
    simulate_coil_maps,
)

H, W = 64, 64


def _phantom(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth elliptical object with gentle texture and phase, and a mask of its interior."""
    y = torch.linspace(-1, 1, height)[:, None]
    x = torch.linspace(-1, 1, width)[None, :]
    radius = (y / 0.8) ** 2 + (x / 0.65) ** 2
    magnitude = torch.sigmoid((1 - radius) * 20) * (1 + 0.3 * torch.cos(3 * x + 2 * y))
    image = torch.polar(magnitude, 0.5 * x + 0.3 * y).to(torch.complex64)
    return image, radius < 0.85


def _acquire(maps: torch.Tensor, mask_gen, seeds=(0,)) -> tuple[torch.Tensor, ...]:
    image, inside = _phantom(*maps.shape[-2:])
    kspace = fft2c(maps * image).expand(len(seeds), -1, -1, -1)
    mask = torch.cat([mask_gen((1, 1, *maps.shape[-2:]), seed=s) for s in seeds])
    return kspace * mask, mask, kspace, image, inside


@pytest.mark.parametrize(
    "mask_gen",
    [
        RandomMask(acceleration=4, center_fraction=0.16),
        VariableDensityMask(acceleration=4, center_fraction=0.25),
    ],
    ids=["lines", "2d"],
)
def test_estimated_maps_match_truth(mask_gen):
    true_maps = simulate_coil_maps(8, (H, W), rotation=0.3)
    masked, mask, kspace, image, inside = _acquire(true_maps, mask_gen, seeds=(0, 1))
    est = estimate_coil_maps(masked, mask)
    assert est.shape == (2, 8, H, W) and est.dtype == torch.complex64
    # equal up to one phase per pixel
    agreement = (est.conj() * true_maps).sum(dim=1).abs()
    assert (agreement[:, inside] > 0.95).float().mean() > 0.99
    energy = est.abs().pow(2).sum(dim=1)
    assert (energy[:, inside] - 1).abs().max() < 1e-4
    # coil 0 carries no phase after normalisation
    assert est[:, 0].imag.abs().max() < 1e-5 and est[:, 0].real.min() >= 0
    sense = (est.conj() * ifft2c(kspace)).sum(dim=1)
    error = (sense.abs() - image.abs())[:, inside].abs().max()
    assert error < 1e-2 * image.abs().max()


def test_background_is_cropped_and_crop_zero_keeps_everything():
    true_maps = simulate_coil_maps(8, (H, W))
    masked, mask, *_ = _acquire(true_maps, RandomMask(acceleration=4, center_fraction=0.16))
    est = estimate_coil_maps(masked, mask)
    assert (est.abs().sum(dim=1) == 0).float().mean() > 0.1  # corners outside the ellipse
    full = estimate_coil_maps(masked, mask, crop=0.0)
    energy = full.abs().pow(2).sum(dim=1)
    torch.testing.assert_close(energy, torch.ones_like(energy), atol=1e-4, rtol=0)


def test_calib_size_override_and_batch_consistency():
    true_maps = simulate_coil_maps(8, (H, W))
    lines = RandomMask(acceleration=4, center_fraction=0.16)
    masked, mask, _, _, inside = _acquire(true_maps, lines, seeds=(0, 3))
    est = estimate_coil_maps(masked, mask, calib_size=10, kernel_size=4)
    assert ((est.conj() * true_maps).sum(dim=1).abs()[:, inside] > 0.95).float().mean() > 0.99
    # each batch element is calibrated from its own k-space and mask
    single = estimate_coil_maps(masked[1:], mask[1:])
    torch.testing.assert_close(estimate_coil_maps(masked, mask)[1:], single, atol=1e-5, rtol=0)


def test_deterministic():
    true_maps = simulate_coil_maps(8, (H, W))
    masked, mask, *_ = _acquire(true_maps, RandomMask(acceleration=4, center_fraction=0.16))
    assert torch.equal(estimate_coil_maps(masked, mask), estimate_coil_maps(masked, mask))


def test_single_coil_gives_unit_maps():
    lines = RandomMask(acceleration=4, center_fraction=0.16)
    masked, mask, *_ = _acquire(simulate_coil_maps(1, (H, W)), lines)
    est = estimate_coil_maps(masked, mask)
    assert torch.equal(est, torch.ones(1, 1, H, W, dtype=torch.complex64))


def test_output_never_requires_grad():
    true_maps = simulate_coil_maps(4, (32, 32))
    masked, mask, *_ = _acquire(true_maps, RandomMask(acceleration=2, center_fraction=0.25))
    assert not estimate_coil_maps(masked.requires_grad_(), mask).requires_grad


def test_errors():
    true_maps = simulate_coil_maps(4, (32, 32))
    masked, mask, *_ = _acquire(true_maps, RandomMask(acceleration=4, center_fraction=0.125))
    with pytest.raises(ConfigError, match="smaller than kernel_size=6"):
        estimate_coil_maps(masked, mask, kernel_size=6)  # 4 central lines
    estimate_coil_maps(masked, mask, kernel_size=3)
    with pytest.raises(ConfigError, match="not fully sampled"):
        estimate_coil_maps(masked, mask, calib_size=8)
    with pytest.raises(ConfigError, match="exceeds the image size"):
        estimate_coil_maps(masked, torch.ones_like(mask), calib_size=40)
    bad_args = [{"threshold": 0.0}, {"threshold": 1.5}, {"crop": -0.1}, {"kernel_size": 0}]
    for bad in [*bad_args, {"calib_size": 2}]:
        with pytest.raises(ConfigError):
            estimate_coil_maps(masked, mask, **{"kernel_size": 3, **bad})
    nan = masked.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        estimate_coil_maps(nan, mask)
    with pytest.raises(DataError, match="mask"):
        estimate_coil_maps(masked, mask[..., :-1])


def test_rss_gradient_is_finite_at_exact_zeros():
    x = torch.zeros(1, 3, 4, 4, dtype=torch.complex64, requires_grad=True)
    with torch.no_grad():
        x[0, :, 1, 1] = 1 + 1j
    rss(x).sum().backward()
    assert torch.isfinite(torch.view_as_real(x.grad)).all()
