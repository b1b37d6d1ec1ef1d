"""The command line: every command explains itself; bad input is one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reconguard.cli.main import SUBCOMMANDS, build_parser, main
from reconguard.report.verdicts import VERDICTS


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", [[], *[[name] for name in SUBCOMMANDS], ["data", "build"], ["data", "info"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: reconguard" in out and len(out.splitlines()) > 5


def test_parser_lists_every_subcommand():
    help_text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in help_text


def test_train_help_names_every_trainable_model(capsys):
    from reconguard.models.registry import MODELS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in set(MODELS) - {"zero_filled", "cs_tv"})


def _bad_cases(tiny_data, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    (tmp_path / "corrupt.json").write_text('{"name": "unet", "config": {}}')
    data = ["--data", str(tiny_data)]
    return {
        "unknown model": ["train", "--model", "resnet9000", *data, "--out", str(tmp_path / "r")],
        "missing data": ["evaluate", "--model", "zero_filled", "--data", str(tmp_path / "nowhere")],
        "corrupt checkpoint": ["evaluate", "--model", str(corrupt), *data],
        "missing checkpoint": ["evaluate", "--model", str(tmp_path / "absent.safetensors"), *data],
        "bad hyper-parameter": ["train", "--model", "unet", "--set", "wings=2", *data, "--out", str(tmp_path / "r2")],
        "malformed --set": ["train", "--model", "unet", "--set", "chans", *data, "--out", str(tmp_path / "r3")],
        "impossible acceleration": ["evaluate", "--model", "zero_filled", *data, "--acceleration", "0.5"],
        "negative epochs": ["train", "--model", "unet", "--epochs", "-1", *data, "--out", str(tmp_path / "r4")],
        "negative noise": ["data", "build", "--out", str(tmp_path / "d"), "--noise", "-1", "--quiet"],
    }


@pytest.mark.parametrize(
    "case",
    ["unknown model", "missing data", "corrupt checkpoint", "missing checkpoint", "bad hyper-parameter",
     "malformed --set", "impossible acceleration", "negative epochs", "negative noise"],
)
def test_bad_input_is_one_line_exit_2(case, tiny_data, tmp_path, capsys):
    code, _, err = _run(_bad_cases(tiny_data, tmp_path)[case], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reconguard ") and "error:" in lines[0], err
    assert "Traceback" not in err


def test_evaluate_prints_table(tiny_data, tmp_path, capsys):
    report = tmp_path / "new" / "results.json"  # the directory is created
    code, out, _ = _run(
        ["evaluate", "--model", "zero_filled", "--model", "cs_tv", "--data", str(tiny_data), "--quiet",
         "--json", str(report)],
        capsys,
    )
    assert code == 0
    assert "| zero_filled |" in out and "| cs_tv |" in out and "PSNR" in out
    assert report.exists()


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "reconguard.cli.main", "evaluate", "--model", "zero_filled", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_demo_runs_the_audit_end_to_end_and_reuses_its_cache(tmp_path, capsys):
    argv = ["demo", "--workdir", str(tmp_path), "--source", "phantom", "--size", "32", "--slices", "4", "--quiet",
            "--retrain", "--epochs", "1"]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert (tmp_path / "audit.yaml").exists() and (tmp_path / "report" / "index.html").exists()
    assert "report:" in out
    # the compact verdict table: one line per model and defense, starred as not the reference recipe,
    # then one line of evidence per model and defense
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model "))
    table = lines[start + 1:lines.index("", start)]
    pairs = {tuple(line.split()[:2]) for line in table}
    assert pairs == {("zero-filled", "none"), ("unet*", "none"), ("unet*", "fnaf-robust"), ("modl*", "none"),
                     ("modl*", "cyclic"), ("varnet*", "none")}
    assert all(any(verdict in line for verdict in VERDICTS) for line in table)
    assert any(line.startswith("unet + fnaf-robust: ") for line in lines)
    # zero-filling, a linear reconstruction, loses nothing the data carry: never an FNAF hit, not vulnerable
    (zero_filled,) = [line for line in table if line.startswith("zero-filled")]
    assert "0% [0%, 0%]" in zero_filled and "vulnerable" not in zero_filled
    assert "* unet: retrained 1 epoch(s), not the reference recipe's 150" in out
    # both defenses are paired with their undefended model: the report's defense effects are not empty
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    effects = page.split("<h2>Defense effects</h2>")[1].split("<h2>")[0]
    for row in ("<td>unet</td><td>fnaf-robust</td><td>fnaf</td>", "<td>unet</td><td>fnaf-robust</td><td>pgd-kspace",
                "<td>modl</td><td>cyclic</td><td>pgd-input</td>"):
        assert row in effects
    assert "No defended cell" not in effects and "defense_tradeoff" in " ".join(
        p.name for p in (tmp_path / "report" / "figures").iterdir())
    weights = tmp_path / "models" / "unet" / "best.safetensors"
    stamp = weights.stat().st_mtime_ns
    from reconguard.audit import Store

    records = Store(tmp_path).records()
    code, again, _ = _run(argv, capsys)
    assert code == 0 and weights.stat().st_mtime_ns == stamp
    assert Store(tmp_path).records() == records and len(Store(tmp_path).runs()) == 2
