"""PSNR, SSIM and NMSE: differentiable batch metrics and fastMRI's volume-level evaluation.

Two families share one torch implementation:

- **Batch metrics** :func:`psnr`, :func:`ssim`, :func:`nmse` (and :func:`ssim_loss`) take real
  tensors ``(B, C, H, W)``, return one value per sample (``reduction="none"``) or their mean,
  compute in the input dtype and are differentiable: use them in losses, attacks and training.
- **Volume metrics** :func:`volume_psnr`, :func:`volume_ssim`, :func:`volume_nmse` reproduce
  ``fastmri.evaluate.psnr/ssim/nmse`` on one volume ``(S, H, W)`` (numpy array or tensor):
  they compute in float64, take ``maxval`` from the target volume unless given, and return a
  python float. Use them to report numbers comparable with the fastMRI leaderboard.

Argument order everywhere is ``(target, recon)``, as in fastMRI's ``evaluate.py`` (``gt, pred``)
and scikit-image (``image_true, image_test``). SSIM is symmetric, PSNR too once the data range
is given; NMSE and the default ``maxval`` are not.

SSIM is scikit-image's default ``structural_similarity`` (which fastMRI calls): a 7x7 uniform
window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariances (factor 49/48) and the mean of the SSIM
map over the windows that fit inside the image.

References:
    Wang et al., "Image quality assessment: from error visibility to structural similarity",
    IEEE TIP 13(4), 2004. Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for
    Accelerated MRI", arXiv:1811.08839 (``fastmri/evaluate.py``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from reconguard.errors import ConfigError, DataError
from reconguard.physics.operators import center_crop

ArrayLike = Union[np.ndarray, torch.Tensor]
DataRange = Union[float, torch.Tensor]

_WIN = 7
_K1, _K2 = 0.01, 0.03
_REDUCTIONS = ("mean", "none")


def psnr(
    target: torch.Tensor, recon: torch.Tensor, *, data_range: DataRange, reduction: str = "mean"
) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` per sample, in dB.

    Args:
        target: Reference images.
        recon: Images to score.
        data_range: Peak value: a number, or a tensor with one value per sample.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per sample).

    Returns:
        PSNR; ``inf`` for a sample whose ``recon`` equals its ``target``.

    Shapes:
        target, recon: ``(B, C, H, W)`` real; data_range: scalar or ``(B,)``;
        output: ``()`` or ``(B,)``
    """
    _check_batch(target, recon, "psnr")
    mse = (target - recon).pow(2).flatten(1).mean(dim=1)
    peak = _data_range(data_range, target)
    return _reduce(10 * torch.log10(peak**2 / mse), reduction)


def foreground_psnr(
    target: torch.Tensor, recon: torch.Tensor, *, threshold: float = 0.1, reduction: str = "mean"
) -> torch.Tensor:
    """PSNR with the background zeroed in both images, per sample (Saberi et al.'s evaluation).

    Pixels where the target is below ``threshold`` times its own maximum are set to 0 in the
    target and the reconstruction; the MSE still averages over every pixel and the peak is the
    target's maximum, so a reconstruction differs from :func:`psnr` only by its background error.
    The reference code thresholds the label at 0.1 after dividing by ``max |A^H y|``, which is
    within a few percent of the target maximum on the built-in data.

    Shapes:
        target, recon: ``(B, C, H, W)`` real -> ``()`` or ``(B,)``

    References:
        Saberi, Zhang, Akcakaya, arXiv:2501.01908 (code: ``Saving.Threshold``).
    """
    _check_batch(target, recon, "foreground_psnr")
    peak = target.flatten(1).amax(dim=1)
    keep = target >= threshold * peak.reshape(-1, *([1] * (target.ndim - 1)))
    return psnr(target * keep, recon * keep, data_range=peak, reduction=reduction)


