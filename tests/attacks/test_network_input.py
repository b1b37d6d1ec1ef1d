"""The network-input threat (Saberi et al.): budget, where its energy lies, what the model receives."""

from __future__ import annotations

import pytest
import torch

from reconguard.attacks import PGD, AttackLoss, ThreatModel
from reconguard.attacks.adaptive import BPDA
from reconguard.attacks.presets import build_attack
from reconguard.errors import ConfigError, DataError
from reconguard.models import build, registry
from reconguard.models.base import INPUT_DELTA_MODELS
from reconguard.models.zero_filled import zero_filled
from reconguard.physics.fft import fft2c, ifft2c
from tests.attacks.conftest import make_batch

PAPER = ThreatModel(domain="image", norm="linf", eps=0.01, linf_mode="real_imag", support="network_input")


def _energy_on_acquired(image: torch.Tensor, mask: torch.Tensor) -> float:
    kspace = fft2c(image)
    return float((kspace * mask).abs().square().sum() / kspace.abs().square().sum())


def test_the_list_of_models_that_take_an_input_delta_is_the_registry_s():
    accepting = sorted(n for n, cls in registry.MODELS.items() if getattr(cls, "accepts_input_delta", False))
    assert accepting == sorted(INPUT_DELTA_MODELS)


def test_budget_is_a_box_on_real_and_imaginary_parts_relative_to_the_input_image(single):
    attack = PGD(PAPER, AttackLoss(kind="relative_l2", reference="clean", complex_valued=True), steps=3, seed=1)
    result = attack(build("zero_filled"), single["masked_kspace"], single["mask"])
    peak = zero_filled(single["masked_kspace"]).abs().flatten(1).amax(dim=1)
    bound = (0.01 * peak).reshape(-1, 1, 1, 1) * (1 + 1e-6)
    assert bool((result.delta.real.abs() <= bound).all()) and bool((result.delta.imag.abs() <= bound).all())
    assert bool((result.delta.real.abs().flatten(1).amax(dim=1) > 0.5 * bound.flatten()).all())
    torch.testing.assert_close(result.adv_kspace, single["masked_kspace"])  # y itself is untouched
    assert result.input_delta is result.delta


def test_the_model_receives_the_whole_delta_while_a_measured_perturbation_loses_its_null_space(single):
    """Zero filling shows what reaches the model: all of delta here, only A^H A delta for pgd-image."""
    model, y, mask = build("zero_filled"), single["masked_kspace"], single["mask"]
    loss = AttackLoss(kind="relative_l2", reference="clean", complex_valued=True)
    received = {}
    for support in ("network_input", "zero_filled"):
        threat = ThreatModel(domain="image", norm="linf", eps=0.01, linf_mode="real_imag", support=support)
        result = PGD(threat, loss, steps=2, seed=0)(model, y, mask)
        received[support] = (result.recon - result.clean_recon, result.delta)
    change, delta = received["network_input"]
    torch.testing.assert_close(change, delta)
    assert _energy_on_acquired(delta, mask) < 0.6  # most of a box perturbation is off the 1/4 acquired
    change, delta = received["zero_filled"]
    torch.testing.assert_close(change, ifft2c(fft2c(delta) * mask))  # A^H A delta: the measured part only


@pytest.mark.parametrize("name", ["unet", "resunet", "modl"])
def test_networks_add_the_delta_to_their_input_image(name, single, gen):
    torch.manual_seed(0)
    config = {"modl": dict(num_unrolls=2, chans=4, cg_iterations=3), "unet": dict(chans=4, num_pool_layers=2),
              "resunet": dict(chans=4, num_pool_layers=2)}[name]
    model = build(name, in_chans=2, **config) if name != "modl" else build(name, **config)
    y, mask = single["masked_kspace"], single["mask"]
    delta = 0.01 * torch.randn(y.shape[0], 1, *y.shape[-2:], dtype=torch.complex64, generator=gen)
    with torch.no_grad():
        plain, moved = model(y, mask), model(y, mask, input_delta=delta)
        again = model(y, mask, input_delta=torch.zeros_like(delta))
    torch.testing.assert_close(again, plain)
    assert float((moved - plain).abs().max()) > 1e-4
    if name == "unet":  # the image networks see exactly zero_filled(y) + delta
        from reconguard.models.unet import image_network

        def network_on(image_delta):
            return image_network(model.network, y, None, complex_channels=True, input_delta=image_delta)

        torch.testing.assert_close(moved, network_on(delta))


