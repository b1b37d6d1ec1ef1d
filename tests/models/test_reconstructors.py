"""Property tests for every registered reconstructor, driven by the registry."""

from __future__ import annotations

import json

import pytest
import torch

from reconguard.errors import ConfigError, DataError
from reconguard.models import MODELS, Reconstructor, build, load, save
from reconguard.physics import RandomMask, fft2c, simulate_coil_maps
from tests.conftest import random_complex

B, H, W = 2, 16, 16

# Tiny configurations, one per registered model (plus the magnitude U-Net variant).
CASES = {
    "zero_filled": ("zero_filled", {}),
    "unet": ("unet", {"in_chans": 2, "chans": 4, "num_pool_layers": 2}),
    "unet_magnitude": ("unet", {"in_chans": 1, "chans": 4, "num_pool_layers": 2}),
    "varnet": ("varnet", {"num_cascades": 2, "sens_chans": 2, "sens_pools": 2, "chans": 4, "pools": 2}),
    "modl": ("modl", {"num_unrolls": 2, "cg_iterations": 3, "chans": 8, "num_layers": 3}),
    "cs_tv": ("cs_tv", {"iterations": 10}),
    "diffusion": ("diffusion", {"chans": 8, "num_pool_layers": 2, "timesteps": 20, "steps": 3}),
    "resunet": ("resunet", {"in_chans": 2, "chans": 4, "num_pool_layers": 2}),
    "resunet_magnitude": ("resunet", {"in_chans": 1, "chans": 4, "num_pool_layers": 2}),
    "rim": ("rim", {"num_steps": 2, "chans": 4}),
    "irim": ("irim", {"num_steps": 2, "chans": 4, "hidden_chans": 4, "num_layers": 2}),
    "xpdnet": ("xpdnet", {"num_iter": 2, "num_primal": 2, "chans": 4, "pools": 2, "sens_chans": 2, "sens_pools": 2}),
    "recurrent_varnet": ("recurrent_varnet", {"num_steps": 2, "hidden_chans": 4, "num_layers": 2,
                                              "initializer_channels": [4, 4], "initializer_dilations": [1, 2],
                                              "initializer_multiscale": 2, "sens_chans": 2, "sens_pools": 2}),
}


def _batch(gen: torch.Generator, coils: int) -> tuple[torch.Tensor, ...]:
    """Fully sampled k-space of a random image, its mask, masked k-space and coil maps."""
    image = random_complex((B, 1, H, W), gen)
    maps = simulate_coil_maps(coils, (H, W)).expand(B, coils, H, W) if coils > 1 else None
    kspace = fft2c(image if maps is None else image * maps)
    mask = torch.cat([RandomMask(acceleration=4, center_fraction=0.25)((1, 1, 1, W), seed=s) for s in (0, 1)])
    return kspace, mask, kspace * mask, maps, image


def _model(case: str) -> torch.nn.Module:
    torch.manual_seed(0)
    name, config = CASES[case]
    return build(name, **config)


def test_every_registered_model_has_a_case():
    assert {name for name, _ in CASES.values()} == set(MODELS)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("coils", [1, 3])
def test_shape_dtype_and_protocol(case, coils, gen):
    model = _model(case).eval()
    _, mask, masked, maps, _ = _batch(gen, coils)
    out = model(masked, mask, coil_maps=maps)
    assert isinstance(model, Reconstructor)
    assert out.shape == (B, 1, H, W) and out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_wrt_kspace_is_finite_and_nonzero(case, gen):
    model = _model(case).eval()
    assert model.differentiable
    _, mask, masked, maps, _ = _batch(gen, 3)
    masked = masked.clone().requires_grad_(True)
    model(masked, mask, coil_maps=maps).abs().sum().backward()
    grad = torch.view_as_real(masked.grad)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("case", sorted(c for c in CASES if c not in ("zero_filled", "cs_tv", "diffusion")))
def test_one_optimiser_step_reduces_l1(case, gen):
    model = _model(case).train()
    _, mask, masked, maps, target = _batch(gen, 3)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn() -> torch.Tensor:
        return (model(masked, mask, coil_maps=maps).abs() - target.abs()).abs().mean()

    before = loss_fn()
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    with torch.no_grad():
        assert loss_fn() < before.detach()


