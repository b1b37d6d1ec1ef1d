"""Training: it learns, it is deterministic, it resumes exactly, it refuses bad configs."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from reconguard.errors import ConfigError
from reconguard.models import load
from reconguard.training import TrainConfig, train
from reconguard.training.presets import CPU_PRESETS


def _config(data, out, **overrides) -> TrainConfig:
    base = dict(
        model="unet",
        model_config={"chans": 4, "num_pool_layers": 2},
        data=str(data),
        out=str(out),
        epochs=2,
        batch_size=4,
        lr=3e-3,
    )
    return TrainConfig(**{**base, **overrides})


def _weights(out):
    return torch.load(out / "state.pt", weights_only=True)["model"]


def test_training_improves_and_writes_run(tiny_data, tmp_path):
    history = train(_config(tiny_data, tmp_path, epochs=3), progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["psnr"] > history[0]["psnr"]
    for name in ("config.json", "state.pt", "history.json", "best.safetensors", "best.json", "last.safetensors"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "history.json").read_text()) == history
    best = load(tmp_path / "best")
    assert best.config["chans"] == 4 and best.config["num_pool_layers"] == 2


def test_resume_after_interruption_matches_uninterrupted(tiny_data, tmp_path, interrupt_training):
    straight = tmp_path / "straight"
    train(_config(tiny_data, straight), progress=False)

    interrupted = tmp_path / "interrupted"
    interrupt_training(_config(tiny_data, interrupted))
    saved = torch.load(interrupted / "state.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (0, 2)

    history = train(_config(tiny_data, interrupted), progress=False)
    assert len(history) == 2
    for key, value in _weights(straight).items():
        torch.testing.assert_close(_weights(interrupted)[key], value, rtol=0, atol=0)


def test_finished_run_is_reused(tiny_data, tmp_path):
    first = train(_config(tiny_data, tmp_path, epochs=1), progress=False)
    again = train(_config(tiny_data, tmp_path, epochs=1), progress=False)
    assert again == first


def test_different_config_in_same_dir_is_refused(tiny_data, tmp_path):
    train(_config(tiny_data, tmp_path, epochs=1), progress=False)
    with pytest.raises(ConfigError, match="different configuration"):
        train(_config(tiny_data, tmp_path, epochs=1, lr=1e-4), progress=False)
    history = train(_config(tiny_data, tmp_path, epochs=1, lr=1e-4), overwrite=True, progress=False)
    assert len(history) == 1


def test_time_budget_stops_and_validates(tiny_data, tmp_path):
    from reconguard.training.trainer import TrainingCappedWarning

    with pytest.warns(TrainingCappedWarning, match="stopped by the wall-clock cap"):
        history = train(_config(tiny_data, tmp_path, epochs=50, max_minutes=1e-4), progress=False)
    assert len(history) == 1 and history[0]["epoch"] == 1  # the first epoch, cut short
    assert history[0]["partial"] and history[0]["stopped_by_cap"]


@pytest.mark.parametrize(
    "overrides",
    [
        dict(epochs=0), dict(batch_size=0), dict(lr=-1.0), dict(loss="hinge"), dict(mask="spiral"), dict(max_minutes=0),
        dict(robust="adversarial"), dict(robust_config={"eps": 0.1}), dict(robust="pgd", robust_config={"k": 1}),
    ],
)
def test_impossible_configs_raise(tiny_data, tmp_path, overrides):
    with pytest.raises(ConfigError):
        _config(tiny_data, tmp_path, **overrides)


def test_cpu_presets_build():
    from reconguard.models import build

    for name, config in CPU_PRESETS.items():
        build(name, **config)


@pytest.mark.parametrize(
    "model,model_config",
    [
        ("varnet", {"num_cascades": 2, "chans": 4, "pools": 2, "sens_chans": 2, "sens_pools": 2}),
        ("modl", {"num_unrolls": 2, "chans": 8, "num_layers": 3, "cg_iterations": 3}),
    ],
)
def test_unrolled_models_train(model, model_config, tiny_data, tmp_path):
    history = train(_config(tiny_data, tmp_path, model=model, model_config=model_config, epochs=1), progress=False)
    assert len(history) == 1 and history[0]["psnr"] > 0
    assert load(tmp_path / "best").name == model


def test_learning_rate_schedule(tiny_data, tmp_path):
    config = _config(tiny_data, tmp_path, epochs=5, lr=1e-3, final_lr_fraction=0.1)
    rates = [config.learning_rate(e) for e in range(5)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(rates, rates[1:]))
    constant = _config(tiny_data, tmp_path, final_lr_fraction=1.0)
    assert constant.learning_rate(0) == constant.learning_rate(1) == pytest.approx(constant.lr)
    with pytest.raises(ConfigError):
        _config(tiny_data, tmp_path, final_lr_fraction=0)


def test_run_written_before_robust_options_existed_resumes(tiny_data, tmp_path):
    first = train(_config(tiny_data, tmp_path, epochs=1), progress=False)
    path = tmp_path / "config.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("robust", "robust_config", "init")}
    path.write_text(json.dumps(old))
    assert train(_config(tiny_data, tmp_path, epochs=1), progress=False) == first
    with pytest.raises(ConfigError, match="different configuration"):
        train(_config(tiny_data, tmp_path, epochs=1, robust="pgd"), progress=False)


def test_config_with_robust_options_is_json_and_resolved(tiny_data, tmp_path):
    config = _config(tiny_data, tmp_path, robust="fnaf", robust_config={"beta": 10})
    saved = json.loads(json.dumps(asdict(config)))
    assert saved["robust_config"]["beta"] == 10 and saved["robust_config"]["alpha"] == 1.0
    assert TrainConfig(**saved) == config  # config.json round-trips
    assert _config(tiny_data, tmp_path).robust_config == {}
