"""Threat models: exact projections, budgets, supports."""

from __future__ import annotations

import pytest
import torch

from reconguard.attacks import ThreatModel, gaussian_noise, keep_largest, matched_noise
from reconguard.errors import ConfigError
from tests.conftest import random_complex


def _budget(threat, batch):
    return threat.budget(batch["masked_kspace"], batch["mask"], coil_maps=batch["coil_maps"], target=batch["target"])


@pytest.mark.parametrize(
    "threat",
    [
        ThreatModel(domain="kspace", norm="l2", eps=0.05),
        ThreatModel(domain="kspace", norm="l2", eps=0.05, per_coil=True),
        ThreatModel(domain="kspace", norm="linf", eps=0.01),
        ThreatModel(domain="kspace", norm="linf", eps=0.01, linf_mode="real_imag"),
        ThreatModel(domain="kspace", norm="l2", eps=0.5, relative=False, support="full"),
        ThreatModel(domain="image", norm="linf", eps=0.01),
        ThreatModel(domain="image", norm="l2", eps=0.02, support="fully_sampled"),
        ThreatModel(domain="kspace", norm="l0", eps=5, amplitude=0.5),
    ],
    ids=lambda t: t.label + ("-coil" if t.per_coil else "") + f"-{t.support}-{t.linf_mode}",
)
def test_projection_is_admissible_idempotent_and_minimal(threat, multi, gen):
    budget = _budget(threat, multi)
    support = threat.support_mask(multi["mask"], multi["masked_kspace"])
    delta = random_complex(threat.delta_shape(multi["masked_kspace"]), gen) * 10
    projected = threat.project(delta, budget, support)
    assert torch.all(projected * ~support == 0)
    if threat.norm == "l2":
        dims = (-2, -1) if threat.per_coil else (1, 2, 3)
        norms = torch.linalg.vector_norm(projected, dim=dims, keepdim=True)
        torch.testing.assert_close(norms, budget.expand_as(norms), rtol=1e-5, atol=0)
    elif threat.norm == "linf":
        assert torch.all(threat.measure(projected) <= budget.flatten() * (1 + 1e-5))
    else:
        assert torch.all(threat.measure(projected) <= threat.eps)
        assert torch.all(projected.abs() <= budget * (1 + 1e-5))
    torch.testing.assert_close(threat.project(projected, budget, support), projected)
    small = projected * 0.5
    if threat.norm != "l0":  # inside the set, projection is the identity
        torch.testing.assert_close(threat.project(small, budget, support), small)


def test_relative_budgets_follow_the_convention(multi):
    y = multi["masked_kspace"]
    l2 = ThreatModel(domain="kspace", norm="l2", eps=0.02).budget(y, multi["mask"])
    torch.testing.assert_close(l2.flatten(), 0.02 * y.flatten(1).norm(dim=1))
    coil = ThreatModel(domain="kspace", norm="l2", eps=0.02, per_coil=True).budget(y, multi["mask"])
    torch.testing.assert_close(coil[..., 0, 0], 0.02 * y.flatten(2).norm(dim=2))
    linf = ThreatModel(domain="kspace", norm="linf", eps=0.1, relative=False).budget(y, multi["mask"])
    assert torch.all(linf == 0.1)
    img = ThreatModel(domain="image", norm="linf", eps=0.01, support="fully_sampled")
    torch.testing.assert_close(img.budget(y, multi["mask"], target=multi["target"]).flatten(),
                               0.01 * multi["target"].flatten(1).amax(dim=1))


def test_keep_largest():
    x = torch.tensor([[3.0, -1.0, 2.0, 0.5]], dtype=torch.complex64)
    assert keep_largest(x, 2).real.tolist() == [[3.0, 0.0, 2.0, 0.0]]
    assert torch.equal(keep_largest(x, 0), torch.zeros_like(x))


