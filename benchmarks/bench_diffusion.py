"""Diffusion reconstruction: seconds per slice and PSNR versus sampler steps and averaged samples.

``reconguard.models.diffusion`` is imported lazily; if it cannot be imported the benchmark returns
one ``not available`` row. The trained prior comes from the environment variable
``RECONGUARD_BENCH_DIFFUSION`` (a saved model path, as written by ``reconguard train``;
``python -m benchmarks.run --diffusion-checkpoint PATH`` sets it). Slices come from
``RECONGUARD_BENCH_DIFFUSION_DATA`` (a directory of fastMRI-format files, e.g. a built-in data
set's ``test/`` split; it should match what the prior was trained on) or else single-coil 128x128
phantom slices (64x64 in quick mode), under-sampled 4x.

Seconds per slice do not depend on what the weights learned, so without a checkpoint the default
model (seeded random weights) is timed and the PSNR rows say ``not available``. With one, each
setting also reports the mean PSNR (same seed, hence same start noise, at every step count).
Settings are ``steps`` alone (one posterior sample) and ``steps x samples`` (that many samples
averaged, the model's ``samples``), which costs ``samples`` times as much.
"""

from __future__ import annotations

import math
import os

import torch

from benchmarks.inputs import Batch, phantom_batch, slice_psnr
from benchmarks.timing import measure, row, threads_note

NAME = "diffusion"
CHECKPOINT = "RECONGUARD_BENCH_DIFFUSION"
DATA = "RECONGUARD_BENCH_DIFFUSION_DATA"


def _slices(count: int, size: int, device: str) -> Batch:
    """``count`` slices of the data directory in ``DATA``, or phantom slices."""
    directory = os.environ.get(DATA)
    if not directory:
        return phantom_batch(count, size=size, device=device)
    from reconguard.data import Sample, SliceDataset
    from reconguard.physics import RandomMask

    dataset = SliceDataset(directory)
    sample = Sample.collate([dataset[i] for i in range(min(count, len(dataset)))])
    masked, mask = sample.undersample(RandomMask(acceleration=4.0, center_fraction=0.08))
    batch = Batch(sample.kspace, masked, mask, sample.target, sample.max_value, sample.coil_maps)
    return batch.to(device)


def _with_steps(model, steps: int, samples: int = 1):
    """The same prior with other sampler settings (steps, averaged samples: no retraining)."""
    other = type(model)(**{**model.config, "steps": steps, "samples": samples})
    other.load_state_dict(model.state_dict())
    return other.to(next(model.parameters()).device).eval()


def _model(device: str):
    """The trained prior from ``CHECKPOINT``, or the default model with seeded random weights."""
    path = os.environ.get(CHECKPOINT)
    if path:
        from reconguard.models import load

        return load(path).to(device).eval(), True
    from reconguard.models.diffusion import DiffusionReconstructor

    torch.manual_seed(0)
    return DiffusionReconstructor().to(device).eval(), False


def run(*, device: str = "cpu", quick: bool = False) -> list[dict]:
    """Time (and, with a trained prior, score) diffusion reconstruction at several step counts.

    Args:
        device: ``"cpu"`` or a CUDA device.
        quick: One 64x64 slice, 2 and 5 steps, 1 repeat (instead of two 128x128 slices, 5-100
            steps, 10 and 20 steps with 4 and 8 averaged samples, 3 repeats).

    Returns:
        Rows for :mod:`benchmarks.run`.
    """
    try:
        import reconguard.models.diffusion  # noqa: F401
    except ImportError as exc:
        return [row(NAME, "-", "not available", math.nan, "", f"reconguard.models.diffusion: {exc}")]
    full = ((5, 1), (10, 1), (20, 1), (50, 1), (100, 1), (10, 4), (20, 8))
    count, size, settings, repeats = (1, 64, ((2, 1), (5, 1)), 1) if quick else (2, 128, full, 3)
    base, trained = _model(device)
    data = _slices(count, size, device)
    source = os.environ.get(DATA) or f"phantom {size}x{size} single-coil"
    note = f"{len(data)} slice(s), {source}, 4x; median of {repeats}; {threads_note(device)}"
    rows: list[dict] = []
    for steps, samples in settings:
        model = _with_steps(base, steps, samples)
        name = f"steps={steps}" if samples == 1 else f"steps={steps} samples={samples}"

        def reconstruct(model=model) -> torch.Tensor:
            model.manual_seed(0)
            with torch.no_grad():
                return model(data.masked_kspace, data.mask, coil_maps=data.coil_maps)

        seconds = measure({"recon": reconstruct}, device=device, repeats=repeats)["recon"]
        rows.append(row(NAME, name, "s_per_slice", seconds / len(data), "s",
                        ("trained prior; " if trained else "seeded random weights (speed only); ") + note))
        if trained:
            rows.append(row(NAME, name, "psnr", float(slice_psnr(reconstruct(), data).mean()), "dB", note))
    if not trained:
        rows.append(row(NAME, "psnr vs steps", "not available", math.nan, "",
                        f"no trained prior: set {CHECKPOINT} or pass --diffusion-checkpoint"))
    return rows
