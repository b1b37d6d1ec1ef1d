"""Coil sensitivities: simulation, estimation from auto-calibration data, root-sum-of-squares."""

from __future__ import annotations

import math

import numpy as np
import torch

from reconguard.errors import ConfigError
from reconguard.physics.operators import MRIOperator, validate_kspace


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination.

    Args:
        coil_images: Complex or real tensor with a coil dimension.
        dim: The coil dimension.

    Returns:
        Real tensor with ``dim`` kept as size 1.

    Shapes:
        coil_images: ``(B, C, H, W)`` -> ``(B, 1, H, W)``
    """
    power = coil_images.abs().pow(2).sum(dim=dim, keepdim=True)
    # sqrt has an infinite derivative at 0; clamping at the smallest normal number keeps the
    # gradient finite where every coil is exactly zero (zero-padded data) and changes no value
    # by more than sqrt(tiny) ~ 1e-19.
    return power.clamp_min(torch.finfo(power.dtype).tiny).sqrt()


def simulate_coil_maps(
    num_coils: int,
    shape: tuple[int, int],
    *,
    radius: float = 1.5,
    rotation: float = 0.0,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Birdcage-like coil sensitivities, normalised to unit root-sum-of-squares.

    Coils sit at equal angles on a circle of ``radius`` (in units of the half field of view)
    around the object; each sensitivity falls off as ``1 / distance`` and carries the phase of
    the circularly polarised field it produces (the angle around the coil plus its position
    angle), which is the usual birdcage model.

    Args:
        num_coils: Number of receive coils (>= 1).
        shape: Image size ``(H, W)``.
        radius: Distance of the coils from the centre, in half fields of view (> 1 keeps them
            outside the object).
        rotation: Angle (radians) by which the whole coil array is rotated.
        dtype: Complex output dtype.

    Returns:
        Coil maps with ``sum_c |S_c|^2 == 1`` at every pixel.

    Shapes:
        output: ``(num_coils, H, W)``

    References:
        Same model as sigpy's ``mri.birdcage_maps`` (Ong & Lustig, sigpy).
    """
    if num_coils < 1:
        raise ValueError(f"num_coils must be >= 1, got {num_coils}")
    height, width = shape
    y = (torch.arange(height, dtype=torch.float64) - height / 2) / (height / 2)
    x = (torch.arange(width, dtype=torch.float64) - width / 2) / (width / 2)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    maps = []
    for c in range(num_coils):
        angle = rotation + 2 * math.pi * c / num_coils
        dx = xx - radius * math.cos(angle)
        dy = yy - radius * math.sin(angle)
        dist = torch.sqrt(dx**2 + dy**2)
        phase = torch.atan2(dx, -dy) - angle
        maps.append(torch.polar(1.0 / dist, phase))
    coil_maps = torch.stack(maps)
    coil_maps = coil_maps / rss(coil_maps, dim=0)
    return coil_maps.to(dtype)


