"""PGD: budget, support, determinism, beats same-norm noise, restores the model; analytic check."""

from __future__ import annotations

import pytest
import torch

from reconguard.attacks import PGD, AttackLoss, ThreatModel, fgsm
from reconguard.errors import ConfigError
from reconguard.models import ZeroFilled, build
from reconguard.physics.fft import ifft2c

THREATS = [
    ThreatModel(domain="kspace", norm="l2", eps=0.05),
    ThreatModel(domain="kspace", norm="l2", eps=0.05, per_coil=True),
    ThreatModel(domain="kspace", norm="linf", eps=0.02),
    ThreatModel(domain="kspace", norm="linf", eps=0.02, linf_mode="real_imag"),
    ThreatModel(domain="kspace", norm="l2", eps=0.05, support="full"),
    ThreatModel(domain="image", norm="linf", eps=0.02),
    ThreatModel(domain="image", norm="l2", eps=0.05, support="fully_sampled"),
]


def _ids(t):
    return f"{t.label}-{t.support}-{t.linf_mode}" + ("-coil" if t.per_coil else "")


def _attack(model, batch, threat, **kwargs):
    attack = PGD(threat, AttackLoss(reference=kwargs.pop("reference", "target")), steps=kwargs.pop("steps", 5),
                 **kwargs)
    return attack(model, batch["masked_kspace"], batch["mask"], target=batch["target"],
                  coil_maps=batch["coil_maps"], max_value=batch["max_value"])


@pytest.mark.parametrize("threat", THREATS, ids=_ids)
def test_pgd_properties(threat, multi, tiny_unet):
    y = multi["masked_kspace"]
    result = _attack(tiny_unet, multi, threat, seed=3)
    budget = result.budget
    # 1. within budget (relative where relative)
    if threat.norm == "l2":
        dims = (-2, -1) if threat.per_coil else (1, 2, 3)
        assert torch.all(torch.linalg.vector_norm(result.delta, dim=dims, keepdim=True) <= budget * (1 + 1e-5))
        if not threat.per_coil and threat.domain == "kspace":
            assert torch.all(result.norm <= threat.eps * y.flatten(1).norm(dim=1) * (1 + 1e-5))
    else:
        assert torch.all(result.norm <= budget.flatten() * (1 + 1e-5))
    # 2. zero outside the support
    if threat.domain == "kspace" and threat.support == "acquired":
        assert torch.all(result.delta * ~multi["mask"] == 0)
        assert torch.all((result.adv_kspace - y) * ~multi["mask"] == 0)
    # 3. deterministic per seed
    again = _attack(tiny_unet, multi, threat, seed=3)
    torch.testing.assert_close(again.delta, result.delta, rtol=0, atol=0)
    # 4. at least as damaging as same-norm Gaussian noise
    assert torch.all(result.loss >= result.noise_loss)
    assert torch.all(result.loss > result.clean_loss)
    torch.testing.assert_close(threat.measure(result.delta), result.norm)


def test_pgd_restores_model_and_never_touches_weight_gradients(single, tiny_unet):
    tiny_unet.train()
    flags = [p.requires_grad for p in tiny_unet.parameters()]
    _attack(tiny_unet, single, THREATS[0])
    assert tiny_unet.training
    assert [p.requires_grad for p in tiny_unet.parameters()] == flags
    assert all(p.grad is None for p in tiny_unet.parameters())


def test_pgd_restores_model_on_error(single, tiny_unet):
    tiny_unet.train()
    with pytest.raises(ConfigError):
        PGD(THREATS[0], AttackLoss(reference="target"))(tiny_unet, single["masked_kspace"], single["mask"])
    assert tiny_unet.training and all(p.requires_grad for p in tiny_unet.parameters())


def test_input_requires_grad_is_not_leaked(single, tiny_unet):
    y = single["masked_kspace"].clone()
    result = PGD(THREATS[0], steps=2)(tiny_unet, y, single["mask"], target=single["target"])
    assert not y.requires_grad and y.grad is None
    assert not result.delta.requires_grad and not result.recon.requires_grad


