"""Before the matrix: train: models on epochs/steps budgets (the wall-clock cap recorded when it cut
training), and every input read before the output directory is touched."""

from __future__ import annotations

import shutil

import pytest

from reconguard.audit import load_config, run_audit
from reconguard.errors import DataError
from reconguard.training.trainer import TrainingCappedWarning

CONFIG = """\
output: {out}
data: {{path: {data}, split: test, max_slices: 2}}
models:
  small: {{train: {{model: unet, set: {{chans: 4, num_pool_layers: 2}}, steps: 3, batch_size: 8}}}}
  capped: {{train: {{model: unet, set: {{chans: 4, num_pool_layers: 2}}, epochs: 3, max_minutes: 1.0e-6}}}}
attacks:
  pgd-kspace: {{eps: [0.01], steps: 1}}
batch_size: 2
panels: false
"""


def test_train_budgets_and_the_cap_are_recorded_for_the_report(tiny_data, tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text(CONFIG.format(out=tmp_path / "out", data=tiny_data))
    with pytest.warns(TrainingCappedWarning, match=r"capped \(unet\): training stopped by the wall-clock cap"):
        store = run_audit(load_config(path), progress=False)
    trainings = store.trainings()
    assert trainings["small"]["stopped_by_cap"] is False and trainings["capped"]["stopped_by_cap"] is True
    assert (trainings["small"]["epochs"], trainings["small"]["max_steps"], trainings["small"]["steps"]) == (None, 3, 3)
    assert trainings["capped"]["max_minutes"] == 1e-6 and trainings["capped"]["partial_epoch"] is True
    again = run_audit(load_config(path), progress=False)  # nothing retrained; the facts stay recorded
    assert again.trainings() == trainings and len(again.runs()) == 2


@pytest.mark.parametrize("damage", ["data file", "checkpoint"])
def test_inputs_are_read_before_the_output_directory_is_touched(tiny_data, tmp_path, damage):
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "test", data / "test")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not safetensors")
    (tmp_path / "model.json").write_text('{"name": "zero_filled", "config": {}}')
    if damage == "data file":
        (data / "test" / "zz_broken.h5").write_bytes(b"not hdf5")
        model = "{name: zero_filled}"
    else:
        model = f"{{checkpoint: {tmp_path / 'model'}}}"
    path = tmp_path / "audit.yaml"
    path.write_text(f"output: {tmp_path / 'out'}\ndata: {{path: {data}}}\nmodels:\n  m: {model}\n"
                    "attacks:\n  pgd-kspace: {eps: [0.01], steps: 1}\n")
    with pytest.raises(DataError, match="zz_broken.h5: not a readable HDF5" if damage == "data file" else
                       "model.safetensors: cannot load weights"):
        run_audit(load_config(path), progress=False)
    assert not (tmp_path / "out").exists()
