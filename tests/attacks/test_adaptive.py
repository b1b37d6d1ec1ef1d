"""BPDA: exact forward values, the approximation's gradients; PGD through it beats noise; EOT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reconguard.attacks import BPDA, PGD, AttackLoss, PenalizedPGD, ThreatModel
from reconguard.errors import ConfigError
from reconguard.models import ZeroFilled, build
from reconguard.models.zero_filled import zero_filled

THREAT = ThreatModel(domain="kspace", norm="l2", eps=0.1)


class QuantizedNumpy(torch.nn.Module):
    """A non-differentiable 'defense': k-space rounded to a grid in NumPy, then the wrapped model."""

    differentiable, stochastic = False, False

    def __init__(self, model, step=0.01):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, masked_kspace, mask, *, coil_maps=None):
        y = masked_kspace.detach().numpy()
        rounded = (np.round(y.real / self.step) + 1j * np.round(y.imag / self.step)) * self.step
        with torch.no_grad():
            return self.model(torch.from_numpy(rounded.astype(np.complex64)), mask, coil_maps=coil_maps)


class Jitter(torch.nn.Module):
    """A stochastic model that records the batch sizes it sees."""

    differentiable, stochastic = True, True

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, masked_kspace, mask, *, coil_maps=None):
        self.batches.append(masked_kspace.shape[0])
        recon = zero_filled(masked_kspace, coil_maps)
        return recon + 0.01 * torch.randn_like(recon.real)


def test_bpda_values_are_exact_and_gradients_are_the_approximations(single, tiny_unet):
    y, mask = single["masked_kspace"], single["mask"]
    defense = QuantizedNumpy(tiny_unet)
    wrapped = BPDA(defense, tiny_unet)
    assert wrapped.differentiable and not wrapped.stochastic
    y_in = y.clone().requires_grad_(True)
    out = wrapped(y_in, mask)
    torch.testing.assert_close(out.detach(), defense(y, mask), rtol=0, atol=0)
    assert not torch.equal(out.detach(), tiny_unet(y, mask))  # the defense really changes the output
    cotangent = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(out, y_in, grad_outputs=cotangent)
    y_ref = y.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(tiny_unet(y_ref, mask), y_ref, grad_outputs=cotangent)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0


def test_pgd_through_bpda_beats_noise_on_a_non_differentiable_defense(single, tiny_unet):
    defense = QuantizedNumpy(tiny_unet)
    with pytest.raises(RuntimeError):  # plain white-box PGD has no gradient to follow
        PGD(THREAT, steps=2)(defense, single["masked_kspace"], single["mask"], target=single["target"])
    result = PGD(THREAT, steps=5)(
        BPDA(defense, tiny_unet), single["masked_kspace"], single["mask"], target=single["target"]
    )
    assert torch.all(result.loss > result.noise_loss)
    assert torch.all(result.loss > result.clean_loss)
    # the attack's recon is the defense's exact output on the adversarial input
    torch.testing.assert_close(result.recon, defense(result.adv_kspace, single["mask"]), rtol=0, atol=0)


def test_pgd_uses_eot_on_stochastic_wrappers(single):
    jitter = Jitter()
    wrapped = BPDA(jitter, ZeroFilled())
    assert wrapped.stochastic
    result = PGD(THREAT, steps=2)(wrapped, single["masked_kspace"], single["mask"], target=single["target"])
    batch = single["masked_kspace"].shape[0]
    # clean recon (computed once, reused in the result), 2 steps + final with 8 EOT draws each,
    # then the attacked and the noise recons
    assert jitter.batches == [batch] + [8 * batch] * 3 + [batch] * 2
    assert torch.all(result.loss >= result.noise_loss)
    assert BPDA(ZeroFilled(), Jitter()).stochastic  # random gradients call for EOT too


def test_bpda_is_frozen_and_restored_with_its_models(single, tiny_unet):
    wrapped = BPDA(ZeroFilled(), tiny_unet).train()
    PGD(THREAT, steps=1)(wrapped, single["masked_kspace"], single["mask"], target=single["target"])
    assert wrapped.training and tiny_unet.training
    assert all(p.requires_grad and p.grad is None for p in tiny_unet.parameters())


def test_bpda_rejects_bad_models(single):
    with pytest.raises(ConfigError):
        BPDA(ZeroFilled(), QuantizedNumpy(ZeroFilled()))  # a non-differentiable approximation is no approximation
    with pytest.raises(ConfigError):
        BPDA(ZeroFilled(), "zero_filled")

    class Cropped(torch.nn.Module):
        differentiable, stochastic = True, False

        def forward(self, masked_kspace, mask, *, coil_maps=None):
            return zero_filled(masked_kspace)[..., 1:, :]

    with pytest.raises(ConfigError):
        BPDA(ZeroFilled(), Cropped())(single["masked_kspace"], single["mask"])


def test_penalized_pgd_trades_damage_for_a_low_penalty(single):
    threat = ThreatModel(domain="image", norm="linf", eps=0.05, linf_mode="real_imag", support="network_input")
    loss = AttackLoss(kind="relative_l2", reference="clean", complex_valued=True)
    model = build("zero_filled")

    def energy(kspace, mask, coil_maps, input_delta):  # differentiable in input_delta
        return input_delta.abs().square().flatten(1).sum(dim=1)

    args = (model, single["masked_kspace"], single["mask"])
    free = PenalizedPGD(threat, loss, penalty=energy, weight=0.0, steps=5, seed=0)(*args)
    held = PenalizedPGD(threat, loss, penalty=energy, weight=1e6, steps=5, seed=0)(*args)
    assert bool((held.norm <= free.norm).all())
    assert float(held.delta.abs().square().sum()) < 0.5 * float(free.delta.abs().square().sum())
    # The reported loss is the damage alone (relative l2 of the zero-filled change), not damage - penalty.
    clean = single["masked_kspace"]
    expected = held.delta.flatten(1).norm(dim=1) / zero_filled(clean).flatten(1).norm(dim=1)
    torch.testing.assert_close(held.loss, expected, rtol=1e-4, atol=1e-7)
    with pytest.raises(ConfigError):
        PenalizedPGD(threat, loss, penalty=energy, weight=-1.0)
