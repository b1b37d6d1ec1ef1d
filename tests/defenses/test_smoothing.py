"""Randomized smoothing: SMUG denoiser smoothing and input smoothing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reconguard.attacks import PGD, ThreatModel
from reconguard.defenses.smoothing import RandomizedSmoothing, SmoothedDenoiser, resolve_paths, swapped
from reconguard.errors import ConfigError
from reconguard.models import build
from reconguard.models.modl import ResidualDenoiser
from reconguard.models.varnet import NormUNet
from reconguard.physics import fft2c
from tests.attacks.conftest import make_batch

SAMPLES = 3


def _modl() -> nn.Module:
    torch.manual_seed(0)
    return build("modl", num_unrolls=2, chans=8, num_layers=3, cg_iterations=3)


def _varnet() -> nn.Module:
    torch.manual_seed(0)
    return build("varnet", num_cascades=2, chans=4, pools=2, sens_chans=2, sens_pools=2)


def _unet() -> nn.Module:
    torch.manual_seed(0)
    return build("unet", chans=4, num_pool_layers=2)


def _run(model, batch):
    return model(batch["masked_kspace"], batch["mask"], coil_maps=batch["coil_maps"])


CASES = [  # (builder, mode, coils)
    (_modl, "denoiser", 1),
    (_modl, "denoiser", 3),
    (_varnet, "denoiser", 3),
    (_unet, "input", 1),
    (lambda: build("zero_filled"), "input", 3),
    (_modl, "input", 1),
]
IDS = ["modl-denoiser-1c", "modl-denoiser-3c", "varnet-denoiser", "unet-input", "zero_filled-input", "modl-input"]


@pytest.mark.parametrize(("builder", "mode", "coils"), CASES, ids=IDS)
def test_valid_reconstructor_and_sigma_zero_is_plain(builder, mode, coils):
    model, batch = builder(), make_batch(coils=coils)
    smoothed = RandomizedSmoothing(model, sigma=0.05, samples=SAMPLES, mode=mode, seed=0)
    assert smoothed.stochastic and smoothed.differentiable and smoothed.model is model
    with torch.no_grad():
        recon, plain = _run(smoothed, batch), _run(model, batch)
        exact = _run(RandomizedSmoothing(model, sigma=0.0, samples=SAMPLES, mode=mode), batch)
    assert recon.shape == plain.shape == (2, 1, 32, 32) and recon.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(recon)).all()
    assert not torch.equal(recon, plain)
    assert torch.equal(exact, plain)
    assert not RandomizedSmoothing(model, sigma=0.0, mode=mode).stochastic


def _spy(module: nn.Module, store: list):
    return module.register_forward_pre_hook(lambda _, args: store.append(args[0].detach().clone()))


def test_modl_denoiser_sees_batched_noisy_copies_at_every_unroll():
    model, batch = _modl(), make_batch(coils=1)
    seen: list[torch.Tensor] = []
    handle = _spy(model.denoiser, seen)
    with torch.no_grad():
        RandomizedSmoothing(model, sigma=0.05, samples=SAMPLES, seed=1)(batch["masked_kspace"], batch["mask"])
    handle.remove()
    assert len(seen) == model.config["num_unrolls"]
    for x in seen:
        assert x.shape == (SAMPLES * 2, 1, 32, 32)
        copies = x.reshape(SAMPLES, 2, 1, 32, 32)
        assert not torch.allclose(copies[0], copies[1])  # different noise per copy
        # MoDL's denoiser input has max ~1, so the per-pixel spread is ~sigma, not ~1.
        spread = (copies - copies.mean(dim=0)).abs().std()
        assert 0.01 < float(spread) < 0.2


def test_varnet_cascades_smoothed_sensitivity_net_not():
    model, batch = _varnet(), make_batch(coils=3)
    cascade_inputs: list[torch.Tensor] = []
    sens_inputs: list[torch.Tensor] = []
    handles = [_spy(c.model, cascade_inputs) for c in model.cascades] + [_spy(model.sens_net.norm_unet, sens_inputs)]
    with torch.no_grad():
        _run(RandomizedSmoothing(model, samples=SAMPLES), batch)
    for h in handles:
        h.remove()
    assert [x.shape[0] for x in cascade_inputs] == [SAMPLES * 2] * 2
    assert [x.shape[0] for x in sens_inputs] == [2 * 3]  # B * coils, once, unsmoothed


def test_smoothed_denoiser_noise_level_and_parameters():
    gen = torch.Generator().manual_seed(0)
    x = torch.complex(torch.randn(2, 1, 64, 64, generator=gen), torch.randn(2, 1, 64, 64, generator=gen))
    x[1] *= 100  # per-slice scale
    wrapper = SmoothedDenoiser(nn.Identity(), sigma=0.1, samples=1, generator=torch.Generator().manual_seed(1))
    noise = wrapper(x) - x
    for i in range(2):
        expected = 0.1 * float(x[i].abs().max())
        assert float(noise[i].real.std()) == pytest.approx(expected, rel=0.1)
        assert float(noise[i].imag.std()) == pytest.approx(expected, rel=0.1)
    inner = ResidualDenoiser(chans=4, num_layers=2)
    smoothed = SmoothedDenoiser(inner, sigma=0.1, samples=4, relative_to="absolute", generator=gen)
    assert [id(p) for p in smoothed.parameters()] == [id(p) for p in inner.parameters()]


def test_input_noise_only_on_acquired_samples_and_relative_to_norm():
    batch = make_batch(coils=1)
    y, mask = batch["masked_kspace"], batch["mask"]
    smoothed = RandomizedSmoothing(build("zero_filled"), sigma=0.1, samples=1, mode="input", seed=0)
    with torch.no_grad():
        noise = fft2c(smoothed(y, mask)) - y
    assert float(noise[~mask.expand_as(noise)].abs().max()) < 1e-5 * float(y.abs().max())
    ratio = torch.linalg.vector_norm(noise.flatten(1), dim=1) / torch.linalg.vector_norm(y.flatten(1), dim=1)
    assert torch.allclose(ratio, torch.full_like(ratio, 0.1), rtol=0.15)


@pytest.mark.parametrize("builder", [_modl, _varnet], ids=["modl", "varnet"])
def test_submodules_restored_after_forward_and_on_error(builder):
    model, batch = builder(), make_batch(coils=3)
    smoothed = RandomizedSmoothing(model, samples=2)
    slots = resolve_paths(model, smoothed.denoiser_paths)
    originals = [parent._modules[name] for parent, name in slots]
    inside: list[bool] = []

    def spy(parent, name):  # is the slot wrapped while the original runs?
        return lambda module, args: inside.append(isinstance(parent._modules[name], SmoothedDenoiser))

    handles = [parent._modules[name].register_forward_pre_hook(spy(parent, name)) for parent, name in slots]
    with torch.no_grad():
        _run(smoothed, batch)
    assert [parent._modules[name] for parent, name in slots] == originals
    assert inside and all(inside)
    for h in handles:
        h.remove()

    def boom(module, args):
        assert isinstance(getattr(slots[0][0], slots[0][1]), SmoothedDenoiser)
        raise RuntimeError("boom")

    handle = originals[-1].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        _run(smoothed, batch)
    handle.remove()
    assert [parent._modules[name] for parent, name in slots] == originals
    assert all(type(m) in (ResidualDenoiser, NormUNet) for m in originals)


def test_swapped_unwinds_partial_swaps():
    parent = nn.Sequential(nn.Identity(), nn.Identity())
    originals = list(parent)

    def wrap(module):
        if len(wrapped) == 1:
            raise ConfigError("second wrap fails")
        wrapped.append(module)
        return nn.Tanh()

    wrapped: list[nn.Module] = []
    with pytest.raises(ConfigError):
        with swapped([(parent, "0"), (parent, "1")], wrap):
            pass
    assert list(parent) == originals


def test_no_weight_copies():
    model = _modl()
    smoothed = RandomizedSmoothing(model, samples=2)
    assert {id(p) for p in smoothed.parameters()} == {id(p) for p in model.parameters()}
    assert set(smoothed.state_dict()) == {f"model.{k}" for k in model.state_dict()}
    during: list[set[int]] = []
    hook = model.register_forward_pre_hook(lambda m, a: during.append({id(p) for p in m.parameters()}))
    with torch.no_grad():
        _run(smoothed, make_batch())
    hook.remove()
    assert during == [{id(p) for p in model.parameters()}]


@pytest.mark.parametrize("mode", ["denoiser", "input"])
def test_seeded_sequence(mode):
    model, batch = _modl(), make_batch()
    first, same, other = (RandomizedSmoothing(model, samples=2, mode=mode, seed=s) for s in (7, 7, 8))
    with torch.no_grad():
        a1, a2 = _run(first, batch), _run(first, batch)
        b1, b2 = _run(same, batch), _run(same, batch)
        c1 = _run(other, batch)
        first.manual_seed(7)
        again = _run(first, batch)
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and torch.equal(again, a1)
    assert not torch.equal(a1, a2)  # fresh noise per call
    assert not torch.equal(a1, c1)


@pytest.mark.parametrize(("builder", "mode", "coils"), [CASES[0], CASES[2], CASES[3]], ids=[IDS[0], IDS[2], IDS[3]])
def test_input_gradient_flows_and_is_finite(builder, mode, coils):
    batch = make_batch(coils=coils)
    smoothed = RandomizedSmoothing(builder(), samples=2, mode=mode)
    kspace = batch["masked_kspace"].clone().requires_grad_(True)
    smoothed(kspace, batch["mask"], coil_maps=batch["coil_maps"]).abs().square().sum().backward()
    grad = torch.view_as_real(kspace.grad)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_training_the_smoothed_module_trains_the_model():
    model, batch = _modl(), make_batch()
    smoothed = RandomizedSmoothing(model, samples=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.Adam(smoothed.parameters(), lr=1e-2)
    loss = (_run(smoothed, batch).abs() - batch["target"]).square().mean()
    loss.backward()
    optimiser.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert "raw_lam" in changed and any(k.startswith("denoiser.") for k in changed)
    assert model.training


def test_pgd_uses_eot_on_the_smoothed_model():
    batch = make_batch()
    smoothed = RandomizedSmoothing(_modl(), samples=2)
    result = PGD(ThreatModel(domain="kspace", norm="l2", eps=0.05), steps=2, seed=0)(smoothed, **batch)
    assert torch.isfinite(result.loss).all() and result.recon.shape == (2, 1, 32, 32)
    assert all(p.requires_grad for p in smoothed.parameters())  # the attack restored the flags


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sigma": -0.1}, {"sigma": math.nan}, {"sigma": math.inf}, {"sigma": "0.1"}, {"sigma": True},
        {"samples": 0}, {"samples": 2.0}, {"samples": True}, {"mode": "output"},
        {"relative_to": "mean"}, {"seed": 1.5}, {"denoiser_paths": "denoiser"},
        {"denoiser_paths": ("missing",)}, {"denoiser_paths": ()},
    ],
)
def test_bad_hyper_parameters(kwargs):
    with pytest.raises(ConfigError):
        RandomizedSmoothing(_modl(), **kwargs)


def test_unsupported_models_in_denoiser_mode():
    with pytest.raises(ConfigError, match=r"\['modl', 'varnet'\].*'unet'"):
        RandomizedSmoothing(_unet(), mode="denoiser")
    with pytest.raises(ConfigError, match="checkpointing"):
        RandomizedSmoothing(build("varnet", num_cascades=1, chans=2, pools=1, sens_chans=2, sens_pools=1,
                                  checkpointing=True))
    RandomizedSmoothing(_unet(), mode="input")  # any reconstructor works in input mode
    wrapped = nn.Module()
    wrapped.inner = _varnet()
    slots = resolve_paths(wrapped, ["inner.sens_net.*", "inner.cascades.*.model"])
    assert [name for _, name in slots] == ["norm_unet", "model", "model"]
    RandomizedSmoothing(wrapped, denoiser_paths=["inner.cascades.*.model"])  # e.g. a wrapped model
