"""Cyclic mitigation: a valid reconstructor that stays in its ball, deterministic, exact on
consistent models, gated by its detector, batching-invariant, restores the model, and it sees
PGD attacks."""

from __future__ import annotations

import pytest
import torch

from reconguard.attacks import BPDA, PGD, ThreatModel
from reconguard.defenses.base import Defense
from reconguard.defenses.cyclic import CyclicMitigation
from reconguard.defenses.cyclic_batch import CyclicResult
from reconguard.defenses.cyclic_masks import delta_masks
from reconguard.errors import ConfigError, DataError
from reconguard.models import ZeroFilled, build
from reconguard.models.base import Reconstructor
from reconguard.physics import EquispacedMask, fft2c, ifft2c, simulate_coil_maps
from tests.attacks.conftest import make_batch

FAST = dict(steps=4, patience=None)
THREAT = ThreatModel(domain="image", norm="linf", eps=0.01)


def _args(batch):
    return batch["masked_kspace"], batch["mask"]


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build("unet", in_chans=2, chans=4, num_pool_layers=2).eval()


@pytest.fixture(scope="module")
def modl():
    """A tiny MoDL (SENSE data consistency + CNN): a PD-DL network as in the paper, untrained."""
    torch.manual_seed(0)
    return build("modl", num_unrolls=2, cg_iterations=6, chans=8, num_layers=3).eval()


