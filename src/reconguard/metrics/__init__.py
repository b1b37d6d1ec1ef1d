"""Image-quality metrics: differentiable batch PSNR/SSIM/NMSE and fastMRI-exact volume metrics.

``psnr``/``ssim``/``nmse``/``ssim_loss`` work on tensor batches ``(B, C, H, W)`` and are
differentiable; ``volume_psnr``/``volume_ssim``/``volume_nmse`` reproduce
``fastmri.evaluate`` on one volume ``(S, H, W)`` and return floats. Arguments are always
``(target, recon)``. See :mod:`reconguard.metrics.functional`. :func:`describe_artefact` says
what an error map looks like (noise-like, edge-like, structured; :mod:`reconguard.metrics.artefacts`);
:func:`bootstrap_ci` is the confidence interval over slices of every table; :func:`magnitude` turns a
complex reconstruction into the image the metrics compare.
"""

from reconguard.metrics.artefacts import classify_artefact, describe_artefact
from reconguard.metrics.functional import (
    METRICS,
    SliceMetric,
    foreground_psnr,
    magnitude,
    nmse,
    psnr,
    slice_metrics,
    ssim,
    ssim_loss,
    volume_nmse,
    volume_psnr,
    volume_ssim,
)
from reconguard.metrics.intervals import Interval, bootstrap_ci, interval

__all__ = [
    "METRICS", "Interval", "SliceMetric", "bootstrap_ci", "interval", "classify_artefact", "describe_artefact",
    "foreground_psnr",
    "magnitude", "nmse", "psnr", "slice_metrics", "ssim", "ssim_loss", "volume_nmse", "volume_psnr", "volume_ssim",
]  # fmt: skip
