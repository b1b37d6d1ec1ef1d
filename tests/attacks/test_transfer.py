"""Transfer: the diagonal is the white-box attack, every pair exists, records are tidy."""

from __future__ import annotations

import pytest
import torch

from reconguard.attacks import PGD, AttackLoss, SparseKSpace, ThreatModel, transfer, transfer_matrix
from reconguard.attacks.transfer import CONDITIONS, METRICS, RECORD_KEYS
from reconguard.data import Sample
from reconguard.errors import ConfigError
from reconguard.metrics import psnr
from reconguard.models import ZeroFilled, build
from reconguard.physics import RandomMask

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
    peak = multi["max_value"]
    expected = psnr(multi["target"], direct.recon.abs(), data_range=peak, reduction="none")
    torch.testing.assert_close(white.metrics["psnr"]["attack"], expected)
    # the perturbation hurts the white-box model more than the same-norm noise does
    assert torch.all(white.metrics["psnr"]["attack"] < white.metrics["psnr"]["noise"])
    for name, outcome in outcomes.items():
        torch.testing.assert_close(outcome.noise, white.noise, rtol=0, atol=0)  # one noise draw for all targets
        assert threat.measure(outcome.noise).allclose(threat.measure(direct.delta), rtol=1e-4), name
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


def test_matrix_has_every_pair_and_tidy_records(single, models):
    attack = SparseKSpace(ThreatModel(domain="kspace", norm="l0", eps=4, amplitude=0.05), steps=2)
    batches = [single, tuple(single[k] for k in ("masked_kspace", "mask", "target", "coil_maps", "max_value"))]
    surrogates = {k: models[k] for k in ("zero_filled", "unet")}
    records = transfer_matrix(attack, surrogates, models, batches)
    slices, pairs = 2 * 2, len(surrogates) * len(models)
    assert len(records) == slices * pairs * len(METRICS) * len(CONDITIONS)
    assert all(tuple(r) == RECORD_KEYS for r in records)
    assert all(isinstance(r["value"], float) and isinstance(r["sample"], str) for r in records)
    assert {(r["surrogate"], r["target"]) for r in records} == {(s, t) for s in surrogates for t in models}
    assert {r["sample"] for r in records} == {"0:0", "0:1", "1:0", "1:1"}
    white = {(r["surrogate"], r["target"]) for r in records if r["white_box"]}
    assert white == {("zero_filled", "zero_filled"), ("unet", "unet")}
    assert {r["attack"] for r in records} == {"SparseKSpace"} and {r["eps"] for r in records} == {4.0}
    # the two copies of the same batch give the same numbers (everything is seeded)
    first = [r["value"] for r in records if r["sample"].startswith("0:")]
    second = [r["value"] for r in records if r["sample"].startswith("1:")]
    assert first == second


def test_matrix_diagonal_matches_the_white_box_attack(single, models):
    attack = PGD(IMAGE, steps=2, seed=1)
    records = transfer_matrix(attack, {"unet": models["unet"]}, models, [single])
    direct = attack(models["unet"], single["masked_kspace"], single["mask"], **_inputs(single))
    expected = psnr(single["target"], direct.recon.abs(), data_range=single["max_value"], reduction="none")
    got = [r["value"] for r in records if r["white_box"] and r["metric"] == "psnr" and r["condition"] == "attack"]
    assert got == pytest.approx(expected.tolist(), rel=1e-6)
    loss = [r["value"] for r in records if r["white_box"] and r["metric"] == "loss" and r["condition"] == "attack"]
    assert loss == pytest.approx(direct.loss.tolist(), rel=1e-6)


def test_matrix_accepts_samples(models):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, 32, 32, generator=gen)
    sample = Sample(
        kspace=torch.fft.fftshift(torch.fft.fft2(image.to(torch.complex64), norm="ortho")),
        target=image,
        max_value=image.flatten(1).amax(dim=1),
        fname=("a.h5", "a.h5"),
        slice_idx=(3, 4),
    )
    mask_fn = RandomMask(acceleration=4, center_fraction=0.16)
    records = transfer_matrix(
        PGD(KSPACE, steps=1), {"zf": models["zero_filled"]}, {"zf": models["zero_filled"]}, [sample], mask_fn=mask_fn
    )
    assert {r["sample"] for r in records} == {"a.h5:3", "a.h5:4"}
    with pytest.raises(ConfigError):
        transfer_matrix(PGD(KSPACE, steps=1), {"zf": models["zero_filled"]}, {"zf": models["zero_filled"]}, [sample])


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
    with pytest.raises(ConfigError):
        transfer_matrix(PGD(KSPACE), {}, models, [single])
    with pytest.raises(ConfigError):
        transfer_matrix(PGD(KSPACE), models, models, [("not", "a", "batch")])
    with pytest.raises(ConfigError):
        transfer_matrix(PGD(KSPACE), models, models, [{"masked_kspace": single["masked_kspace"]}])
