"""SparseKSpace: l0 budget, support, determinism, beats random spikes, restores the model."""

from __future__ import annotations

import pytest
import torch

from reconguard.attacks import AttackLoss, SparseKSpace, ThreatModel
from reconguard.attacks.noise import scaled_noise
from reconguard.errors import ConfigError
from reconguard.models import ZeroFilled

SPIKES = ThreatModel(domain="kspace", norm="l0", eps=6, amplitude=0.05)


def _attack(model, batch, threat=SPIKES, **kwargs):
    loss = AttackLoss(reference=kwargs.pop("reference", "target"))
    return SparseKSpace(threat, loss, steps=kwargs.pop("steps", 5), **kwargs)(
        model, batch["masked_kspace"], batch["mask"], target=batch["target"], coil_maps=batch["coil_maps"]
    )


@pytest.mark.parametrize("model_name", ["zero_filled", "unet"])
@pytest.mark.parametrize("coils", ["single", "multi"])
def test_sparse_properties(model_name, coils, request, tiny_unet):
    batch = request.getfixturevalue(coils)
    model = ZeroFilled() if model_name == "zero_filled" else tiny_unet
    y, mask = batch["masked_kspace"], batch["mask"]
    result = _attack(model, batch, seed=3)
    k = int(SPIKES.eps)
    # 1. at most k non-zeros per slice, each within the amplitude bound (relative to max |y|)
    nonzeros = (result.delta != 0).flatten(1).sum(dim=1)
    assert torch.all(nonzeros <= k) and torch.all(nonzeros > 0)
    torch.testing.assert_close(result.norm, nonzeros.to(result.norm.dtype))
    amplitude = SPIKES.amplitude * y.abs().flatten(1).amax(dim=1)
    assert torch.all(result.delta.abs().flatten(1).amax(dim=1) <= amplitude * (1 + 1e-5))
    # 2. zero off the acquired samples, and the model saw exactly y + delta there
    assert torch.all(result.delta * ~mask == 0)
    torch.testing.assert_close(result.adv_kspace, y + result.delta, rtol=0, atol=0)
    # 3. deterministic per seed
    again = _attack(model, batch, seed=3)
    torch.testing.assert_close(again.delta, result.delta, rtol=0, atol=0)
    # 4. at least as damaging as the same number of random spikes of the same amplitude
    assert torch.all(result.loss >= result.noise_loss)
    assert torch.all(result.loss > result.clean_loss)


def test_spikes_use_the_full_amplitude(single):
    result = _attack(ZeroFilled(), single)
    spikes = result.delta.abs()[result.delta != 0].reshape(2, -1)
    assert spikes.shape[1] == SPIKES.eps  # exactly k spikes on a batch with enough acquired samples
    torch.testing.assert_close(spikes, result.budget.reshape(2, 1).expand_as(spikes), rtol=1e-5, atol=0)


def test_spikes_beat_many_random_spike_draws(single, tiny_unet):
    """Visual plausibility: k chosen spikes hurt more than any of 10 draws of k random spikes."""
    result = _attack(tiny_unet, single, steps=8)
    support = SPIKES.support_mask(single["mask"], single["masked_kspace"])
    gen = torch.Generator().manual_seed(0)
    worst = torch.full_like(result.loss, -torch.inf)
    with torch.no_grad():
        for _ in range(10):
            noise = scaled_noise(SPIKES, tuple(result.delta.shape), support, result.budget, gen, like=result.delta)
            recon = tiny_unet(single["masked_kspace"] + noise, single["mask"])
            worst = torch.maximum(worst, AttackLoss()(recon, single["target"]))
    assert torch.all(result.loss > worst)
    # the damage lives in the image as spread Fourier modes, not at the spike locations
    assert torch.all((result.recon - result.clean_recon).abs().flatten(1).gt(0).float().mean(dim=1) > 0.5)


def test_more_spikes_do_more_damage(single):
    few = _attack(ZeroFilled(), single, ThreatModel(domain="kspace", norm="l0", eps=2, amplitude=0.05))
    many = _attack(ZeroFilled(), single, ThreatModel(domain="kspace", norm="l0", eps=12, amplitude=0.05))
    assert torch.all(many.loss > few.loss)


def test_unsupervised_loss_starts_randomly_and_beats_noise(single, tiny_unet):
    attack = SparseKSpace(SPIKES, AttackLoss(reference="clean"))
    assert attack.random_start
    result = attack(tiny_unet, single["masked_kspace"], single["mask"])
    assert torch.all(result.loss > result.noise_loss) and torch.all(result.clean_loss == 0)


def test_sparse_restores_model_and_never_touches_weight_gradients(single, tiny_unet):
    tiny_unet.train()
    flags = [p.requires_grad for p in tiny_unet.parameters()]
    y = single["masked_kspace"].clone()
    result = _attack(tiny_unet, single, steps=2)
    assert tiny_unet.training
    assert [p.requires_grad for p in tiny_unet.parameters()] == flags
    assert all(p.grad is None for p in tiny_unet.parameters())
    torch.testing.assert_close(single["masked_kspace"], y, rtol=0, atol=0)
    assert not result.delta.requires_grad and not result.recon.requires_grad


def test_absolute_amplitude(single):
    threat = ThreatModel(domain="kspace", norm="l0", eps=3, amplitude=0.25, relative=False)
    result = _attack(ZeroFilled(), single, threat, steps=2)
    assert torch.all(result.delta.abs() <= 0.25 * (1 + 1e-5))
    assert torch.all(result.norm == 3)


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(step_size=0.0), dict(eot_samples=0)])
def test_bad_sparse_parameters(kwargs):
    with pytest.raises(ConfigError):
        SparseKSpace(SPIKES, **kwargs)


def test_sparse_needs_an_l0_threat():
    with pytest.raises(ConfigError):
        SparseKSpace(ThreatModel(domain="kspace", norm="l2", eps=0.05))
