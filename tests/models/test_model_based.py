"""MoDL's conjugate gradient, TV compressed sensing, and their shared operator helpers."""

from __future__ import annotations

import math

import pytest
import torch

import reconguard.physics.coils as coils_module
from reconguard.models import CSTV, MoDL
from reconguard.models.classical import gradient, gradient_adjoint
from reconguard.models.modl import conjugate_gradient
from reconguard.models.zero_filled import zero_filled
from reconguard.physics import MRIOperator, RandomMask, fft2c, simulate_coil_maps
from reconguard.physics.coils import resolve_operator
from tests.conftest import random_complex


def _psnr(recon: torch.Tensor, target: torch.Tensor) -> float:
    mse = (recon.abs() - target.abs()).square().mean()
    return float(10 * torch.log10(target.abs().max() ** 2 / mse))


def _phantom(size: int = 64) -> torch.Tensor:
    """Piecewise-constant ellipses (a simplified Shepp-Logan), maximum 1, ``(1, 1, N, N)``."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    image = torch.zeros(size, size)
    ellipses = [(0, 0, 0.85, 0.7, 0.6), (0, 0, 0.75, 0.6, -0.2), (-0.3, -0.2, 0.2, 0.15, 0.5),
                (0.3, 0.25, 0.15, 0.25, 0.4), (0.1, -0.35, 0.1, 0.1, 0.6)]
    for cy, cx, ry, rx, value in ellipses:
        image += value * (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1).float()
    return (image / image.max()).to(torch.complex64)[None, None]


def test_conjugate_gradient_matches_dense_solve(gen):
    size, coils, lam = 8, 2, 0.05
    maps = simulate_coil_maps(coils, (size, size))[None].expand(2, coils, size, size)
    mask = RandomMask(acceleration=2, center_fraction=0.25)((1, 1, 1, size), seed=0)
    operator = MRIOperator(mask, maps)
    rhs = random_complex((2, 1, size, size), gen)
    solution = conjugate_gradient(operator.normal, rhs, lam=lam, iterations=40)
    for i in range(2):
        basis = torch.eye(size * size, dtype=torch.complex64).reshape(-1, 1, 1, size, size)
        columns = [operator.normal(e.expand(2, 1, size, size))[i].flatten() for e in basis]
        matrix = torch.stack(columns, dim=1).to(torch.complex128) + lam * torch.eye(size * size)
        dense = torch.linalg.solve(matrix, rhs[i].flatten().to(torch.complex128))
        torch.testing.assert_close(solution[i].flatten().to(torch.complex128), dense, rtol=1e-4, atol=1e-4)
    residual = rhs - operator.normal(solution) - lam * solution
    assert residual.abs().norm() < 1e-4 * rhs.abs().norm()


def test_conjugate_gradient_warm_start_and_converged_input(gen):
    mask = RandomMask(acceleration=4, center_fraction=0.25)((1, 1, 1, 8), seed=0)
    operator = MRIOperator(mask)
    rhs = random_complex((1, 1, 8, 8), gen)
    exact = conjugate_gradient(operator.normal, rhs, lam=0.1, iterations=30)
    again = conjugate_gradient(operator.normal, rhs, lam=0.1, iterations=5, x0=exact)
    torch.testing.assert_close(again, exact, rtol=1e-5, atol=1e-5)
    zero = conjugate_gradient(operator.normal, torch.zeros_like(rhs), lam=0.1, iterations=3)
    assert torch.equal(zero, torch.zeros_like(rhs))


def test_modl_lam_stays_positive_and_learnable():
    model = MoDL(num_unrolls=1, cg_iterations=2, chans=4, num_layers=2, lam=0.2)
    assert math.isclose(model.lam.item(), 0.2, rel_tol=1e-6)
    with torch.no_grad():
        model.raw_lam.fill_(-30.0)
    assert model.lam.item() > 0
    assert model.raw_lam.requires_grad


@pytest.mark.parametrize("name", ["cs_tv", "modl"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_model_based_reconstructors_are_scale_equivariant(name, seed, gen):
    with torch.random.fork_rng():  # weights from a fixed seed, not from whatever ran before
        torch.manual_seed(seed)
        model = CSTV(iterations=10) if name == "cs_tv" else MoDL(num_unrolls=2, cg_iterations=3, chans=4, num_layers=3)
    mask = RandomMask(acceleration=4, center_fraction=0.25)((1, 1, 1, 16), seed=0)
    masked = random_complex((2, 1, 16, 16), gen) * mask
    with torch.no_grad():
        scaled = model(1e-4 * masked, mask)
        torch.testing.assert_close(scaled, 1e-4 * model(masked, mask), rtol=1e-4, atol=1e-9)


def test_multicoil_without_maps_estimates_them(gen, monkeypatch):
    calls = []
    maps = simulate_coil_maps(3, (16, 16))[None].expand(2, 3, 16, 16)

    def fake_estimate(masked_kspace, mask):
        calls.append(masked_kspace.shape)
        return maps

    monkeypatch.setattr(coils_module, "estimate_coil_maps", fake_estimate)
    mask = RandomMask(acceleration=4, center_fraction=0.25)((1, 1, 1, 16), seed=0)
    masked = random_complex((2, 3, 16, 16), gen) * mask
    assert resolve_operator(masked, mask, None).coil_maps is maps
    assert resolve_operator(masked[:, :1], mask, None).coil_maps is None
    model = CSTV(iterations=5)
    torch.testing.assert_close(model(masked, mask), model(masked, mask, coil_maps=maps))
    assert len(calls) == 2


def test_tv_gradient_adjointness(gen):
    image = random_complex((2, 1, 7, 5), gen)
    grad = random_complex((2, 2, 7, 5), gen)
    lhs = torch.vdot(gradient(image).flatten(), grad.flatten())
    rhs = torch.vdot(image.flatten(), gradient_adjoint(grad).flatten())
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("coils", [1, 4])
def test_cs_tv_beats_zero_filled_on_phantom(coils):
    target = _phantom()
    maps = simulate_coil_maps(coils, (64, 64))[None] if coils > 1 else None
    mask = RandomMask(acceleration=4, center_fraction=0.08)((1, 1, 1, 64), seed=0)
    masked = fft2c(target if maps is None else target * maps) * mask
    baseline = _psnr(zero_filled(masked, maps), target)
    with torch.no_grad():
        recon = CSTV()(masked, mask, coil_maps=maps)
    assert _psnr(recon, target) > baseline + 6.0


def test_modl_keeps_a_fixed_data_consistency_weight_out_of_its_parameters():
    from reconguard.models import build

    fixed = build("modl", num_unrolls=1, chans=4, lam=0.18, learn_lam=False)
    learned = build("modl", num_unrolls=1, chans=4, lam=0.18)
    assert float(fixed.lam) == pytest.approx(0.18) and float(learned.lam) == pytest.approx(0.18)
    assert "raw_lam" not in dict(fixed.named_parameters()) and "raw_lam" in dict(learned.named_parameters())
    assert "raw_lam" in fixed.state_dict()  # saved and loaded like the learned one
