"""Robust training: every mode trains and resumes exactly, PGD stays in budget, FNAF training
teaches the model the features, bad options are refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from reconguard.attacks import make_features
from reconguard.attacks.insertion import insert_features
from reconguard.attacks.losses import reconstruction_error
from reconguard.cli.main import main
from reconguard.data import SliceDataset
from reconguard.data.sample import Sample
from reconguard.defenses.strategies import build_strategy
from reconguard.defenses.training import AdversarialTraining, FNAFTraining, feature_batch
from reconguard.errors import ConfigError
from reconguard.metrics import magnitude
from reconguard.models import build, load
from reconguard.physics.masks import RandomMask
from reconguard.training import TrainConfig, train

TINY_UNET = {"chans": 4, "num_pool_layers": 2}
SMOOTH = {"mode": "input", "samples": 2, "sigma": 0.02}


def _smoothing_available() -> bool:
    try:
        from reconguard.defenses.smoothing import RandomizedSmoothing  # noqa: F401
    except ImportError:
        return False
    return True


needs_smoothing = pytest.mark.skipif(
    not _smoothing_available(), reason="reconguard.defenses.smoothing.RandomizedSmoothing is not written yet"
)
MODES = [
    pytest.param("pgd", {}, id="pgd"),
    pytest.param("pgd", {"method": "free", "replays": 2, "mix": 0.5}, id="free-mixed"),
    pytest.param("fnaf", {}, id="fnaf"),
    pytest.param("smooth", SMOOTH, id="smooth", marks=needs_smoothing),
]


@pytest.fixture(scope="module")
def clean_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    train(_config(tiny_data, out, epochs=1), progress=False)
    return out


@pytest.fixture
def batch(tiny_data):
    """Four training slices, a 4x mask, and a tiny U-Net (seeded)."""
    sample = Sample.collate([SliceDataset(Path(tiny_data) / "train")[i] for i in range(4)])
    masked_kspace, mask = sample.undersample(RandomMask(acceleration=4, center_fraction=0.08), seed=0)
    torch.manual_seed(0)
    return sample, masked_kspace, mask, build("unet", **TINY_UNET)


def _config(data, out, **overrides) -> TrainConfig:
    base = dict(model="unet", model_config=TINY_UNET, data=str(data), out=str(out), epochs=2, batch_size=4, lr=3e-3)
    return TrainConfig(**{**base, **overrides})


def _mse(recon, target, max_value):
    return torch.nn.functional.mse_loss(recon, target)


def _weights(out):
    return torch.load(Path(out) / "state.pt", weights_only=True)["model"]


@pytest.mark.parametrize("robust, options", MODES)
def test_each_mode_trains_an_epoch_and_writes_a_run(robust, options, tiny_data, tmp_path):
    history = train(_config(tiny_data, tmp_path, epochs=1, robust=robust, robust_config=options), progress=False)
    assert len(history) == 1 and history[0]["psnr"] > 0
    for name in ("config.json", "state.pt", "history.json", "best.safetensors", "last.safetensors"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["robust"] == robust and set(options) <= set(saved["robust_config"])  # every default recorded
    assert load(tmp_path / "best").name == "unet"  # the plain model, smoothing or not


@pytest.mark.parametrize("robust, options", MODES)
def test_robust_runs_resume_bit_identically(robust, options, tiny_data, tmp_path, interrupt_training):
    config = lambda out: _config(tiny_data, out, robust=robust, robust_config=options)  # noqa: E731
    straight = tmp_path / "straight"
    train(config(straight), progress=False)

    interrupted = tmp_path / "interrupted"
    interrupt_training(config(interrupted))
    saved = torch.load(interrupted / "state.pt", weights_only=True)
    passes = options.get("replays", 1) if options.get("method") == "free" else 1
    assert (saved["epoch"], saved["step"]) == (0, 2 // passes)

    history = train(config(interrupted), progress=False)
    assert len(history) == 2
    for key, value in _weights(straight).items():
        torch.testing.assert_close(_weights(interrupted)[key], value, rtol=0, atol=0)


def test_pgd_training_inputs_differ_from_clean_within_budget(tiny_data, tmp_path, monkeypatch):
    from reconguard.models.unet import UNet

    clean, trained = [], []
    real_prepare, real_reconstruct = AdversarialTraining.prepare, UNet._reconstruct

    def spy_prepare(self, model, sample, masked_kspace, mask, **kwargs):
        clean.append(masked_kspace)
        return real_prepare(self, model, sample, masked_kspace, mask, **kwargs)

    def spy_reconstruct(self, masked_kspace, mask, coil_maps):
        if self.training:  # the weight update (PGD itself runs in eval mode)
            trained.append((masked_kspace.detach(), mask))
        return real_reconstruct(self, masked_kspace, mask, coil_maps)

    monkeypatch.setattr(AdversarialTraining, "prepare", spy_prepare)
    monkeypatch.setattr(UNet, "_reconstruct", spy_reconstruct)
    train(_config(tiny_data, tmp_path, epochs=1, robust="pgd", robust_config={"eps": 0.05}), progress=False)
    assert len(clean) == len(trained) > 1
    for reference, (adv, mask) in zip(clean, trained):
        delta = adv - reference
        assert not (delta * ~mask).any()  # only acquired samples move
        ratio = delta.flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
        assert bool((ratio > 0.01).all()) and bool((ratio <= 0.05 * (1 + 1e-5)).all())


@pytest.mark.parametrize("options", [{"replays": 3}, {"replays": 2, "domain": "image", "eps": 0.03}])
def test_free_training_reuses_the_gradient_within_budget(options, batch):
    sample, masked_kspace, mask, model = batch
    strategy = build_strategy("pgd", {"method": "free", **options}, loss="mse")
    threat, step, deltas = strategy.threat, None, []
    budget = threat.budget(masked_kspace, mask).flatten()
    assert strategy.passes == options["replays"]
    for replay in range(strategy.passes):
        step = strategy.prepare(model, sample, masked_kspace, mask, seed=(0, 0, 0, replay), previous=step)
        recon = magnitude(model(step.masked_kspace, step.mask), step.target)
        strategy.objective(recon, step, _mse).backward()  # fills step.delta.grad
        assert bool((threat.measure(step.delta.detach()) <= budget * (1 + 1e-5)).all())
        assert torch.equal(step.masked_kspace, threat.apply(masked_kspace, mask, step.delta))
        assert not ((step.masked_kspace - masked_kspace) * ~mask).any()
        deltas.append(step.delta.detach())
    assert all(not torch.equal(a, b) for a, b in zip(deltas, deltas[1:]))


def test_fnaf_objective_teaches_a_fixed_batch_its_features(batch):
    """The issue's acceptance test: fixed features, a few steps, the feature-region loss falls."""
    sample, masked_kspace, mask, model = batch
    generator = torch.Generator().manual_seed(0)
    features = make_features(4, (32, 32), num=1, size=10, region=24, intensity_range=(0.5, 0.8), generator=generator)
    inserted = insert_features(sample.kspace, mask, features, insertion="complex", max_value=sample.max_value)
    fixed = feature_batch(sample, masked_kspace, mask, inserted)
    assert bool((fixed.region.flatten(1).sum(1) >= 10).all())

    def feature_loss(net):
        with torch.no_grad():
            recon = net(fixed.masked_kspace, fixed.mask)
        return float(reconstruction_error(recon, fixed.target, kind="mse", region=fixed.region).mean())

    def fit(objective: FNAFTraining, steps: int = 25):
        net = build("unet", **TINY_UNET)
        net.load_state_dict(model.state_dict())
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(steps):
            loss = objective.objective(magnitude(net(fixed.masked_kspace, fixed.mask), fixed.target), fixed, _mse)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return net

    before = feature_loss(model)
    robust = fit(FNAFTraining(loss="mse", mix=0.0))  # a batch of featured slices only
    plain = fit(FNAFTraining(loss="mse", beta=0.0, mix=0.0))
    after = feature_loss(robust)
    assert after < 0.5 * before
    assert after < 0.8 * feature_loss(plain)  # the region term, not just fitting the image, does it


