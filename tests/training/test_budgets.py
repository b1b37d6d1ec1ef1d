"""Training budgets (epochs, steps, the wall-clock cap), epoch numbering, progress-bar names and
resuming from an unreadable or foreign run directory."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from reconguard.errors import ConfigError, DataError
from reconguard.training import TrainConfig, train
from reconguard.training.trainer import TrainingCappedWarning


def _config(data, out, **overrides) -> TrainConfig:
    base = dict(model="unet", model_config={"chans": 4, "num_pool_layers": 2}, data=str(data), out=str(out),
                epochs=2, batch_size=4, lr=3e-3)
    return TrainConfig(**{**base, **overrides})


def test_a_step_budget_stops_mid_epoch_and_validates_the_partial_epoch(tiny_data, tmp_path):
    # tiny_data/train holds 44 slices: 11 steps of 4 per epoch, so 14 steps end inside epoch 2.
    history = train(_config(tiny_data, tmp_path, epochs=None, max_steps=14), progress=False)
    assert [(h["epoch"], h["steps"], h.get("partial", False)) for h in history] == [(1, 11, False), (2, 14, True)]
    assert not any(h.get("stopped_by_cap") for h in history)  # a step budget is not a cap
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    assert (saved["epoch"], saved["step"], saved["stopped_by_cap"]) == (1, 3, False)
    assert train(_config(tiny_data, tmp_path, epochs=None, max_steps=14), progress=False) == history


def test_epochs_and_steps_together_stop_at_whichever_comes_first(tiny_data, tmp_path):
    history = train(_config(tiny_data, tmp_path, epochs=1, max_steps=100), progress=False)
    assert [(h["epoch"], h["steps"]) for h in history] == [(1, 11)]


def test_the_wall_clock_cap_is_logged_and_recorded(tiny_data, tmp_path, capsys):
    with pytest.warns(TrainingCappedWarning, match=r"after 1 of 22 steps"):
        history = train(_config(tiny_data, tmp_path, max_minutes=1e-6), progress=True, label="tiny-unet")
    assert [(h["epoch"], h["partial"], h["stopped_by_cap"]) for h in history] == [(1, True, True)]
    assert json.loads((tmp_path / "history.json").read_text()) == history
    assert torch.load(tmp_path / "state.pt", weights_only=True)["stopped_by_cap"] is True
    captured = capsys.readouterr()
    assert "tiny-unet epoch 1/2" in captured.err  # the bar
    assert "tiny-unet epoch 1/2 (partial: 1 steps): val PSNR" in captured.out  # the validation line


def test_progress_bars_name_the_model_and_number_each_epoch_once(tiny_data, tmp_path, capsys):
    train(_config(tiny_data, tmp_path), progress=True)
    captured = capsys.readouterr()
    err, out = captured.err.replace("\r", "\n"), captured.out
    assert "unet epoch 1/2" in err and "unet epoch 2/2" in err
    assert "epoch 0" not in err + out and "epoch 3" not in err + out
    validations = [line for line in out.splitlines() if "val PSNR" in line]
    assert [line.split(":")[0] for line in validations] == ["unet epoch 1/2", "unet epoch 2/2"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(epochs=None), "give a training budget"),
        (dict(epochs=None, max_steps=5, final_lr_fraction=0.1), "give epochs"),
        (dict(max_steps=0), "max_steps must be an integer >= 1"),
        (dict(epochs=1.5), "epochs must be an integer >= 1"),
        (dict(max_minutes=float("nan")), "max_minutes must be a positive number"),
    ],
)
def test_impossible_budgets_raise(tiny_data, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _config(tiny_data, tmp_path, **overrides)


class _Payload:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _corrupt(out, kind: str, marker) -> None:
    state = out / "state.pt"
    if kind == "garbage":
        state.write_bytes(b"\x00not a torch file")
    elif kind == "truncated":
        state.write_bytes(state.read_bytes()[:200])
    elif kind == "code":
        state.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    elif kind == "foreign":
        torch.save([1, 2, 3], state)
    elif kind == "other model":
        torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}, "epoch": 1, "step": 0, "elapsed": 1.0,
                    "best_psnr": 10.0, "history": []}, state)
    else:
        (out / "config.json").write_text("{ not json")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "code", "foreign", "other model", "config"])
def test_an_unreadable_run_is_one_error_naming_the_file_and_how_to_restart(tiny_data, tmp_path, kind):
    config = _config(tiny_data, tmp_path / "run", epochs=None, max_steps=3)
    train(config, progress=False)
    marker = tmp_path / "unpickled"
    _corrupt(tmp_path / "run", kind, marker)
    with pytest.raises(DataError, match=r"(state\.pt|config\.json): .*--overwrite") as info:
        train(config, progress=False)
    assert "\n" not in str(info.value) and not marker.exists()
    assert train(config, overwrite=True, progress=False)[-1]["steps"] == 3
