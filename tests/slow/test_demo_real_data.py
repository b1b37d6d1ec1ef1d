"""Slow: the demo on the real built-in data (MNI152) with a short training budget (`make test-slow`)."""

from __future__ import annotations

import re

import pytest

from reconguard.cli.main import main

pytestmark = pytest.mark.slow


def test_demo_on_mni152_beats_zero_filled(tmp_path, capsys):
    pytest.importorskip("nilearn")
    argv = ["demo", "--workdir", str(tmp_path), "--max-minutes", "2", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    psnr = {
        name: float(re.search(rf"\| {name} \| \d+ \| \d+ \| ([\d.]+) ±", out).group(1))
        for name in ("zero-filled", "CS-TV", "U-Net")
    }
    # two minutes of training time (a few epochs on one thread) clear zero-filled by more than 1 dB
    assert psnr["U-Net"] > psnr["zero-filled"] + 1.0, psnr
    assert psnr["CS-TV"] > psnr["zero-filled"], psnr