@torch.no_grad()
def estimate_coil_maps(
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    *,
    calib_size: int | None = None,
    kernel_size: int = 6,
    threshold: float = 0.02,
    crop: float = 0.95,
) -> torch.Tensor:
    """Estimate coil sensitivities from the fully sampled k-space centre with ESPIRiT.

    Steps, per batch element: take the calibration block (the fully sampled rectangle grown
    greedily from the k-space centre, found from ``mask``; or the central ``calib_size`` square);
    stack all its ``kernel_size x kernel_size x C`` patches into the calibration matrix and keep
    the right singular vectors whose singular value exceeds ``threshold`` times the largest (the
    signal subspace). Averaging the projection onto that subspace over all patch positions is a
    convolution in k-space, i.e. a ``C x C`` matrix ``W(x)`` per pixel in image space with
    ``0 <= W(x) <= I``; the coil sensitivities are its eigenvectors with eigenvalue 1. We take,
    per pixel, the eigenvector of the largest eigenvalue (the one closest to 1), rotate its phase
    so that coil 0 is real and non-negative (as sigpy and BART do), and zero the maps where that
    eigenvalue is below ``crop`` (outside the object).

    Maps are unit-norm across coils (``sum_c |S_c|^2 == 1``) wherever they are not cropped, and
    agree with the true sensitivities up to one phase per pixel (which the phase normalisation
    makes smooth). With a single coil there is nothing to calibrate: its phase cannot be told
    apart from the image's, so the maps are all ones and a SENSE combination returns the coil
    image unchanged (the single-coil model). The maps are computed without autograd: treat them
    as constants of the forward model, as fastMRI-style pipelines do.

    Args:
        masked_kspace: Under-sampled multi-coil k-space (zeros where not acquired).
        mask: Boolean sampling mask broadcastable to ``masked_kspace``.
        calib_size: Side of a central square to use for calibration instead of the detected
            block (must be fully sampled); handy to cap the cost on large images, where the
            detected block spans the whole readout. The block should hold clearly more patches
            than ``C * kernel_size**2``, or the null space cannot be told from noise (a 10x10
            block with ``kernel_size=6`` fails; BART and sigpy default to 24x24).
        kernel_size: Side of the square k-space kernel (ESPIRiT's ``k``; 6 as in the paper).
        threshold: Relative singular-value cut-off that separates signal and null space.
        crop: Eigenvalue below which a pixel counts as background and its maps are zeroed;
            0 keeps every pixel.

    Returns:
        Complex64 coil sensitivities.

    Raises:
        DataError: If the k-space or mask is malformed.
        ConfigError: If a parameter is out of range or the calibration block is smaller than
            the kernel.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex
        mask: ``(B, 1, 1, W)``, ``(B, 1, H, W)`` or anything broadcastable to the k-space
        output: ``(B, C, H, W)`` complex64

    References:
        Uecker et al., "ESPIRiT -- an eigenvalue approach to autocalibrating parallel MRI:
        where SENSE meets GRAPPA", Magn. Reson. Med. 71:990-1001 (2014), doi:10.1002/mrm.24751.
    """
    validate_kspace(masked_kspace, mask, name="estimate_coil_maps")
    _check_espirit_args(calib_size, kernel_size, threshold, crop)
    batch, coils, height, width = masked_kspace.shape
    if coils == 1:
        return torch.ones(masked_kspace.shape, dtype=torch.complex64, device=masked_kspace.device)
    sampled = mask.to(torch.bool).broadcast_to(batch, mask.shape[1], height, width).all(dim=1)
    kspace = masked_kspace.to(torch.complex128)
    projectors = []
    for b in range(batch):
        rows, cols = _calibration_block(sampled[b].cpu().numpy(), calib_size, kernel_size, b)
        projectors.append(_signal_projector(kspace[b, :, rows, cols], kernel_size, threshold))
    operator = _image_space_operator(torch.stack(projectors), coils, kernel_size, (height, width))
    eigvals, eigvecs = torch.linalg.eigh(operator)
    maps = eigvecs[..., -1]
    ref = maps[..., :1]
    unit = ref.conj() / ref.abs().clamp_min(1e-30)
    phase = torch.where(ref.abs() > 0, unit, torch.ones_like(ref))
    maps = maps * phase * (eigvals[..., -1:] >= crop)
    return maps.permute(0, 3, 1, 2).to(torch.complex64).contiguous()


def _check_espirit_args(
    calib_size: int | None, kernel_size: int, threshold: float, crop: float
) -> None:
    if not (isinstance(kernel_size, int) and kernel_size >= 1):
        raise ConfigError(f"kernel_size must be a positive integer, got {kernel_size!r}")
    if calib_size is not None and not (isinstance(calib_size, int) and calib_size >= kernel_size):
        raise ConfigError(
            f"calib_size must be an integer >= kernel_size={kernel_size}, got {calib_size!r}"
        )
    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    if not 0 <= crop <= 1:
        raise ConfigError(f"crop must be in [0, 1], got {crop}")


def _calibration_block(
    sampled: np.ndarray, calib_size: int | None, kernel_size: int, index: int
) -> tuple[slice, slice]:
    """Rows and columns of the fully sampled calibration block of one ``(H, W)`` sampling map."""
    height, width = sampled.shape
    if calib_size is not None:
        if calib_size > min(height, width):
            raise ConfigError(f"calib_size={calib_size} exceeds the image size {(height, width)}")
        top, left = height // 2 - calib_size // 2, width // 2 - calib_size // 2
        rows, cols = slice(top, top + calib_size), slice(left, left + calib_size)
        if not sampled[rows, cols].all():
            raise ConfigError(
                f"the central {calib_size}x{calib_size} block of batch element {index} is not "
                "fully sampled; lower calib_size or leave it None to detect the block from the mask"
            )
        return rows, cols
    top, bottom, left, right = _grow_sampled_block(sampled)
    if min(bottom - top, right - left) < kernel_size:
        raise ConfigError(
            f"the fully sampled k-space centre of batch element {index} is {bottom - top}x"
            f"{right - left}, smaller than kernel_size={kernel_size}; acquire more central lines "
            "or lower kernel_size"
        )
    return slice(top, bottom), slice(left, right)


