"""Metrics against fastMRI's ``evaluate.py`` and scikit-image, gradients, and input errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from reconguard.errors import ConfigError, DataError
from reconguard.metrics import nmse, psnr, ssim, ssim_loss, volume_nmse, volume_psnr, volume_ssim

fastmri_evaluate = pytest.importorskip("fastmri.evaluate")
skimage_metrics = pytest.importorskip("skimage.metrics")
ndimage = pytest.importorskip("scipy.ndimage")

SHAPES = [(3, 64, 64), (3, 37, 53), (3, 7, 7), (3, 101, 80)]


def _volume_pair(shape, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ground-truth volume and a degraded copy (noise, plus blur for image-like volumes)."""
    rng = np.random.default_rng(seed)
    gt = rng.random(shape)
    if kind == "smooth":
        yy = np.linspace(-1, 1, shape[1])[:, None]
        xx = np.linspace(-1, 1, shape[2])[None, :]
        ellipse = ((yy / 0.8) ** 2 + (xx / 0.6) ** 2 < 1).astype(float)
        gt = np.stack([ndimage.gaussian_filter(ellipse + 0.3 * g, 1.5) for g in gt]) * 3e-4
    pred = gt + rng.normal(0.0, 0.1 * gt.std(), shape)
    if kind == "smooth":
        pred = np.stack([ndimage.gaussian_filter(p, 0.8) for p in pred])
    return gt, pred


def _fastmri(gt, pred, maxval):
    return (
        float(fastmri_evaluate.psnr(gt, pred, maxval)),
        float(np.squeeze(fastmri_evaluate.ssim(gt, pred, maxval))),
        float(fastmri_evaluate.nmse(gt, pred)),
    )


def _ours(gt, pred, maxval):
    return (
        volume_psnr(gt, pred, maxval=maxval),
        volume_ssim(gt, pred, maxval=maxval),
        volume_nmse(gt, pred),
    )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize("explicit_maxval", [False, True])
def test_volume_metrics_equal_fastmri(shape, kind, explicit_maxval):
    gt, pred = _volume_pair(shape, kind)
    maxval = 1.3 * float(gt.max()) if explicit_maxval else None
    ours, ref = _ours(gt, pred, maxval), _fastmri(gt, pred, maxval)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    # tensors give the same numbers as arrays
    assert _ours(torch.from_numpy(gt), torch.from_numpy(pred), maxval) == ours


def test_float32_volumes():
    """fastMRI feeds float32 to scikit-image, which then computes SSIM in float32: we agree with
    fastMRI on the same data in float64 to round-off, and with its float32 result to its own
    float32 round-off (observed up to ~2e-6)."""
    gt, pred = _volume_pair((3, 64, 48), "smooth", seed=1)
    gt32, pred32 = gt.astype(np.float32), pred.astype(np.float32)
    ours = _ours(gt32, pred32, None)
    in_float64 = _fastmri(gt32.astype(float), pred32.astype(float), None)
    np.testing.assert_allclose(ours, in_float64, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours, _fastmri(gt32, pred32, None), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 5e-5)])
def test_batch_metrics_match_references_per_sample(dtype, atol):
    gt, pred = _volume_pair((4, 40, 33), "smooth", seed=2)
    ranges = gt.reshape(4, -1).max(axis=1)
    target = torch.from_numpy(gt)[:, None].to(dtype)
    recon = torch.from_numpy(pred)[:, None].to(dtype)
    got_ssim = ssim(target, recon, data_range=torch.from_numpy(ranges), reduction="none")
    got_psnr = psnr(target, recon, data_range=torch.from_numpy(ranges), reduction="none")
    got_nmse = nmse(target, recon, reduction="none")
    for i in range(4):
        ref = skimage_metrics.structural_similarity(gt[i], pred[i], data_range=ranges[i])
        assert abs(float(got_ssim[i]) - ref) < atol
        ref = skimage_metrics.peak_signal_noise_ratio(gt[i], pred[i], data_range=ranges[i])
        assert abs(float(got_psnr[i]) - ref) < 10 * atol
        ref = float(fastmri_evaluate.nmse(gt[i], pred[i]))
        assert abs(float(got_nmse[i]) - ref) < atol
    assert got_ssim.dtype == dtype and got_ssim.shape == (4,)
    mean = ssim(target, recon, data_range=torch.from_numpy(ranges))
    torch.testing.assert_close(mean, got_ssim.mean())