def test_fnaf_training_skips_features_the_scanner_did_not_measure(batch):
    sample, masked_kspace, mask, model = batch
    strategy = build_strategy("fnaf", {"info_threshold": 1e9, "candidates": 2, "mix": 0.0}, loss="l1")
    step = strategy.prepare(model, sample, masked_kspace, mask, seed=(0, 0, 0, 0))
    assert torch.equal(step.masked_kspace, masked_kspace) and torch.equal(step.target, sample.target)
    assert not step.region.any()
    found = build_strategy("fnaf", {"candidates": 2}, loss="l1").prepare(model, sample, masked_kspace, mask, seed=(0,))
    found = replace(found, target=found.target[:4], region=found.region[:4])  # the featured half
    added = found.target - sample.target
    assert bool((added.flatten(1).amax(1) > 0).all()) and not (added * ~found.region).any()


def test_start_from_a_saved_model(clean_run, tiny_data, tmp_path):
    out = tmp_path / "fine-tuned"
    config = _config(tiny_data, out, epochs=1, lr=1e-12, robust="fnaf", init=str(clean_run / "best"))
    train(config, progress=False)
    start = load(clean_run / "best").state_dict()
    for key, value in load(out / "best").state_dict().items():
        torch.testing.assert_close(value, start[key], rtol=0, atol=1e-6)
    other = tmp_path / "other"
    with pytest.raises(ConfigError, match="init"):
        train(_config(tiny_data, other, model_config={"chans": 8, "num_pool_layers": 2}, init=str(clean_run / "best")))
    assert not other.exists()  # nothing written for a refused run