def _grow_sampled_block(sampled: np.ndarray) -> tuple[int, int, int, int]:
    """Grow a fully sampled rectangle from the centre; returns ``top, bottom, left, right``."""
    height, width = sampled.shape
    top, left = height // 2, width // 2
    bottom, right = top + int(sampled[top, left]), left + int(sampled[top, left])
    grew = bottom > top
    while grew:
        grew = False
        if top > 0 and sampled[top - 1, left:right].all():
            top, grew = top - 1, True
        if bottom < height and sampled[bottom, left:right].all():
            bottom, grew = bottom + 1, True
        if left > 0 and sampled[top:bottom, left - 1].all():
            left, grew = left - 1, True
        if right < width and sampled[top:bottom, right].all():
            right, grew = right + 1, True
    return top, bottom, left, right


def _signal_projector(calib: torch.Tensor, kernel_size: int, threshold: float) -> torch.Tensor:
    """Projector onto the row space (patch space) of the calibration matrix, signal part only.

    Shapes:
        calib: ``(C, h, w)`` -> ``(C k^2, C k^2)``
    """
    coils = calib.shape[0]
    patches = calib.unfold(1, kernel_size, 1).unfold(2, kernel_size, 1)  # C, nh, nw, k, k
    matrix = patches.permute(1, 2, 0, 3, 4).reshape(-1, coils * kernel_size**2)
    # eigh of the Gram matrix gives the right singular vectors (squared singular values) and is
    # cheaper than an SVD when there are many more patches than kernel entries.
    eigvals, eigvecs = torch.linalg.eigh(matrix.mH @ matrix)
    keep = eigvecs[:, eigvals > threshold**2 * eigvals[-1].clamp_min(1e-300)]
    # Patches are rows of the matrix, spanned by the conjugated right singular vectors.
    return (keep @ keep.mH).conj()


def _image_space_operator(
    projectors: torch.Tensor, coils: int, kernel_size: int, shape: tuple[int, int]
) -> torch.Tensor:
    """Per-pixel ESPIRiT operator ``W(x) = k^-2 sum_{n,m} P[(c,n),(c',m)] exp(2 pi i (n-m) x)``.

    Shapes:
        projectors: ``(B, C k^2, C k^2)`` -> ``(B, H, W, C, C)`` complex64
    """
    batch = projectors.shape[0]
    height, width = shape
    k = kernel_size
    proj = projectors.reshape(batch, coils, k, k, coils, k, k).permute(0, 1, 4, 2, 3, 5, 6)
    proj = proj.reshape(batch * coils * coils, k**4).to(torch.complex64)
    n = torch.arange(k)
    d_row = (n[:, None, None, None] - n[None, None, :, None]) % height  # n1 - m1
    d_col = (n[None, :, None, None] - n[None, None, None, :]) % width  # n2 - m2
    index = (d_row * width + d_col).reshape(-1).to(proj.device)
    grid = torch.zeros(batch * coils * coils, height * width, dtype=proj.dtype, device=proj.device)
    grid.index_add_(1, index, proj)
    grid = grid.reshape(batch, coils, coils, height, width)
    # Image pixels use centred coordinates (as ifft2c), hence the fftshift.
    operator = torch.fft.fftshift(torch.fft.ifft2(grid, norm="forward"), dim=(-2, -1)) / k**2
    return operator.permute(0, 3, 4, 1, 2)


def resolve_operator(
    masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
) -> MRIOperator:
    """The forward operator of the acquisition, estimating coil maps when they are missing.

    Single-coil data without maps use the plain Fourier operator; multi-coil data without maps get
    ESPIRiT maps from the auto-calibration lines
    (:func:`reconguard.physics.coils.estimate_coil_maps`). That estimate runs without autograd,
    so gradients w.r.t. k-space treat the maps as fixed calibration (the perturbation's effect on
    the maps is not seen by a white-box attack).

    Args:
        masked_kspace: Under-sampled k-space.
        mask: Boolean sampling mask.
        coil_maps: Known coil sensitivities or ``None``.

    Returns:
        ``A = M F S`` mapping a ``(B, 1, H, W)`` image to ``(B, C, H, W)`` k-space.

    Shapes:
        masked_kspace: ``(B, C, H, W)``; coil_maps: ``(B, C, H, W)`` or ``None``
    """
    if coil_maps is None and masked_kspace.shape[1] > 1:
        coil_maps = estimate_coil_maps(masked_kspace, mask)
    return MRIOperator(mask, coil_maps)