def _linf_measures(delta: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    flat = delta.flatten(1)
    largest = torch.maximum(flat.real.abs(), flat.imag.abs()) if mode == "real_imag" else flat.abs()
    return largest.amax(dim=1), flat.norm(dim=1)


@pytest.mark.parametrize("norm,kwargs", [("l2", {}), ("l2", {"per_coil": True}), ("linf", {}),
                                         ("linf", {"linf_mode": "real_imag"}), ("l0", {"amplitude": 0.3})])
def test_matched_noise_matches_delta(norm, kwargs, multi, gen):
    threat = ThreatModel(domain="kspace", norm=norm, eps=4 if norm == "l0" else 0.05, **kwargs)
    support = threat.support_mask(multi["mask"], multi["masked_kspace"])
    delta = threat.project(random_complex(multi["masked_kspace"].shape, gen), _budget(threat, multi), support)
    noise = matched_noise(threat, delta, support, torch.Generator().manual_seed(0))
    assert torch.all(noise * ~support == 0)
    torch.testing.assert_close(threat.measure(noise), threat.measure(delta), rtol=1e-5, atol=1e-6)
    if threat.per_coil:
        torch.testing.assert_close(noise.flatten(2).norm(dim=2), delta.flatten(2).norm(dim=2), rtol=1e-5, atol=0)


@pytest.mark.parametrize("mode", ["complex", "real_imag"])
@pytest.mark.parametrize("domain,support", [("kspace", "acquired"), ("image", "network_input")])
def test_linf_baseline_has_the_attacks_l2_and_linf_size(mode, domain, support, multi, gen):
    """The verdict's baseline of an l-inf attack: the attack's l-inf size *and* its l2 energy
    (within 1 %), where a Gaussian scaled to the same maximum has a fraction of the energy."""
    threat = ThreatModel(domain=domain, norm="linf", eps=0.01, linf_mode=mode, support=support)
    shape = threat.delta_shape(multi["masked_kspace"])
    allowed = threat.support_mask(multi["mask"], multi["masked_kspace"])
    budget = _budget(threat, multi)
    # A saturated sign attack with a structured (smooth) part: what PGD-linf returns.
    delta = threat.project(random_complex(shape, gen).sgn() * budget * 10, budget, allowed)
    matched = matched_noise(threat, delta, allowed, torch.Generator().manual_seed(1))
    for got, want in zip(_linf_measures(matched, mode), _linf_measures(delta, mode)):
        torch.testing.assert_close(got, want, rtol=0.01, atol=0)
    assert torch.all(matched * ~allowed.expand(shape) == 0)
    assert not torch.allclose(matched, delta)  # shuffled: not the attack itself
    old = gaussian_noise(threat, delta, allowed, torch.Generator().manual_seed(1))
    old_max, old_l2 = _linf_measures(old, mode)
    torch.testing.assert_close(old_max, _linf_measures(delta, mode)[0], rtol=1e-5, atol=0)
    assert torch.all(old_l2 < 0.6 * _linf_measures(delta, mode)[1])  # the energy the old baseline lacked


def test_matched_noise_is_seeded(multi, gen):
    threat = ThreatModel(domain="image", norm="linf", eps=0.01, support="network_input")
    delta = random_complex(threat.delta_shape(multi["masked_kspace"]), gen) * 1e-3
    support = threat.support_mask(multi["mask"], multi["masked_kspace"])
    first, again, other = (matched_noise(threat, delta, support, torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_input_change_is_the_zero_filled_change(multi, gen):
    """Zero-filling's output moves by exactly the input change: its noise gain is 1."""
    from reconguard.models.zero_filled import zero_filled

    for threat in (ThreatModel(domain="kspace", norm="l2", eps=0.05),
                   ThreatModel(domain="image", norm="linf", eps=0.01),
                   ThreatModel(domain="image", norm="linf", eps=0.01, support="network_input")):
        delta = random_complex(threat.delta_shape(multi["masked_kspace"]), gen) * 1e-2
        kspace, input_delta = threat.model_input(multi["masked_kspace"], multi["mask"], delta, multi["coil_maps"])
        moved = zero_filled(kspace, multi["coil_maps"]) - zero_filled(multi["masked_kspace"], multi["coil_maps"])
        moved = moved if input_delta is None else moved + input_delta
        torch.testing.assert_close(threat.input_change(delta, multi["mask"], multi["coil_maps"]), moved,
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(domain="pixels", norm="l2", eps=0.1),
        dict(domain="kspace", norm="l1", eps=0.1),
        dict(domain="kspace", norm="l2", eps=-0.1),
        dict(domain="kspace", norm="l2", eps=float("nan")),
        dict(domain="kspace", norm="l0", eps=2.5),
        dict(domain="image", norm="l0", eps=3),
        dict(domain="image", norm="l2", eps=0.1, per_coil=True),
        dict(domain="kspace", norm="l2", eps=0.1, support="zero_filled"),
        dict(domain="kspace", norm="linf", eps=0.1, linf_mode="box"),
    ],
)
def test_impossible_threats_raise(kwargs):
    with pytest.raises(ConfigError):
        ThreatModel(**kwargs)
