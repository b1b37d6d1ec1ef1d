"""FFT and mask parity with fastMRI, plus mask properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reconguard.errors import ConfigError
from reconguard.physics import EquispacedMask, RandomMask, VariableDensityMask, fft2c, ifft2c
from tests.conftest import random_complex

fastmri = pytest.importorskip("fastmri")
from fastmri.data import subsample  # noqa: E402


@pytest.mark.parametrize("shape", [(3, 2, 16, 16), (1, 4, 15, 17), (2, 1, 32, 20)])
def test_fft_matches_fastmri(shape, gen):
    x = random_complex(shape, gen)
    ours = fft2c(x)
    theirs = torch.view_as_complex(fastmri.fft2c(torch.view_as_real(x).contiguous()))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        ifft2c(x),
        torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(x).contiguous())),
        rtol=0,
        atol=1e-6,
    )


def test_fft_round_trip_and_orthonormal(gen):
    x = random_complex((2, 3, 12, 10), gen)
    torch.testing.assert_close(ifft2c(fft2c(x)), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fft2c(x).norm(), x.norm(), rtol=1e-5, atol=0)


def test_fft_rejects_real_input():
    with pytest.raises(TypeError):
        fft2c(torch.zeros(2, 2))


@pytest.mark.parametrize("acceleration,center_fraction", [(4, 0.08), (8, 0.04), (6, 0.06)])
@pytest.mark.parametrize("width", [128, 368, 97])
@pytest.mark.parametrize("seed", [0, 123, (102, 105, 108, 101)])
def test_masks_match_fastmri(acceleration, center_fraction, width, seed):
    shape = (4, 64, width)
    pairs = [
        (RandomMask, subsample.RandomMaskFunc),
        (EquispacedMask, subsample.EquispacedMaskFractionFunc),
    ]
    for ours_cls, theirs_cls in pairs:
        ours = ours_cls(acceleration=acceleration, center_fraction=center_fraction)(shape, seed=seed)
        theirs, _ = theirs_cls([center_fraction], [acceleration])((*shape, 2), seed=seed)
        assert ours.dtype == torch.bool
        assert ours.shape == (1, 1, width)
        np.testing.assert_array_equal(ours.numpy(), theirs[..., 0].numpy().astype(bool))


def test_masks_do_not_touch_global_rng():
    np.random.seed(7)
    torch.manual_seed(7)
    expected_np, expected_torch = np.random.rand(), torch.rand(1)
    np.random.seed(7)
    torch.manual_seed(7)
    RandomMask(acceleration=4, center_fraction=0.08)((1, 32, 32), seed=None)
    VariableDensityMask(acceleration=4, center_fraction=0.08)((1, 32, 32), seed=3)
    assert np.random.rand() == expected_np
    assert torch.rand(1) == expected_torch


def test_variable_density_mask_budget_and_center():
    gen_mask = VariableDensityMask(acceleration=4, center_fraction=0.1)
    masks = torch.stack([gen_mask((1, 64, 64), seed=s) for s in range(20)]).float()
    assert masks.shape[-2:] == (64, 64)
    assert abs(masks.mean().item() - 0.25) < 0.02
    assert bool(masks[..., 29:35, 29:35].all())
    assert torch.equal(gen_mask((1, 64, 64), seed=5), gen_mask((1, 64, 64), seed=5))


@pytest.mark.parametrize(
    "kwargs", [dict(acceleration=0.5, center_fraction=0.1), dict(acceleration=4, center_fraction=0),
               dict(acceleration=4, center_fraction=0.5), dict(acceleration=float("nan"), center_fraction=0.1)]
)
def test_impossible_mask_parameters_raise(kwargs):
    with pytest.raises(ConfigError):
        RandomMask(**kwargs)
