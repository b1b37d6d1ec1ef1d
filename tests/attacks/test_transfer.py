"""Transfer: the diagonal is the white-box attack, every target sees the same attack and noise.

The transfer cells of an audit (and ``reconguard transfer``) are tested in tests/test_experiment.py."""

from __future__ import annotations

import pytest
import torch

from reconguard.attacks import FNAF, PGD, AttackLoss, ThreatModel, transfer
from reconguard.errors import ConfigError
from reconguard.metrics import psnr
from reconguard.models import ZeroFilled, build

KSPACE = ThreatModel(domain="kspace", norm="l2", eps=0.05)
IMAGE = ThreatModel(domain="image", norm="linf", eps=0.02)


@pytest.fixture
def models(tiny_unet):
    torch.manual_seed(1)
    return {"zero_filled": ZeroFilled(), "unet": tiny_unet, "unet_b": build("unet", chans=4, num_pool_layers=2)}


def _inputs(batch):
    return dict(target=batch["target"], coil_maps=batch["coil_maps"], max_value=batch["max_value"])


@pytest.mark.parametrize("threat", [KSPACE, IMAGE], ids=lambda t: t.label)
def test_white_box_entry_equals_the_direct_attack(threat, multi, models):
    attack = PGD(threat, steps=3, seed=5)
    direct = attack(models["unet"], multi["masked_kspace"], multi["mask"], **_inputs(multi))
    outcomes = transfer(attack, models["unet"], models, multi["masked_kspace"], multi["mask"], **_inputs(multi))
    assert set(outcomes) == set(models)
    white = outcomes["unet"]
    torch.testing.assert_close(white.source.delta, direct.delta, rtol=0, atol=0)
    torch.testing.assert_close(white.recon, direct.recon, rtol=0, atol=0)
    torch.testing.assert_close(white.clean_recon, direct.clean_recon, rtol=0, atol=0)
    torch.testing.assert_close(white.loss, direct.loss, rtol=0, atol=0)
    torch.testing.assert_close(white.noise_recon, direct.noise_recon, rtol=0, atol=0)
    # the perturbation hurts the white-box model more than the same-norm noise does
    score = lambda recon: psnr(multi["target"], recon.abs(), data_range=multi["max_value"], reduction="none")  # noqa: E731
    assert torch.all(score(white.recon) < score(white.noise_recon))
    assert threat.measure(white.source.noise).allclose(threat.measure(direct.delta), rtol=1e-4)
    for outcome in outcomes.values():
        assert outcome.source is white.source  # one attack (and one noise draw) for all targets
        assert not outcome.recon.requires_grad


def test_targets_are_evaluated_in_eval_mode_without_autograd(single, models):
    seen = []

    class Spy(torch.nn.Module):
        differentiable, stochastic = True, False

        def forward(self, masked_kspace, mask, *, coil_maps=None):
            seen.append((self.training, torch.is_grad_enabled()))
            return ZeroFilled()(masked_kspace, mask)

    spy = Spy().train()
    transfer(
        PGD(KSPACE, steps=1),
        models["zero_filled"],
        {"spy": spy},
        single["masked_kspace"],
        single["mask"],
        target=single["target"],
    )
    assert seen == [(False, False)] * 3 and spy.training


def test_unsupervised_transfer_uses_each_targets_own_clean_recon(single, models):
    attack = PGD(KSPACE, AttackLoss(reference="clean"), steps=2)
    outcomes = transfer(
        attack, models["unet"], models, single["masked_kspace"], single["mask"], target=single["target"]
    )
    for outcome in outcomes.values():
        assert torch.all(outcome.clean_loss == 0) and torch.all(outcome.loss > 0)


def test_bad_transfer_inputs(single, models):
    with pytest.raises(ConfigError):
        transfer(PGD(KSPACE), models["unet"], {}, single["masked_kspace"], single["mask"], target=single["target"])


def test_a_feature_attack_transfers_by_replay_without_noise_or_loss(single, models):
    full = single["masked_kspace"]  # fully sampled stand-in: the features are inserted, then re-acquired
    outcomes = transfer(FNAF(num_candidates=2, region=20, size=4), models["zero_filled"], models,
                        full * single["mask"], single["mask"], target=single["target"], kspace=full)
    white = outcomes["zero_filled"]
    torch.testing.assert_close(white.recon, white.source.recon, rtol=0, atol=0)
    assert all(o.noise_recon is None and o.loss is None for o in outcomes.values())