@pytest.mark.parametrize("threat", [THREATS[0], THREATS[2]], ids=_ids)
def test_zero_filled_analytic_error_equals_delta_norm(threat, single):
    """Single-coil zero-filled with an orthonormal FFT: ||x_adv - x_clean||_2 == ||M delta||_2."""
    result = _attack(ZeroFilled(), single, threat, steps=3)
    image_error = (result.recon - result.clean_recon).flatten(1).norm(dim=1)
    torch.testing.assert_close(image_error, result.delta.flatten(1).norm(dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ifft2c(result.adv_kspace - single["masked_kspace"]), result.recon - result.clean_recon,
                               rtol=1e-4, atol=1e-6)


def test_zero_filled_l2_attack_uses_the_whole_budget(single):
    threat = ThreatModel(domain="kspace", norm="l2", eps=0.05)
    result = _attack(ZeroFilled(), single, threat, steps=5)
    torch.testing.assert_close(result.norm, result.budget.flatten(), rtol=1e-4, atol=0)


def test_unsupervised_loss_needs_no_target(single, tiny_unet):
    attack = PGD(THREATS[0], AttackLoss(reference="clean"), steps=3)
    result = attack(tiny_unet, single["masked_kspace"], single["mask"])
    assert torch.all(result.loss > result.noise_loss) and torch.all(result.clean_loss == 0)


def test_region_loss_and_targeted_loss(single, tiny_unet):
    region = torch.zeros_like(single["target"], dtype=torch.bool)
    region[..., 10:20, 10:20] = True
    threat = ThreatModel(domain="image", norm="linf", eps=0.05)
    result = PGD(threat, steps=4)(tiny_unet, single["masked_kspace"], single["mask"], target=single["target"],
                                  region=region)
    assert torch.all(result.delta[..., ~region[0, 0]] == 0)  # image-domain delta stays in the region
    goal = torch.zeros_like(single["target"])
    pulled = PGD(threat, AttackLoss(targeted=True), steps=4)(tiny_unet, single["masked_kspace"], single["mask"],
                                                             target=goal)
    assert torch.all(pulled.loss > pulled.clean_loss)  # negative distance to the goal increased


def test_fgsm_and_restarts_and_patience(single, tiny_unet):
    threat = ThreatModel(domain="kspace", norm="linf", eps=0.02)
    one = fgsm(threat)(tiny_unet, single["masked_kspace"], single["mask"], target=single["target"])
    torch.testing.assert_close(one.norm, one.budget.flatten(), rtol=1e-5, atol=0)
    multi_start = _attack(tiny_unet, single, threat, steps=3, restarts=2)
    single_start = _attack(tiny_unet, single, threat, steps=3, restarts=1)
    assert torch.all(multi_start.loss >= single_start.loss - 1e-7)
    early = _attack(tiny_unet, single, threat, steps=50, patience=1, step_size=1e-6, random_start=False)
    assert len(early.history) < 50


class NoisyModel(torch.nn.Module):
    """A stochastic reconstructor: zero-filled plus fresh noise at each call."""

    differentiable, stochastic = True, True

    def forward(self, masked_kspace, mask, *, coil_maps=None):
        recon = ZeroFilled()(masked_kspace, mask)
        return recon + 0.05 * torch.randn_like(recon.real)


def test_eot_is_used_for_stochastic_models(single):
    attack = PGD(THREATS[0], steps=2)
    result = attack(NoisyModel(), single["masked_kspace"], single["mask"], target=single["target"])
    assert attack._eot_samples(NoisyModel()) == 8
    assert result.evaluations == 3 + 3  # 2 steps + final per restart, then 3 final reconstructions
    torch.testing.assert_close(result.norm, result.budget.flatten(), rtol=1e-4, atol=0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(steps=0), dict(restarts=0), dict(step_size=-1.0), dict(eot_samples=0), dict(patience=0)],
)
def test_bad_pgd_parameters(kwargs):
    with pytest.raises(ConfigError):
        PGD(THREATS[0], **kwargs)
    with pytest.raises(ConfigError):
        PGD(ThreatModel(domain="kspace", norm="l0", eps=3))


def test_pgd_on_every_registered_model(single):
    from reconguard.models import MODELS

    tiny = {"unet": dict(chans=4, num_pool_layers=2), "varnet": dict(num_cascades=2, chans=4, pools=2,
            sens_chans=2, sens_pools=2), "modl": dict(num_unrolls=2, chans=8, num_layers=3, cg_iterations=3),
            "cs_tv": dict(iterations=10)}
    for name in MODELS:
        torch.manual_seed(0)
        model = build(name, **tiny.get(name, {}))
        result = _attack(model, single, THREATS[0], steps=3)
        assert torch.all(result.loss >= result.noise_loss), name