@pytest.mark.parametrize(
    "overrides",
    [
        dict(robust="gan"),
        dict(robust_config={"eps": 0.1}),  # options without a mode
        dict(robust="pgd", robust_config={"epsilon": 0.1}),
        dict(robust="pgd", robust_config={"eps": -1}),
        dict(robust="pgd", robust_config={"norm": "l0"}),
        dict(robust="pgd", robust_config={"method": "trades"}),
        dict(robust="pgd", robust_config={"mix": 2}),
        dict(robust="pgd", robust_config={"steps": 0}),
        dict(robust="pgd", robust_config={"method": "free", "replays": 0}),
        dict(robust="pgd", robust_config={"domain": "wavelet"}),
        dict(robust="fnaf", loss="ssim"),
        dict(robust="fnaf", robust_config={"candidates": 0}),
        dict(robust="fnaf", robust_config={"intensity_range": 0.5}),
        dict(robust="fnaf", robust_config={"k": 5}),
        pytest.param(dict(robust="smooth", robust_config={"sigmaa": 0.1}), marks=needs_smoothing),
        pytest.param(dict(robust="smooth", robust_config={"samples": 0}), marks=needs_smoothing),
    ],
)
def test_bad_robust_configs_raise(overrides, tiny_data, tmp_path):
    with pytest.raises(ConfigError):
        config = _config(tiny_data, tmp_path / "run", **overrides)
        train(config, progress=False)  # options only the model can check fail before OUT is written
    assert not (tmp_path / "run").exists()


def test_config_records_resolved_options_and_stays_json(tiny_data, tmp_path):
    short = _config(tiny_data, tmp_path, robust="pgd", robust_config={"eps": 0.05})
    full = _config(tiny_data, tmp_path, robust="pgd", robust_config=short.robust_config)
    assert short == full and short.robust_config["steps"] == 3 and short.robust_config["norm"] == "l2"
    assert json.loads(json.dumps(short.robust_config)) == short.robust_config


def _help_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_cli_help_names_the_modes_papers_and_true_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for word in ("--robust", "pgd", "fnaf", "smooth", "--robust-set", "--init", "1706.06083", "1904.12843",
                 "2011.00070", "MIDL 2020"):
        assert word in text, word
    for robust in ("pgd", "fnaf"):
        for key, value in build_strategy(robust).options().items():
            if key != "step_size":  # derived from steps; spelled out as a formula
                assert f"{key}={_help_value(value)}" in text, (robust, key)


def test_cli_trains_robustly_from_a_checkpoint(clean_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--batch-size", "4", "--quiet"]
    code = main([*argv, "--init", str(clean_run / "best"), "--robust", "pgd", "--robust-set", "steps=1"])
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["robust_config"]["steps"] == 1 and saved["model_config"]["chans"] == 4
    capsys.readouterr()
    assert main([*argv, "--model", "unet", "--robust", "pgd", "--robust-set", "radius=3", "--overwrite"]) == 2
    assert "radius" in capsys.readouterr().err
