"""Image-quality metrics: differentiable batch PSNR/SSIM/NMSE and fastMRI-exact volume metrics.

``psnr``/``ssim``/``nmse``/``ssim_loss`` work on tensor batches ``(B, C, H, W)`` and are
differentiable; ``volume_psnr``/``volume_ssim``/``volume_nmse`` reproduce
``fastmri.evaluate`` on one volume ``(S, H, W)`` and return floats. Arguments are always
``(target, recon)``. See :mod:`reconguard.metrics.functional`. :func:`describe_artefact` says
what an error map looks like (noise-like, edge-like, structured; :mod:`reconguard.metrics.artefacts`).
"""

from reconguard.metrics.artefacts import classify_artefact, describe_artefact
from reconguard.metrics.functional import (
    foreground_psnr,
    nmse,
    psnr,
    slice_metrics,
    ssim,
    ssim_loss,
    volume_nmse,
    volume_psnr,
    volume_ssim,
)

__all__ = [
    "classify_artefact", "describe_artefact", "foreground_psnr", "nmse", "psnr", "slice_metrics", "ssim", "ssim_loss",
    "volume_nmse", "volume_psnr", "volume_ssim",
]  # fmt: skip
