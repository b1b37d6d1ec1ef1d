"""``reconguard defend``: clean cost, non-adaptive and adaptive rows, one-line errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from reconguard.cli.main import main


@pytest.fixture(scope="module")
def tiny_modl(tmp_path_factory):
    from reconguard.models import build, save

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "modl"
    save(build("modl", num_unrolls=2, chans=8, num_layers=3, cg_iterations=3), path)
    return path


@pytest.mark.parametrize(
    "defense,settings,adaptive",
    [
        ("cyclic", ["--defense-set", "steps=3", "--calibrate", "none"], "BPDA"),
        ("smooth", ["--defense-set", "samples=2"], "PGD through the defense"),
    ],
)
def test_defend_reports_every_condition(defense, settings, adaptive, tiny_data, tiny_modl, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["defend", "--model", str(tiny_modl), "--data", str(tiny_data), "--defense", defense, *settings,
            "--attack", "pgd-image", "--steps", "2", "--max-slices", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "adaptive attack on the defense" in printed and adaptive in printed
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for condition in ("undefended_clean", "clean", "undefended_attacked", "nonadaptive", "attacked"):
        assert all(float(r[f"{condition}_psnr"]) > 0 for r in rows)
    assert all(float(r["undefended_attacked_psnr"]) < float(r["undefended_clean_psnr"]) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["defense"] == defense and summary["mean"]["clean_seconds"] > 0


def test_cyclic_threshold_is_calibrated_on_the_validation_split(tiny_data, tiny_modl, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["defend", "--model", str(tiny_modl), "--data", str(tiny_data), "--defense", "cyclic",
            "--defense-set", "steps=2", "--attack", "pgd-image", "--steps", "1", "--max-slices", "1",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["threshold"] > 0


@pytest.mark.parametrize(
    "extra",
    [["--defense", "prayer"], ["--defense", "cyclic", "--defense-set", "wings=2"], ["--defense", "cyclic",
     "--attack", "fnaf"], ["--defense", "smooth", "--defense-set", "samples=0"]],
)
def test_bad_defend_input_is_one_line(extra, tiny_data, tiny_modl, tmp_path, capsys):
    argv = ["defend", "--model", str(tiny_modl), "--data", str(tiny_data), "--out", str(tmp_path / "r"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reconguard defend: error:")


def test_no_adaptive_skips_the_adaptive_row_and_says_so(tiny_data, tiny_modl, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["defend", "--model", str(tiny_modl), "--data", str(tiny_data), "--defense", "cyclic",
            "--defense-set", "steps=2", "--calibrate", "none", "--attack", "pgd-image", "--steps", "1",
            "--max-slices", "1", "--no-adaptive", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "not run" in capsys.readouterr().out
    mean = json.loads((out / "summary.json").read_text())["mean"]
    assert "attacked_psnr" not in mean and mean["nonadaptive_seconds"] > 0 and mean["clean_psnr"] > 0
