"""Adjointness and linearity of every operator; coil-map properties."""

from __future__ import annotations

import pytest
import torch

from reconguard.errors import DataError
from reconguard.physics import MRIOperator, RandomMask, rss, simulate_coil_maps
from reconguard.physics.operators import (
    CoilSensitivity,
    Compose,
    FourierTransform,
    Sampling,
    center_crop,
    sens_expand,
    sens_reduce,
    validate_kspace,
)
from tests.conftest import random_complex

B, C, H, W = 2, 4, 16, 12


def _operators(gen):
    mask = RandomMask(acceleration=4, center_fraction=0.08)((1, C, H, W), seed=0)
    maps = simulate_coil_maps(C, (H, W)).expand(B, C, H, W)
    return {
        "fft": (FourierTransform(), (B, C, H, W)),
        "sampling": (Sampling(mask), (B, C, H, W)),
        "coils": (CoilSensitivity(maps), (B, 1, H, W)),
        "compose": (Compose([FourierTransform(), Sampling(mask)]), (B, C, H, W)),
        "mri_single": (MRIOperator(mask[:, :1]), (B, 1, H, W)),
        "mri_multi": (MRIOperator(mask, maps), (B, 1, H, W)),
        "mri_2d_mask": (MRIOperator(torch.rand(1, 1, H, W, generator=gen) > 0.5, maps), (B, 1, H, W)),
    }


@pytest.mark.parametrize("name", ["fft", "sampling", "coils", "compose", "mri_single", "mri_multi", "mri_2d_mask"])
def test_adjointness_and_linearity(name, gen):
    op, in_shape = _operators(gen)[name]
    x = random_complex(in_shape, gen)
    ax = op(x)
    y = random_complex(tuple(ax.shape), gen)
    lhs = torch.vdot(ax.flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.adjoint(y).flatten())
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-3)
    x2 = random_complex(in_shape, gen)
    torch.testing.assert_close(op(2 * x - 3j * x2), 2 * op(x) - 3j * op(x2), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(op.normal(x), op.adjoint(op(x)))


@pytest.mark.parametrize("coils", [None, C])
def test_sens_expand_and_reduce_are_the_unsampled_operator_and_adjoints(coils, gen):
    maps = None if coils is None else simulate_coil_maps(C, (H, W)).expand(B, C, H, W)
    full = torch.ones(1, 1, H, W, dtype=torch.bool)
    x = random_complex((B, 1, H, W), gen)
    y = random_complex((B, coils or 1, H, W), gen)
    torch.testing.assert_close(sens_expand(x, maps), MRIOperator(full, maps)(x))
    torch.testing.assert_close(sens_reduce(y, maps), MRIOperator(full, maps).adjoint(y))
    lhs = torch.vdot(sens_expand(x, maps).flatten(), y.flatten())
    torch.testing.assert_close(lhs, torch.vdot(x.flatten(), sens_reduce(y, maps).flatten()), rtol=1e-4, atol=1e-3)


def test_with_mask_returns_new_operator(gen):
    m1 = RandomMask(acceleration=4, center_fraction=0.08)((1, 1, H, W), seed=0)
    m2 = RandomMask(acceleration=4, center_fraction=0.08)((1, 1, H, W), seed=1)
    op = MRIOperator(m1)
    op2 = op.with_mask(m2)
    assert op2 is not op and torch.equal(op.mask, m1) and torch.equal(op2.mask, m2)


def test_simulated_coil_maps_unit_rss():
    maps = simulate_coil_maps(8, (32, 24))
    assert maps.shape == (8, 32, 24) and maps.dtype == torch.complex64
    torch.testing.assert_close(rss(maps, dim=0), torch.ones(1, 32, 24), rtol=1e-5, atol=1e-5)
    # distinct coils see distinct regions
    assert (maps[0].abs() - maps[4].abs()).abs().max() > 0.1


def test_validate_kspace_rejects_bad_input(gen):
    good = random_complex((1, 1, 8, 8), gen)
    validate_kspace(good, torch.ones(1, 1, 1, 8, dtype=torch.bool))
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    cases = [
        (good.real, None, "complex"),
        (good[0], None, "shape"),
        (bad, None, "NaN"),
        (good[:0], None, "empty"),
        (good, torch.ones(1, 1, 1, 7, dtype=torch.bool), "mask shape"),
    ]
    for kspace, mask, words in cases:
        with pytest.raises(DataError, match=words):
            validate_kspace(kspace, mask)


def test_center_crop():
    x = torch.arange(5 * 6).reshape(5, 6)
    assert center_crop(x, (3, 2)).tolist() == [[8, 9], [14, 15], [20, 21]]
    with pytest.raises(DataError):
        center_crop(x, (6, 2))
