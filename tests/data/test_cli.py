"""``reconguard data build`` / ``info``: output, caching, and one-line errors with exit code 2."""

from __future__ import annotations

import pytest

import reconguard.cli.main as cli_main
from reconguard.cli.main import main
from reconguard.data import load_manifest


@pytest.fixture(autouse=True)
def only_data_command(monkeypatch):
    """Register only ``data``, so these tests do not depend on the other sub-commands' imports."""
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", ("data",))


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_build_then_info(tmp_path, capsys):
    out = tmp_path / "data"
    args = ["data", "build", "--out", str(out), "--source", "phantom", "--size", "16", "--block", "4"]
    assert main(args + ["--coils", "2", "--noise", "0", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "simulated k-space" in printed and "train" in printed and "16x16" in printed
    manifest = load_manifest(out)
    assert manifest["parameters"]["coils"] == 2 and manifest["parameters"]["seed"] == 3
    assert manifest["parameters"]["noise"] == 0.0
    assert main(["data", "info", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["split", "volumes", "slices", "shape", "coils"]
    rows = {line.split()[0]: line.split()[1:] for line in table[2:]}
    for split, counts in manifest["splits"].items():
        assert rows[split] == [str(counts["files"]), str(counts["slices"]), "16x16", "2"]
    # same options again: cached, quiet prints nothing
    assert main(args + ["--coils", "2", "--noise", "0", "--seed", "3", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    # other options: refused without --overwrite, accepted with it
    assert main(args + ["--quiet"]) == 2
    assert "already holds a data set built with" in _error_line(capsys)
    assert main(args + ["--quiet", "--overwrite", "--fractions", "0.5", "0.25", "0.25"]) == 0
    assert load_manifest(out)["parameters"]["fractions"] == [0.5, 0.25, 0.25]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--size", "8"], "argument --size: expected an integer >= 16"),
        (["--coils", "0"], "argument --coils: expected an integer >= 1"),
        (["--noise", "nan"], "argument --noise: expected a finite number"),
        (["--noise", "-1"], "argument --noise: expected a finite number >= 0"),
        (["--fractions", "0.5", "0.5", "0.5"], "fractions must sum to 1"),
    ],
)
def test_bad_build_options_exit_2_with_one_line(tmp_path, capsys, extra, message):
    code = main(["data", "build", "--out", str(tmp_path / "o"), "--source", "phantom", "--quiet", *extra])
    assert code == 2
    line = _error_line(capsys)
    assert line.startswith(("reconguard data: error: ", "reconguard data build: error: ")) and message in line
    assert not (tmp_path / "o" / "dataset.json").exists()


def test_info_on_missing_or_broken_directory(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nothing")]) == 2
    assert "no dataset.json" in _error_line(capsys)
    (tmp_path / "dataset.json").write_text("[1, 2")
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "not a readable JSON manifest" in _error_line(capsys)


def test_help_explains_simulated_kspace(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "build", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "SIMULATED" in text and "--overwrite" in text and "mricron-data" in text