@pytest.mark.parametrize("case", ["zero_filled", "cs_tv"])
def test_classical_models_have_no_trainable_parameters(case):
    assert not list(_model(case).parameters())


@pytest.mark.parametrize("case", sorted(CASES))
def test_save_load_round_trip(case, gen, tmp_path):
    model = _model(case).eval()
    _, mask, masked, maps, _ = _batch(gen, 3)
    config_file = save(model, tmp_path / "sub" / f"{case}.v1.safetensors")
    written = sorted(p.name for p in config_file.parent.iterdir())
    assert written == [f"{case}.v1.json", f"{case}.v1.safetensors"]
    meta = json.loads(config_file.read_text())
    assert meta["name"] == model.name and meta["config"] == model.config and "reconguard_version" in meta
    loaded = load(str(tmp_path / "sub" / f"{case}.v1"))
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(masked, mask, coil_maps=maps), model(masked, mask, coil_maps=maps))


def test_load_overrides_settings_but_not_weights(tmp_path):
    model = build("diffusion", chans=4, num_pool_layers=1, timesteps=20, steps=4, attention=False)
    save(model, tmp_path / "prior")
    loaded = load(tmp_path / "prior", steps=8, seed=3)
    assert loaded.config["steps"] == 8 and loaded.seed == 3 and loaded.config["chans"] == 4
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(DataError, match="cannot load weights"):
        load(tmp_path / "prior", chans=8)
    with pytest.raises(DataError, match="steps"):
        load(tmp_path / "prior", steps=50)  # more than the 20 trained timesteps


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input_raises_data_error(case, gen):
    model = _model(case)
    _, mask, masked, maps, _ = _batch(gen, 3)
    bad = masked.clone()
    bad[0, 0, 0, 0] = complex(float("nan"), 0.0)
    with pytest.raises(DataError, match="NaN"):
        model(bad, mask, coil_maps=maps)
    with pytest.raises(DataError, match="shape"):
        model(masked[0], mask[0], coil_maps=maps)
    with pytest.raises(DataError):
        model(masked.real, mask, coil_maps=maps)


def test_build_rejects_unknown_names_and_hyper_parameters():
    with pytest.raises(ConfigError, match="choose one of .*cs_tv.*modl"):
        build("resnet")
    with pytest.raises(ConfigError, match="num_pools"):
        build("unet", num_pools=3)
    with pytest.raises(ConfigError, match="chans"):
        build("unet", chans=0)
    with pytest.raises(ConfigError, match="lam"):
        build("modl", lam=-1.0)
    with pytest.raises(ConfigError, match="unet"):
        build("unet", chans="many")
    with pytest.raises(ConfigError, match="in_chans"):
        build("unet", in_chans=3)


def test_load_by_name_builds_default_model():
    model = load("cs_tv")
    assert model.name == "cs_tv" and model.config == build("cs_tv").config


def test_load_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="nothing.json"):
        load(tmp_path / "nothing")
    config_file = save(_model("unet"), tmp_path / "m")
    (tmp_path / "m.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match="m.safetensors"):
        load(config_file)
    config_file.write_text("{not json")
    with pytest.raises(DataError, match="m.json"):
        load(config_file)


def test_load_reports_weights_that_do_not_match_config(tmp_path):
    config_file = save(_model("unet"), tmp_path / "m")
    meta = json.loads(config_file.read_text())
    meta["config"]["chans"] = 8
    config_file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="m.safetensors"):
        load(tmp_path / "m")
    meta["name"] = "resnet"
    config_file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="m.json.*resnet"):
        load(tmp_path / "m.safetensors")


def test_save_rejects_unregistered_models_and_leaves_no_files(tmp_path):
    with pytest.raises(ConfigError, match="registered"):
        save(torch.nn.Linear(2, 2), tmp_path / "x")
    model = _model("unet")
    model.config["chans"] = object()  # not JSON-serialisable: the save must fail before any rename
    with pytest.raises(TypeError):
        save(model, tmp_path / "y")
    assert list(tmp_path.iterdir()) == []
