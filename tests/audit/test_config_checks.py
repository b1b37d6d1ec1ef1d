"""The audit config is checked in full before any work: option types, budgets, and every
model/defense/attack pairing built once (cheaply, on the meta device)."""

from __future__ import annotations

import pytest

from reconguard.audit import parse_config
from reconguard.audit.matrix import train_options
from reconguard.errors import ConfigError
from reconguard.models.registry import UntrainedModelWarning

BASE = """\
output: out
data: {{path: {data}, split: test, max_slices: 4}}
sampling: {{mask: random}}
models:
  zf: {{name: zero_filled}}
  modl: {{name: modl, config: {{num_unrolls: 2, chans: 4, num_layers: 2}}}}
defenses:
  cyclic: {{settings: {{steps: 2}}, models: [modl]}}
attacks:
  pgd-kspace: {{eps: [0.01], steps: 2}}
batch_size: 2
"""


def _parse(tmp_path, data, old="", new=""):
    text = BASE.format(data=data)
    assert old in text
    return parse_config(text.replace(old, new, 1), source="audit.yaml", base=tmp_path)


@pytest.mark.parametrize(
    "old,new,line,message",
    [
        ("[0.01], steps: 2}", "[0.01], steps: many}", 10,
         r"attacks.pgd-kspace.steps: expected an integer >= 1, got 'many'"),
        ("[0.01], steps: 2}", "[0.01], steps: 2, relative: 3}", 10, r"relative: expected true or false"),
        ("[0.01], steps: 2}", "[0.01], steps: 2, step_size: -1}", 10, r"step_size: expected a finite number > 0"),
        ("[0.01]", "[1.0e+30]", 10, r"largest supported budget"),
        ("{name: zero_filled}", "{name: zero_filed}", 5, r"did you mean 'zero_filled'"),
        ("{name: zero_filled}", "{name: [zero_filled]}", 5, r"unknown model \['zero_filled'\]"),
        ("{mask: random}", "{mask: [random]}", 3, r"sampling.mask: unknown mask \['random'\]"),
        ("{mask: random}", "{mask: variable_density}", 8, r"cyclic draws its masks like the sampling mask"),
        ("models: [modl]}", "models: [zf], calibrate: 5}", 8, r"calibrate: expected a non-empty string"),
        ("models: [modl]}", "models: [zf], calibrate: nowhere}", 8, r"nowhere is not a directory"),
        ("  cyclic: {settings: {steps: 2}, models: [modl]}", "  smooth: {models: [zf]}", 8,
         r"defenses.smooth.settings: cannot protect zf: denoiser-mode smoothing"),
        ("batch_size: 2", "batch_size: 2\ndevice: gpu0", 12, r"device: 'gpu0' is not a torch device"),
        ("batch_size: 2", "batch_size: 2.5", 11, r"batch_size: expected an integer >= 1"),
        ("  zf: {name: zero_filled}", "  zf: {train: {model: unet, steps: 0}}", 5, r"steps: expected an integer >= 1"),
        ("  zf: {name: zero_filled}", "  zf: {train: {model: unet, loss: hinge}}", 5, r"unknown loss 'hinge'"),
        ("  zf: {name: zero_filled}", "  zf: {train: {model: unet, set: {wings: 2}}}", 5, r"unknown hyper-parameter"),
        ("  zf: {name: zero_filled}", "  zf: {train: {model: unet, robust: pgd, robust_set: {k: 1}}}", 5,
         r"models.zf.train: .*k"),
        ("  zf: {name: zero_filled}", "  zf: {name: unet, config: [4]}", 5, r"config: expected a mapping"),
    ],
)
def test_wrong_options_and_impossible_pairings_name_the_line(old, new, line, message, tiny_data, tmp_path):
    with pytest.raises(ConfigError, match=message) as info:
        _parse(tmp_path, tiny_data, old, new)
    assert str(info.value).startswith(f"audit.yaml:{line}:"), str(info.value)


def test_a_network_input_attack_on_a_model_that_cannot_take_it_is_refused(tiny_data, tmp_path):
    attacks = "  pgd-kspace: {eps: [0.01], steps: 2}"
    both = attacks + "\n  pgd-input: {eps: [0.01], steps: 2}"
    _parse(tmp_path, tiny_data, attacks, both)  # zero-filled and MoDL take a network-input perturbation
    text = BASE.format(data=tiny_data).replace(attacks, both).replace(
        "  zf: {name: zero_filled}", "  zf: {name: zero_filled}\n  vn: {name: varnet, config: {num_cascades: 1}}")
    with pytest.raises(ConfigError, match=r"audit.yaml:12: attacks.pgd-input: .*vn does not take"):
        parse_config(text, source="audit.yaml", base=tmp_path)


def test_registered_models_with_random_weights_warn_naming_the_line(tiny_data, tmp_path):
    with pytest.warns(UntrainedModelWarning, match=r"audit.yaml:6: models.modl: modl is built with random weights"):
        _parse(tmp_path, tiny_data)


def test_train_budgets_are_epochs_or_steps_and_minutes_only_a_cap():
    assert train_options({"model": "unet", "steps": 50}) == {"epochs": None, "max_steps": 50, "robust_config": {}}
    assert train_options({"model": "unet", "epochs": 3, "steps": 50, "max_minutes": 2.0}) == {
        "epochs": 3, "max_steps": 50, "max_minutes": 2.0, "robust_config": {}}
    assert "max_minutes" not in train_options({"model": "unet"})