def test_identical_images():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(psnr(x, x, data_range=1.0))
    torch.testing.assert_close(ssim(x, x, data_range=1.0), torch.tensor(1.0))
    assert float(nmse(x, x)) == 0.0
    assert volume_psnr(x[:, 0], x[:, 0]) == float("inf")


def test_gradients_flow_and_are_finite():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 12, 10, generator=gen, dtype=torch.float64)
    noise = torch.rand(2, 1, 12, 10, generator=gen, dtype=torch.float64)
    recon = (target + 0.1 * noise).requires_grad_()

    def per_sample(r):
        return ssim(target, r, data_range=1.0, reduction="none")

    assert torch.autograd.gradcheck(per_sample, (recon,))
    recon32 = recon.detach().float().requires_grad_()
    loss = ssim_loss(target.float(), recon32, data_range=target.float().amax(dim=(1, 2, 3)))
    loss = loss + nmse(target.float(), recon32)
    loss = loss - 0.01 * psnr(target.float(), recon32, data_range=1.0)
    loss.backward()
    assert torch.isfinite(recon32.grad).all() and recon32.grad.abs().sum() > 0


def test_input_errors():
    x = torch.rand(2, 1, 8, 8)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    data_errors = [
        (lambda: ssim(x, x[:1], data_range=1.0), "shape"),
        (lambda: psnr(x, nan, data_range=1.0), "NaN"),
        (lambda: nmse(x[:0], x[:0]), "empty"),
        (lambda: ssim(x[..., :6], x[..., :6], data_range=1.0), "at least 7x7"),
        (lambda: ssim(x[:, 0], x[:, 0], data_range=1.0), r"\(B, C, H, W\)"),
        (lambda: psnr(x.to(torch.complex64), x.to(torch.complex64), data_range=1.0), "complex"),
        (lambda: nmse(torch.zeros_like(x), x), "all zeros"),
        (lambda: volume_ssim(x[0, 0].numpy(), x[0, 0].numpy()), r"\(S, H, W\)"),
        (lambda: volume_psnr(x[:, 0].numpy(), x[:1, 0].numpy()), "shape"),
        (lambda: volume_nmse(nan[:, 0].numpy(), x[:, 0].numpy()), "NaN"),
        (lambda: volume_ssim(np.zeros((1, 8, 8)), np.zeros((1, 8, 8))), "pass maxval"),
        (lambda: volume_ssim(np.ones((0, 8, 8)), np.ones((0, 8, 8)), maxval=1.0), "empty"),
        (lambda: volume_ssim(np.ones((1, 6, 8)), np.ones((1, 6, 8))), "at least 7x7"),
    ]
    for call, words in data_errors:
        with pytest.raises(DataError, match=words):
            call()
    config_errors = [
        lambda: ssim(x, x, data_range=0.0),
        lambda: psnr(x, x, data_range=float("nan")),
        lambda: ssim(x, x, data_range=torch.ones(3)),
        lambda: nmse(x, x + 1, reduction="sum"),
        lambda: volume_psnr(x[:, 0], x[:, 0], maxval=-1.0),
    ]
    for call in config_errors:
        with pytest.raises(ConfigError):
            call()


def test_import_is_cheap():
    code = (
        "import sys, reconguard.metrics; "
        "print(sorted(m for m in ('skimage', 'scipy', 'fastmri') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_foreground_psnr_ignores_the_background_error_only():
    from reconguard.metrics import foreground_psnr, psnr

    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1.0
    recon = target.clone()
    recon[..., 0, 0] = 0.5  # background error: invisible to the foreground PSNR
    recon[..., 3, 3] = 0.9  # foreground error: seen by both
    expected = 10 * torch.log10(torch.tensor(1.0) / (0.1**2 / 64))
    torch.testing.assert_close(foreground_psnr(target, recon), expected)
    assert float(psnr(target, recon, data_range=1.0)) < float(expected)
