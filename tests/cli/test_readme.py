"""Every line of the README's command-line section runs (on tiny data, paths rewritten), so the
examples a new user copies after ``make demo`` cannot rot."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from reconguard.cli.main import main
from reconguard.data import build_dataset
from reconguard.models import pretrained

README = Path(__file__).resolve().parents[2] / "README.md"
#: Options that keep each command to a couple of slices and iterations on the tiny data.
SMALL = {"attack": ["--max-slices", "2", "--steps", "2"], "transfer": ["--max-slices", "2", "--steps", "2"],
         "defend": ["--max-slices", "2", "--steps", "2", "--defense-set", "steps=2"]}


def readme_commands() -> list[str]:
    """The lines of the first code block after '## Command line'."""
    section = README.read_text().split("## Command line", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block, "README: no ```text block in the command-line section"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_block_is_found_and_every_line_is_a_reconguard_command():
    commands = readme_commands()
    assert len(commands) >= 8 and all(c.startswith("reconguard ") for c in commands)
    assert any("pretrained:" in c for c in commands) and any("runs/demo/data" in c for c in commands)


@pytest.mark.skipif(not pretrained.pretrained_names(), reason="no reference models ship in this checkout")
def test_every_readme_command_runs_on_tiny_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    demo = tmp_path / "runs" / "demo"
    build_dataset(demo / "data", source="phantom", size=32, seed=0, progress=False)
    (demo / "audit.yaml").write_text(
        "output: .\ndata: {builtin: phantom, size: 32, max_slices: 2}\n"
        "models:\n  zero-filled: {name: zero_filled}\n  unet: {pretrained: unet}\n"
        "attacks:\n  pgd-kspace: {eps: [0.05], steps: 2}\npanels: false\n")
    for line in readme_commands():
        argv = shlex.split(line)[1:]
        small = SMALL.get(argv[0], [])
        if "fnaf" in line:  # a feature search has no iterations to shorten
            small = small[:2]
        argv += small + (["--quiet"] if argv[0] not in ("report", "data") else [])
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, (line, out[-2000:], err[-2000:])
    assert (demo / "records.csv").exists() and (demo / "report" / "index.html").exists()
    assert (tmp_path / "runs" / "my-unet-fnaf" / "best.safetensors").exists()