class Oracle(torch.nn.Module):
    """Exactly measurement-consistent for any mask: acquired samples from the input, the rest
    from a fixed full k-space ``truth`` (single-coil)."""

    def __init__(self, truth: torch.Tensor):
        super().__init__()
        self.truth = truth

    def forward(self, masked_kspace, mask, *, coil_maps=None):
        truth = self.truth.repeat(masked_kspace.shape[0] // self.truth.shape[0], 1, 1, 1)
        return ifft2c(torch.where(mask, masked_kspace, truth))


@pytest.mark.parametrize("coils", [1, 3])
def test_is_a_reconstructor_single_and_multi_coil(coils, unet):
    batch = make_batch(coils=coils)
    defense = CyclicMitigation(unet, **FAST)
    out = defense(*_args(batch), coil_maps=batch["coil_maps"])
    assert out.shape == (2, 1, 32, 32) and out.dtype == torch.complex64 and bool(out.isfinite().all())
    assert isinstance(defense, Defense) and isinstance(defense, Reconstructor) and defense.name == "cyclic"
    assert defense.differentiable is False and defense.stochastic is False
    # calling the defense *is* mitigating (not the bare model): same output as mitigate(), not as unet
    with torch.no_grad():
        mitigated = defense.mitigate(*_args(batch), coil_maps=batch["coil_maps"])
        plain = unet(*_args(batch), coil_maps=batch["coil_maps"])
    torch.testing.assert_close(out, mitigated.recon)
    assert bool(mitigated.mitigated.all()) and not torch.allclose(out, plain)


@pytest.mark.parametrize("coils", [1, 3])
def test_never_leaves_its_ball_and_returns_the_recon_of_its_input(coils, unet):
    batch = make_batch(coils=coils)
    y, mask, maps = *_args(batch), batch["coil_maps"]
    result = CyclicMitigation(unet, **FAST).mitigate(y, mask, coil_maps=maps)
    assert isinstance(result, CyclicResult) and result.mitigated.all()
    budget = THREAT.budget(y, mask, coil_maps=maps)
    torch.testing.assert_close(result.budget, budget)
    assert torch.all(THREAT.measure(result.delta) <= budget.flatten() * (1 + 1e-5))
    assert bool((result.delta != 0).any()) and torch.all(result.loss <= result.score)
    assert len(result.history) == 4 and result.history[0] == pytest.approx(float(result.score.mean()))
    with torch.no_grad():
        again = unet(THREAT.apply(y, mask, result.delta, maps), mask, coil_maps=maps)
    torch.testing.assert_close(result.recon, again, rtol=1e-4, atol=1e-5)


def test_deterministic_per_seed(unet):
    batch = make_batch(coils=3)
    run = lambda seed: CyclicMitigation(unet, seed=seed, **FAST).mitigate(  # noqa: E731
        *_args(batch), coil_maps=batch["coil_maps"])
    first, second, other = run(1), run(1), run(2)
    for name in ("recon", "delta", "score", "loss"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert not torch.equal(first.score, other.score)
    alone = CyclicMitigation(unet, seed=1).score(batch["masked_kspace"][1:], batch["mask"][1:],
                                                 coil_maps=batch["coil_maps"][1:])
    torch.testing.assert_close(alone, first.score[1:])  # a slice's score does not depend on its batch


@pytest.mark.parametrize("coils", [1, 4])
def test_fully_sampled_zero_filled_is_cyclically_consistent(coils):
    size = 16
    gen = torch.Generator().manual_seed(0)
    image = torch.complex(torch.randn(2, 1, size, size, generator=gen), torch.randn(2, 1, size, size, generator=gen))
    maps = simulate_coil_maps(coils, (size, size)).expand(2, -1, -1, -1) if coils > 1 else None
    kspace = fft2c(image if maps is None else image * maps)
    mask = torch.ones(1, 1, 1, size, dtype=torch.bool)
    result = CyclicMitigation(ZeroFilled(), **FAST).mitigate(kspace, mask, coil_maps=maps)
    assert torch.all(result.score < 1e-5)
    assert bool(result.recon.isfinite().all()) and torch.all(result.loss <= result.score)


def test_oracle_model_scores_zero_clean_and_positive_attacked():
    batch = make_batch(coils=1, seed=1)
    y, mask = _args(batch)
    gen = torch.Generator().manual_seed(0)
    other = fft2c(torch.randn(y.shape, generator=gen).to(torch.complex64))
    oracle = Oracle(torch.where(mask, y, other))
    defense = CyclicMitigation(oracle, steps=20)
    assert torch.all(defense.score(y, mask) < 1e-6)
    noise = torch.complex(torch.randn(2, 1, 32, 32, generator=gen), torch.randn(2, 1, 32, 32, generator=gen))
    budget = THREAT.budget(y, mask)
    attacked = THREAT.apply(y, mask, THREAT.project(noise, budget, torch.ones(1, 1, 1, 1, dtype=torch.bool)))
    result = defense.mitigate(attacked, mask)
    assert torch.all(result.score > 1e-3)
    assert torch.all(result.loss < 0.9 * result.score)  # the mitigation undoes part of the attack


def test_detector_gate_returns_exactly_the_plain_reconstruction(unet):
    clean = make_batch(coils=3)
    y, mask, maps = *_args(clean), clean["coil_maps"]
    ungated = CyclicMitigation(unet, **FAST)
    defense = ungated.calibrated([clean, make_batch(coils=3, seed=4)], quantile=1.0)
    assert ungated.threshold is None and defense.threshold is not None and defense.model is ungated.model
    result = defense.mitigate(y, mask, coil_maps=maps)
    with torch.no_grad():
        plain = unet(y, mask, coil_maps=maps)
    assert not result.mitigated.any() and result.evaluations == 2
    assert torch.equal(result.recon, plain) and not bool((result.delta != 0).any())
    assert torch.equal(defense(y, mask, coil_maps=maps), plain)
    # Per-slice gating: only the slice above the threshold is optimised.
    defense.threshold = float(result.score.min())
    gated = defense.mitigate(y, mask, coil_maps=maps)
    low = int(result.score.argmin())
    assert gated.mitigated.tolist() == [i != low for i in range(2)]
    assert torch.equal(gated.recon[low], plain[low]) and not bool((gated.delta[low] != 0).any())
    assert bool((gated.delta[1 - low] != 0).any())


class Counter(torch.nn.Module):
    """Wraps a model and records the batch size of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.sizes = model, []

    def forward(self, masked_kspace, mask, *, coil_maps=None):
        self.sizes.append(masked_kspace.shape[0])
        return self.model(masked_kspace, mask, coil_maps=coil_maps)


def test_detector_on_one_mask_costs_two_reconstructions_and_scores_its_first_mask(unet):
    clean = make_batch(coils=3)
    y, mask, maps = *_args(clean), clean["coil_maps"]
    counted = Counter(unet)
    one, first_only = CyclicMitigation(counted, detector_masks=1), CyclicMitigation(unet, num_masks=1)
    score = one.score(y, mask, coil_maps=maps)
    assert counted.sizes == [2, 2]  # x1, then one mask's second stage (K = 3 would be [2, 6])
    torch.testing.assert_close(score, first_only.score(y, mask, coil_maps=maps))
    counted.sizes.clear()
    one = one.calibrated(score, quantile=1.0)
    result = one.mitigate(y, mask, coil_maps=maps)
    assert not result.mitigated.any() and counted.sizes == [2, 2]
    with pytest.raises(ConfigError, match="detector_masks"):
        CyclicMitigation(unet, detector_masks=4)


def test_calibrated_takes_scores_and_rejects_bad_input(unet):
    defense = CyclicMitigation(unet)
    assert defense.calibrated(torch.tensor([1.0, 2.0, 3.0]), quantile=0.5).threshold == pytest.approx(2.0)
    assert defense.calibrated([torch.tensor([4.0]), torch.tensor([0.0])], quantile=1.0).threshold == pytest.approx(4.0)
    with pytest.raises(ConfigError):
        defense.calibrated(torch.tensor([1.0]), quantile=1.5)
    with pytest.raises(DataError):
        defense.calibrated([])


@pytest.mark.parametrize("coils", [1, 3])
@pytest.mark.parametrize("variable", ["measured", "input"])
def test_batching_changes_the_cost_not_the_result(coils, variable, modl):
    batch = make_batch(coils=coils)
    args, maps = _args(batch), batch["coil_maps"]
    slow = CyclicMitigation.reference(modl, steps=4, variable=variable)
    fast = CyclicMitigation.reference(modl, steps=4, variable=variable, batched_masks=True, share_first_stage=True)
    a, b = slow.mitigate(*args, coil_maps=maps), fast.mitigate(*args, coil_maps=maps)
    assert (a.evaluations, b.evaluations) == (4 * 3 * 2, 4 * 2)
    torch.testing.assert_close(a.score, b.score, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-6)
    if variable == "input":
        # An untrained MoDL multiplies input changes off Omega by 1 / lam = 20 at each unroll, so
        # round-off differences between the two orders of summation grow into different iterates.
        return
    # Sign steps through a CNN + CG solver amplify round-off (gradients agree to ~1e-6 relative
    # at the start), so after a few steps the iterates agree to a small fraction of the budget.
    torch.testing.assert_close(a.delta, b.delta, rtol=0, atol=0.05 * float(a.budget.min()))
    torch.testing.assert_close(a.recon, b.recon, rtol=1e-4, atol=1e-4)  # image maximum ~1


def test_paper_configuration_mitigates_the_whole_input_inside_its_box(modl):
    batch = make_batch(coils=1)
    y, mask = _args(batch)
    paper = CyclicMitigation.paper(modl, steps=3)
    assert (paper.variable, paper.threat.linf_mode, paper.jitter_phase, paper.jitter_scale) == (
        "input", "real_imag", "equal", 6.0)
    assert paper.threshold is None and paper.patience is None and paper.batched_masks
    given = 0.005 * torch.randn(y.shape[0], 1, *y.shape[-2:], dtype=torch.complex64,
                                generator=torch.Generator().manual_seed(1))
    result = paper.mitigate(y, mask, input_delta=given)
    box = result.budget * (1 + 1e-6)
    assert bool((result.delta.real.abs() <= box).all()) and bool((result.delta.imag.abs() <= box).all())
    assert bool((result.loss <= result.score + 1e-7).all())  # the lowest-loss iterate is kept
    with torch.no_grad():  # the returned image is the model's reconstruction of that iterate
        torch.testing.assert_close(result.recon, modl(y, mask, input_delta=given + result.delta))
    frozen_ball = CyclicMitigation.paper(modl, steps=2, eps=0.0)
    with torch.no_grad():
        torch.testing.assert_close(frozen_ball(y, mask, input_delta=given), modl(y, mask, input_delta=given))
    with pytest.raises(ConfigError, match="variable='input' needs a model"):
        CyclicMitigation.paper(build("varnet", num_cascades=1, chans=4, pools=2, sens_chans=2, sens_pools=1))


def test_equal_phase_jitter_has_equal_real_and_imaginary_parts(modl):
    batch = make_batch(coils=1)
    y, mask = _args(batch)
    for phase, equal in (("equal", True), ("circular", False)):
        defense = CyclicMitigation(modl, jitter_phase=phase, steps=1)
        prepared = defense._prepare(y, mask.to(torch.bool), None, None)
        assert torch.equal(prepared.noise.real, prepared.noise.imag) is equal
        rms = float(prepared.noise.abs().square().mean().sqrt())
        assert rms == pytest.approx(1.0, rel=0.05)


def test_reference_configuration():
    ref = CyclicMitigation.reference(ZeroFilled())
    assert (ref.num_masks, ref.threat.eps, ref.step_size, ref.steps, ref.stages) == (3, 0.01, 0.005, 100, 2)
    assert (ref.variable, ref.threat.linf_mode, ref.jitter_phase) == ("input", "real_imag", "equal")
    assert ref.patience is None and ref.threshold is None and ref.jitter_scale == 6.0
    assert not ref.batched_masks and not ref.share_first_stage
    with pytest.raises(ConfigError):
        CyclicMitigation.reference(ZeroFilled(), step=3)


def test_restores_mode_and_requires_grad_and_never_touches_weight_gradients(unet):
    unet.train()
    unet.down_sample_layers[0].layers[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in unet.parameters()]
    try:
        batch = make_batch(coils=3)
        CyclicMitigation(unet, **FAST).mitigate(*_args(batch), coil_maps=batch["coil_maps"])
        assert unet.training and [p.requires_grad for p in unet.parameters()] == flags
        assert all(p.grad is None for p in unet.parameters())
        with pytest.raises(ConfigError):  # multi-coil without coil maps
            CyclicMitigation(unet, **FAST).mitigate(*_args(batch))
        assert unet.training and [p.requires_grad for p in unet.parameters()] == flags
    finally:
        unet.down_sample_layers[0].layers[0].weight.requires_grad_(True)
        unet.eval()


def test_delta_masks_differ_from_omega_and_share_its_acceleration():
    batch = make_batch(coils=1, batch=1, seed=3)
    _, mask = _args(batch)
    deltas = delta_masks(mask, (32, 32), num_masks=3, generator=None, seed=0)
    assert deltas.shape == (3, 1, 1, 1, 32) and deltas.dtype == torch.bool
    lines = [d.flatten() for d in deltas[:, 0]]
    assert all(not torch.equal(d, mask.flatten()) for d in lines)
    assert len({tuple(d.tolist()) for d in lines}) == 3
    assert abs(float(deltas.float().mean()) - float(mask.float().mean())) < 0.15
    assert torch.equal(deltas, delta_masks(mask, (32, 32), num_masks=3, generator=None, seed=0))
    custom = EquispacedMask(acceleration=4, center_fraction=0.08)
    assert delta_masks(mask, (32, 32), num_masks=3, generator=custom, seed=0).float().sum(dim=-1).max() <= 32 / 4 + 3


def test_stages_and_options():
    batch = make_batch(coils=1)
    args = _args(batch)
    two = CyclicMitigation(ZeroFilled(), stages=2).score(*args)
    three = CyclicMitigation(ZeroFilled(), stages=3).score(*args)
    assert three.shape == (2,) and bool(three.isfinite().all()) and not torch.equal(two, three)
    for bad in (dict(stages=1), dict(num_masks=0), dict(eps=-1.0), dict(patience=0), dict(threshold=float("nan"))):
        with pytest.raises(ConfigError):
            CyclicMitigation(ZeroFilled(), **bad)
    point_mask = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.3
    with pytest.raises(ConfigError):
        CyclicMitigation(ZeroFilled()).score(args[0] * point_mask, point_mask)


def test_pgd_attacked_inputs_score_higher_and_are_mitigated(modl):
    batch = make_batch(coils=3, batch=4, seed=5)
    y, mask, maps, target = *_args(batch), batch["coil_maps"], batch["target"]
    attack = PGD(THREAT, steps=10)(modl, y, mask, target=target, coil_maps=maps)
    defense = CyclicMitigation(modl, steps=30)
    clean_score = defense.score(y, mask, coil_maps=maps)
    result = defense.mitigate(attack.adv_kspace, mask, coil_maps=maps)
    assert torch.all(result.score > clean_score)
    error = lambda recon: (recon.abs() - target).pow(2).flatten(1).mean(dim=1)  # noqa: E731
    assert torch.all(error(result.recon) < error(attack.recon))


def test_adaptive_attack_runs_through_bpda(unet):
    batch = make_batch(coils=1)
    defense = CyclicMitigation(unet, steps=2, patience=None)
    result = PGD(THREAT, steps=2)(BPDA(defense, unet), *_args(batch), target=batch["target"])
    assert torch.all(THREAT.measure(result.delta) <= result.budget.flatten() * (1 + 1e-5))
    assert bool(result.recon.isfinite().all()) and result.loss.shape == (2,)


def test_cyclic_loss_is_the_score_and_differentiable_in_the_input(modl):
    batch = make_batch(coils=1)
    y, mask = _args(batch)
    defense = CyclicMitigation.paper(modl, steps=1)
    delta = torch.zeros(y.shape[0], 1, *y.shape[-2:], dtype=torch.complex64, requires_grad=True)
    value = defense.cyclic_loss(y, mask, input_delta=delta)
    (grad,) = torch.autograd.grad(value.sum(), delta)
    assert float(grad.abs().sum()) > 0
    torch.testing.assert_close(value.detach(), defense.score(y, mask), rtol=1e-4, atol=1e-6)
