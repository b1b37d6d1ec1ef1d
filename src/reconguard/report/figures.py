"""Figures: the per-slice attack panel, saved atomically.

matplotlib is imported inside the functions and drives an explicit Agg canvas (never ``pyplot``),
so importing this module is cheap, nothing needs a display, and no global figure state is touched.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from reconguard.errors import ConfigError, DataError
from reconguard.files import atomic_path

ImageLike = Union[np.ndarray, torch.Tensor]
PathLike = Union[str, os.PathLike]

_FEATURE_COLOR = "#ff3b30"
_ERROR_CMAP = "inferno"


def save_figure(fig: Any, path: PathLike, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (temporary sibling file, then rename).

    The format follows the suffix of ``path`` (``.png`` when there is none); missing parent
    directories are created. A failed save leaves neither ``path`` nor a temporary file behind.

    Args:
        fig: A :class:`matplotlib.figure.Figure`.
        path: Destination file.
        dpi: Resolution of raster formats.

    Returns:
        The written path.

    Raises:
        ConfigError: If matplotlib cannot write the format of ``path``'s suffix.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        try:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        except ValueError as err:
            raise ConfigError(f"{path}: cannot save a figure in format {fmt!r} ({err})") from None
    return path


def attack_panel(
    target: ImageLike,
    clean_recon: ImageLike,
    attacked_recon: ImageLike,
    noise_recon: ImageLike | None = None,
    *,
    title: str,
    path: PathLike,
    feature_mask: ImageLike | None = None,
    data_range: float | None = None,
) -> Path:
    """Write a two-row PNG panel showing what an attack does to one slice.

    Row 1 (one grey scale, ``[0, data_range]``): target | clean recon | attacked recon |
    (matched-noise recon), each recon titled with its PSNR to the target. Row 2 (one error
    scale, each map with a colorbar), aligned under row 1: ``|attacked - clean|`` (what the
    attack changed) | ``|clean - target|`` | ``|attacked - target|`` | (``|noise - target|``),
    each titled with the PSNR of that pair. ``feature_mask`` (e.g. an inserted FNAF feature) is
    outlined on every image.

    Args:
        target: Reference magnitude image.
        clean_recon: Reconstruction of the unperturbed measurement (magnitude taken if complex).
        attacked_recon: Reconstruction of the adversarial measurement.
        noise_recon: Reconstruction under the matched random noise, if available.
        title: Figure title (model, attack, slice).
        path: Destination file (``.png``); written atomically.
        feature_mask: Boolean image of an inserted feature to outline.
        data_range: PSNR peak and top of the grey scale (default: the target's maximum; pass the
            volume ``max`` for fastMRI-consistent numbers).

    Returns:
        The written path.

    Raises:
        DataError: Images that are not 2-D (after dropping singleton dims), differ in shape, or
            hold NaN/inf values.

    Shapes:
        every image and feature_mask: ``(h, w)`` (leading singleton dims are dropped)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional dependency (extra 'plot'): imported on use
    from matplotlib.figure import Figure  # optional dependency (extra 'plot'): imported on use

    images = {"target": _image(target, "target"), "clean": _image(clean_recon, "clean_recon")}
    images["attacked"] = _image(attacked_recon, "attacked_recon")
    if noise_recon is not None:
        images["noise"] = _image(noise_recon, "noise_recon")
    _same_shape(images)
    mask = None if feature_mask is None else _image(feature_mask, "feature_mask") > 0.5
    if mask is not None:
        _same_shape({"target": images["target"], "feature_mask": mask})
    peak = float(data_range) if data_range is not None else float(images["target"].max())
    peak = peak if peak > 0 else 1.0
    ncols = len(images)
    fig = Figure(figsize=(2.7 * ncols, 5.6))
    FigureCanvasAgg(fig)
    # fixed margins: a layout engine would double the drawing time of these small panels
    axes = fig.subplots(2, ncols, squeeze=False, gridspec_kw={"wspace": 0.3, "hspace": 0.18})
    fig.subplots_adjust(left=0.01, right=1 - 0.5 / fig.get_figwidth(), bottom=0.02, top=0.88)
    for ax, (name, image) in zip(axes[0], images.items()):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=peak)
        label = "target" if name == "target" else f"{name}: {_psnr(images['target'], image, peak)}"
        _decorate(ax, label, mask)
    errors = _error_maps(images, peak)
    top = max(float(err.max()) for _, err in errors) or 1.0
    for ax, (label, err) in zip(axes[1], errors):
        shown = ax.imshow(err, cmap=_ERROR_CMAP, vmin=0.0, vmax=top)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
        _decorate(ax, label, mask)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _error_maps(images: dict[str, np.ndarray], peak: float) -> list[tuple[str, np.ndarray]]:
    """Second-row maps with their titles, in column order."""
    pairs = [("attacked", "clean"), ("clean", "target"), ("attacked", "target")]
    if "noise" in images:
        pairs.append(("noise", "target"))
    return [
        (f"|{a} − {b}|: {_psnr(images[b], images[a], peak)}", np.abs(images[a] - images[b]))
        for a, b in pairs
    ]


def _decorate(ax: Any, label: str, mask: np.ndarray | None) -> None:
    ax.set_title(label, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if mask is not None and mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=_FEATURE_COLOR, linewidths=0.8)


def _psnr(reference: np.ndarray, image: np.ndarray, peak: float) -> str:
    mse = float(np.mean((reference - image) ** 2))
    return "PSNR ∞" if mse == 0 else f"PSNR {10 * math.log10(peak**2 / mse):.2f} dB"


def _image(value: ImageLike, name: str) -> np.ndarray:
    """A real 2-D float64 array (magnitude of complex input, singleton dims dropped)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.abs() if value.is_complex() else value
        array = value.to(torch.float64).numpy()
    else:
        array = np.asarray(value)
        array = np.abs(array) if np.iscomplexobj(array) else array.astype(np.float64)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.size == 0:
        raise DataError(f"attack_panel: {name} must be a 2-D image (h, w), got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise DataError(f"attack_panel: {name} contains NaN or inf values")
    return array


def _same_shape(images: dict[str, np.ndarray]) -> None:
    shapes = {name: image.shape for name, image in images.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"attack_panel: images differ in shape: {shapes}")