def test_modl_feeds_the_delta_to_every_data_consistency_step(single):
    """An input perturbation outside the measured k-space is multiplied by ~1/lam by MoDL's DC."""
    torch.manual_seed(0)
    model = build("modl", num_unrolls=1, chans=4, cg_iterations=5, lam=0.05)
    torch.nn.init.zeros_(model.denoiser.layers[-1].weight)
    torch.nn.init.zeros_(model.denoiser.layers[-1].bias)  # D = identity: the DC step alone
    y, mask = single["masked_kspace"], single["mask"]
    null = torch.zeros(y.shape[0], 1, *y.shape[-2:], dtype=torch.complex64)
    null_k = fft2c(null)
    column = int((~mask[0, 0, 0]).nonzero()[0])
    null_k[..., 3, column] = 0.001
    delta = ifft2c(null_k)
    assert _energy_on_acquired(delta, mask) < 1e-10
    with torch.no_grad():
        change = model(y, mask, input_delta=delta) - model(y, mask)
    # x = (A^H A + lam)^{-1}(A^H y + d + lam D(A^H y + d)); off the samples: d / lam + d.
    gain = float(change.flatten(1).norm(dim=1).mean() / delta.flatten(1).norm(dim=1).mean())
    assert gain == pytest.approx(1 / 0.05 + 1, rel=0.02)


def test_models_and_operations_without_input_delta_support_refuse_it(single):
    y, mask = single["masked_kspace"], single["mask"]
    delta = torch.zeros(y.shape[0], 1, *y.shape[-2:], dtype=torch.complex64)
    with pytest.raises(ConfigError, match="does not take a network-input perturbation"):
        build("varnet", num_cascades=1, chans=4, pools=2, sens_chans=2, sens_pools=1)(y, mask, input_delta=delta)
    with pytest.raises(DataError, match="input_delta must be complex of shape"):
        build("zero_filled")(y, mask, input_delta=delta.real)
    with pytest.raises(ConfigError, match="model_input"):
        PAPER.apply(y, mask, delta)


def test_bpda_passes_the_input_delta_to_both_models(single):
    y, mask = single["masked_kspace"], single["mask"]
    model = build("unet", in_chans=2, chans=4, num_pool_layers=2)
    wrapped = BPDA(build("zero_filled"), model)
    assert wrapped.accepts_input_delta
    delta = (0.01 * torch.ones(y.shape[0], 1, *y.shape[-2:])).to(torch.complex64).requires_grad_(True)
    out = wrapped(y, mask, input_delta=delta)
    torch.testing.assert_close(out.detach(), zero_filled(y) + delta.detach())
    (grad,) = torch.autograd.grad(out.abs().sum(), delta)
    assert float(grad.abs().sum()) > 0
    varnet = build("varnet", num_cascades=1, chans=4, pools=2, sens_chans=2, sens_pools=1)
    assert not BPDA(varnet, model).accepts_input_delta


def test_the_preset_is_the_papers_attack():
    attack = build_attack("pgd-input")
    assert (attack.threat.support, attack.threat.linf_mode, attack.threat.eps) == ("network_input", "real_imag", 0.01)
    assert (attack.steps, attack.step_size, attack.random_start) == (10, 0.2, True)
    assert (attack.loss.kind, attack.loss.reference, attack.loss.complex_valued) == ("relative_l2", "clean", True)


def test_relative_l2_complex_loss_is_the_papers_formula(gen):
    recon = torch.randn(2, 1, 8, 8, dtype=torch.complex64, generator=gen)
    clean = torch.randn(2, 1, 8, 8, dtype=torch.complex64, generator=gen)
    value = AttackLoss(kind="relative_l2", reference="clean", complex_valued=True)(recon, clean)
    expected = (recon - clean).flatten(1).norm(dim=1) / clean.flatten(1).norm(dim=1)
    torch.testing.assert_close(value, expected)
    with pytest.raises(ConfigError):
        AttackLoss(kind="ssim", reference="clean", complex_valued=True)


def test_attacks_on_multi_coil_data_pass_the_delta_with_coil_maps():
    batch = make_batch(coils=3)
    model = build("modl", num_unrolls=1, chans=4, cg_iterations=3)
    result = build_attack("pgd-input", steps=2)(model, batch["masked_kspace"], batch["mask"],
                                                coil_maps=batch["coil_maps"])
    assert result.delta.shape == (batch["masked_kspace"].shape[0], 1, *batch["masked_kspace"].shape[-2:])
    assert bool((result.loss > result.noise_loss).all())
