"""Attack panels: valid PNGs, atomic writes, no display, matplotlib imported only when drawing."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from reconguard.errors import ReconguardError
from reconguard.report import attack_panel, save_figure


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def images():
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 40), torch.linspace(-1, 1, 40), indexing="ij")
    target = ((xx**2 / 0.6 + yy**2 / 0.4) < 1).float()
    clean = target + 0.05 * torch.randn(target.shape, generator=gen)
    attacked = clean + 0.2 * torch.randn(target.shape, generator=gen)
    noise = clean + 0.02 * torch.randn(target.shape, generator=gen)
    return target, clean, attacked, noise


@pytest.mark.parametrize("with_noise", [True, False])
def test_panel_is_a_valid_png_and_leaves_no_temp_files(images, tmp_path, with_noise):
    target, clean, attacked, noise = images
    feature = (torch.linspace(-1, 1, 40)[:, None] ** 2 + torch.linspace(-1, 1, 40)[None] ** 2) < 0.05
    path = attack_panel(
        target[None, None],  # leading singleton dims are dropped
        torch.polar(clean.abs(), torch.full_like(clean, 0.3)),  # complex: its magnitude is shown
        attacked.numpy(),
        noise if with_noise else None,
        title="unet | pgd-kspace | slice 3",
        path=tmp_path / "panel.png",
        feature_mask=feature,
        data_range=1.0,
    )
    assert path == tmp_path / "panel.png"
    width, height = _png_size(path)
    assert 600 < width < 2000 and 300 < height < 1200
    assert width > height * (1.5 if with_noise else 1.1)
    assert 10_000 < path.stat().st_size < 2_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["panel.png"]


def test_panel_rejects_mismatched_or_bad_images(images, tmp_path):
    target, clean, attacked, _ = images
    with pytest.raises(ReconguardError, match="differ in shape"):
        attack_panel(target, clean[:30], attacked, title="t", path=tmp_path / "a.png")
    with pytest.raises(ReconguardError, match="NaN"):
        attack_panel(target, clean * np.nan, attacked, title="t", path=tmp_path / "b.png")
    with pytest.raises(ReconguardError, match="2-D"):
        attack_panel(target.expand(2, 40, 40), clean, attacked, title="t", path=tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


def test_save_figure_is_atomic_on_failure(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    with pytest.raises(ReconguardError, match="format"):
        save_figure(fig, tmp_path / "figure.notaformat")
    assert list(tmp_path.iterdir()) == []
    save_figure(fig, tmp_path / "sub" / "figure.png")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["figure.png"]


def test_importing_report_does_not_import_matplotlib():
    code = "import sys, reconguard.report; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
