"""Volume-level evaluation of a reconstructor with fastMRI semantics."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from reconguard.data.sample import Sample
from reconguard.metrics import magnitude, volume_nmse, volume_psnr, volume_ssim
from reconguard.models.base import Reconstructor
from reconguard.physics.masks import MaskGenerator


@dataclass(frozen=True)
class VolumeMetrics:
    """fastMRI metrics of one volume (data range = the volume's ``max`` attribute)."""

    fname: str
    slices: int
    psnr: float
    ssim: float
    nmse: float


@torch.no_grad()
def reconstruct_volumes(
    model: Reconstructor,
    batches: Iterable[Sample],
    *,
    mask_fn: MaskGenerator,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Reconstruct every slice and group the results by volume.

    Masks are fixed per volume (seeded by the file name, as fastMRI's validation transform).

    Returns:
        ``fname -> (target (S,h,w), magnitude recon (S,h,w), max_value)``, slices in order.
    """
    parts: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = defaultdict(list)
    max_values: dict[str, float] = {}
    for batch in tqdm(batches, desc="evaluate", disable=not progress, leave=False):
        batch = batch.to(device)
        masked_kspace, mask = batch.undersample(mask_fn)
        recon = magnitude(model(masked_kspace, mask, coil_maps=batch.coil_maps), batch.target)
        for i, name in enumerate(batch.fname):
            parts[name].append((batch.slice_idx[i], batch.target[i, 0].cpu(), recon[i, 0].cpu()))
            max_values[name] = float(batch.max_value[i])
    volumes = {}
    for name, items in parts.items():
        items.sort(key=lambda item: item[0])
        volumes[name] = (
            torch.stack([t for _, t, _ in items]),
            torch.stack([r for _, _, r in items]),
            max_values[name],
        )
    return volumes


def evaluate(model: Reconstructor, batches: Iterable[Sample], *, mask_fn: MaskGenerator,
             device: torch.device | str = "cpu", progress: bool = False) -> list[VolumeMetrics]:
    """PSNR / SSIM / NMSE of ``model`` on every volume, exactly as fastMRI's ``evaluate.py``.

    Args:
        model: Any reconstructor.
        batches: Iterable of :class:`Sample` batches (e.g. a ``DataLoader``).
        mask_fn: Sampling mask generator (seeded per volume).
        device: Where to run the model.
        progress: Show a progress bar.

    Returns:
        One :class:`VolumeMetrics` per volume, sorted by file name.
    """
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        volumes = reconstruct_volumes(model, batches, mask_fn=mask_fn, device=device, progress=progress)
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
    return [
        VolumeMetrics(
            fname=name,
            slices=int(target.shape[0]),
            psnr=volume_psnr(target, recon, maxval=maxval),
            ssim=volume_ssim(target, recon, maxval=maxval),
            nmse=volume_nmse(target, recon),
        )
        for name, (target, recon, maxval) in sorted(volumes.items())
    ]


def summarize(results: Sequence[VolumeMetrics]) -> dict[str, float]:
    """Mean and standard error over volumes of each metric (fastMRI reports volume means)."""
    summary: dict[str, float] = {"volumes": float(len(results)), "slices": float(sum(r.slices for r in results))}
    for key in ("psnr", "ssim", "nmse"):
        values = [getattr(r, key) for r in results]
        mean = sum(values) / len(values) if values else math.nan
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        summary[key] = mean
        summary[f"{key}_sem"] = math.sqrt(var / len(values)) if values else math.nan
    return summary