def nmse(target: torch.Tensor, recon: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Normalised mean squared error ``||target - recon||^2 / ||target||^2`` per sample.

    Args:
        target: Reference images (not all zero).
        recon: Images to score.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per sample).

    Returns:
        NMSE.

    Shapes:
        target, recon: ``(B, C, H, W)`` real; output: ``()`` or ``(B,)``
    """
    _check_batch(target, recon, "nmse")
    energy = target.pow(2).flatten(1).sum(dim=1)
    if bool((energy == 0).any()):
        raise DataError("nmse: a target image is all zeros, so its NMSE is undefined")
    return _reduce((target - recon).pow(2).flatten(1).sum(dim=1) / energy, reduction)


def ssim(
    target: torch.Tensor, recon: torch.Tensor, *, data_range: DataRange, reduction: str = "mean"
) -> torch.Tensor:
    """Structural similarity per sample (scikit-image / fastMRI defaults), differentiable.

    The SSIM map is computed per channel with a 7x7 uniform window over the valid region (no
    padding) and averaged over channels and pixels.

    Args:
        target: Reference images, at least 7x7.
        recon: Images to score.
        data_range: Dynamic range (``maxval``): a number, or a tensor with one value per sample.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per sample).

    Returns:
        SSIM, at most 1.

    Shapes:
        target, recon: ``(B, C, H, W)`` real with ``H, W >= 7``; data_range: scalar or ``(B,)``;
        output: ``()`` or ``(B,)``

    References:
        Wang et al., "Image quality assessment: from error visibility to structural
        similarity", IEEE TIP 2004.
    """
    _check_batch(target, recon, "ssim")
    if min(target.shape[-2:]) < _WIN:
        size = tuple(target.shape[-2:])
        raise DataError(f"ssim: images must be at least {_WIN}x{_WIN}, got {size}")
    batch, channels, height, width = target.shape
    peak = _data_range(data_range, target).reshape(batch, 1, 1, 1)
    x = target.reshape(batch * channels, 1, height, width)
    y = recon.reshape(batch * channels, 1, height, width)
    moments = F.avg_pool2d(torch.cat([x, y, x * x, y * y, x * y], dim=1), _WIN, stride=1)
    ux, uy, uxx, uyy, uxy = moments.reshape(batch, channels, 5, *moments.shape[-2:]).unbind(dim=2)
    cov_norm = _WIN**2 / (_WIN**2 - 1)  # sample covariance, as scikit-image
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (_K1 * peak) ** 2, (_K2 * peak) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return _reduce(ssim_map.flatten(1).mean(dim=1), reduction)


class SliceMetric(NamedTuple):
    """One per-slice image metric of the reports: ``compute(target, recon, data_range) -> (B,)``
    and how tables print it."""

    compute: Callable[[torch.Tensor, torch.Tensor, DataRange], torch.Tensor]
    format: str


#: The per-slice metrics every record, table and report lists, in order. A new metric is a row here
#: (the audit records it and the report's tables and summaries show it).
METRICS: dict[str, SliceMetric] = {
    "psnr": SliceMetric(lambda t, r, d: psnr(t, r, data_range=d, reduction="none"), "{:.2f}"),
    "ssim": SliceMetric(lambda t, r, d: ssim(t, r, data_range=d, reduction="none"), "{:.4f}"),
    "nmse": SliceMetric(lambda t, r, d: nmse(t, r, reduction="none"), "{:.4f}"),
}


def slice_metrics(target: torch.Tensor, recon: torch.Tensor, *, data_range: DataRange) -> dict[str, torch.Tensor]:
    """Every metric of :data:`METRICS` for every slice.

    Args:
        target: Reference magnitude images.
        recon: Magnitude images to score (same shape).
        data_range: A number, or one value per slice (fastMRI ``max``).

    Returns:
        ``{"psnr": (B,), "ssim": (B,), "nmse": (B,)}`` (the keys of :data:`METRICS`).

    Shapes:
        target, recon: ``(B, C, H, W)`` real
    """
    return {name: metric.compute(target, recon, data_range) for name, metric in METRICS.items()}


def ssim_loss(target: torch.Tensor, recon: torch.Tensor, *, data_range: DataRange) -> torch.Tensor:
    """``1 - ssim`` averaged over the batch: a loss to minimise (or an attack objective).

    Args:
        target: Reference images.
        recon: Reconstructions (the argument gradients usually flow into).
        data_range: Dynamic range: a number, or a tensor with one value per sample.

    Returns:
        Scalar loss in ``[0, 2]``.

    Shapes:
        target, recon: ``(B, C, H, W)`` real with ``H, W >= 7``; output: ``()``
    """
    return 1 - ssim(target, recon, data_range=data_range, reduction="mean")


def volume_psnr(target: ArrayLike, recon: ArrayLike, *, maxval: float | None = None) -> float:
    """PSNR of one volume exactly as ``fastmri.evaluate.psnr`` (MSE over the whole volume).

    Args:
        target: Ground-truth volume.
        recon: Reconstructed volume.
        maxval: Peak value; defaults to ``target.max()``.

    Returns:
        PSNR in dB (``inf`` if the volumes are equal).

    Shapes:
        target, recon: ``(S, H, W)`` real
    """
    gt, pred = _as_volumes(target, recon, "volume_psnr")
    peak = _maxval(gt, maxval, "volume_psnr")
    return float(psnr(gt[None], pred[None], data_range=peak))


def volume_ssim(target: ArrayLike, recon: ArrayLike, *, maxval: float | None = None) -> float:
    """SSIM of one volume exactly as ``fastmri.evaluate.ssim`` (mean of per-slice SSIM).

    Args:
        target: Ground-truth volume, slices at least 7x7.
        recon: Reconstructed volume.
        maxval: Dynamic range for every slice; defaults to ``target.max()`` over the volume.

    Returns:
        Mean SSIM over slices.

    Shapes:
        target, recon: ``(S, H, W)`` real with ``H, W >= 7``
    """
    gt, pred = _as_volumes(target, recon, "volume_ssim")
    peak = _maxval(gt, maxval, "volume_ssim")
    return float(ssim(gt[:, None], pred[:, None], data_range=peak))


def volume_nmse(target: ArrayLike, recon: ArrayLike) -> float:
    """NMSE of one volume exactly as ``fastmri.evaluate.nmse``.

    Args:
        target: Ground-truth volume (not all zero).
        recon: Reconstructed volume.

    Returns:
        ``||target - recon||^2 / ||target||^2`` over the whole volume.

    Shapes:
        target, recon: ``(S, H, W)`` real
    """
    gt, pred = _as_volumes(target, recon, "volume_nmse")
    return float(nmse(gt[None], pred[None]))


def _check_batch(target: torch.Tensor, recon: torch.Tensor, name: str) -> None:
    for label, x in (("target", target), ("recon", recon)):
        if not isinstance(x, torch.Tensor):
            raise DataError(f"{name}: {label} must be a torch tensor, got {type(x).__name__}")
        if x.is_complex():
            raise DataError(f"{name}: {label} is complex; pass magnitude images (e.g. x.abs())")
    if target.shape != recon.shape:
        raise DataError(
            f"{name}: target shape {tuple(target.shape)} != recon shape {tuple(recon.shape)}"
        )
    if target.ndim != 4:
        raise DataError(f"{name}: expected images of shape (B, C, H, W), got {tuple(target.shape)}")
    if target.numel() == 0:
        raise DataError(f"{name}: images are empty, shape {tuple(target.shape)}")
    for label, x in (("target", target), ("recon", recon)):
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{name}: {label} contains NaN or inf values")


def _data_range(data_range: DataRange, target: torch.Tensor) -> torch.Tensor:
    """Data range as a ``(B,)`` tensor in the dtype and device of ``target``."""
    peak = torch.as_tensor(data_range, dtype=target.dtype, device=target.device).reshape(-1)
    batch = target.shape[0]
    if peak.numel() not in (1, batch):
        raise ConfigError(
            f"data_range must be a number or hold one value per sample ({batch}), "
            f"got {peak.numel()} values"
        )
    if not bool(torch.isfinite(peak).all()) or bool((peak <= 0).any()):
        raise ConfigError("data_range must be finite and > 0")
    return peak.expand(batch)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; choose one of {list(_REDUCTIONS)}")
    return values.mean() if reduction == "mean" else values


def _as_volumes(
    target: ArrayLike, recon: ArrayLike, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both volumes as float64 tensors on one device, checked: real, finite, ``(S, H, W)``."""
    gt, pred = _to_float64(target, "target", name), _to_float64(recon, "recon", name)
    if gt.shape != pred.shape:
        raise DataError(
            f"{name}: target shape {tuple(gt.shape)} != recon shape {tuple(pred.shape)}"
        )
    if gt.ndim != 3:
        raise DataError(f"{name}: expected a volume of shape (S, H, W), got {tuple(gt.shape)}")
    if gt.numel() == 0:
        raise DataError(f"{name}: volumes are empty, shape {tuple(gt.shape)}")
    for label, x in (("target", gt), ("recon", pred)):
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{name}: {label} contains NaN or inf values")
    return gt, pred.to(gt.device)


def _to_float64(x: ArrayLike, label: str, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise DataError(f"{name}: {label} is complex; pass magnitude images (e.g. x.abs())")
        return x.detach().to(torch.float64)
    array = np.asarray(x)
    if np.iscomplexobj(array) or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"{name}: {label} must be a real numeric array, got dtype {array.dtype}")
    return torch.from_numpy(array.astype(np.float64))


def _maxval(target: torch.Tensor, maxval: float | None, name: str) -> float:
    if maxval is not None:
        return maxval
    peak = float(target.max())
    if not peak > 0:
        raise DataError(f"{name}: target maximum is {peak}, not > 0; pass maxval explicitly")
    return peak


def magnitude(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Magnitude of a reconstruction, centre-cropped to the target's size.

    Shapes:
        recon: ``(B, 1, H, W)`` complex; target: ``(B, 1, h, w)`` -> ``(B, 1, h, w)`` real
    """
    return center_crop(recon.abs(), target.shape[-2:])
