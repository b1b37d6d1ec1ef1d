"""Model names: a misspelled one lists the valid names and the closest; a registered trainable
model used with random weights warns that it is untrained (one line at the command line)."""

from __future__ import annotations

import warnings

import pytest

from reconguard.cli.main import main
from reconguard.errors import ConfigError, DataError
from reconguard.models import build, load
from reconguard.models.registry import UntrainedModelWarning


def test_a_misspelled_name_suggests_the_closest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown model 'unte' \(did you mean 'unet'\?\); choose one of \["):
        load("unte")
    with pytest.raises(ConfigError, match=r"did you mean 'modl'"):
        build("modll")
    with pytest.raises(ConfigError, match=r"unknown model 'qqqqqq'; choose one of"):
        load("qqqqqq")
    with pytest.raises(DataError, match="unte.json: not a readable"):  # a path is a path
        load("./unte")


def test_untrained_models_warn_and_the_others_do_not():
    with pytest.warns(UntrainedModelWarning, match="modl is built with random weights"):
        load("modl", num_unrolls=1, chans=2, num_layers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load("zero_filled"), load("cs_tv")  # nothing to train


def test_the_command_line_prints_one_warning_line_and_one_error_line(tiny_data, capsys):
    assert main(["evaluate", "--model", "rim", "--data", str(tiny_data), "--quiet", "--batch-size", "16"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [line for line in err if line.startswith("reconguard evaluate: warning: rim is built with random")]
    assert len(err) == 1
    assert main(["evaluate", "--model", "vartnet", "--data", str(tiny_data)]) == 2
    assert "did you mean 'varnet'" in capsys.readouterr().err
