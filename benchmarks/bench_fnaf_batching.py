"""FNAF random search with K = 11 candidates: all candidates in one batch vs one at a time.

reconguard's :class:`~reconguard.attacks.FNAF` (``search="random"``) evaluates the ``B x K``
candidate features of a batch in one model call; the reference
(:mod:`benchmarks.reference.fnaf`) runs one model call per candidate, as the published code does.
Both get the same candidate features (drawn once by :func:`reconguard.attacks.features.make_features`
with FNAF's generator) on single-coil 128x128 phantom slices, the paper's setting, and the same
models (U-Net and MoDL at the CPU preset, seeded random weights; 64x64 in quick mode).

Quality: the hit rate of each, and the largest difference between the chosen candidates' losses.
Same candidates and the same rule give the same choice, so equal hit rates are required; random
weights keep this a fair check of the search, not of the model (most features are "missed" by a
random network, so the rate itself says little about the model).
"""

from __future__ import annotations

import torch

from benchmarks.inputs import phantom_batch, preset_model
from benchmarks.reference.fnaf import fnaf_sequential
from benchmarks.timing import at_least, measure, row, threads_note
from reconguard.attacks import FNAF
from reconguard.attacks.features import PAPER_REGION, make_features

NAME = "fnaf_batching"
K = 11
MODELS = ("unet", "modl")


def _candidates(data, seed: int = 0):
    """The features FNAF draws with ``seed`` (its generator is used the same way)."""
    shape = tuple(data.kspace.shape[-2:])
    features = make_features(len(data), shape, num=K, size=10, region=PAPER_REGION, intensity_range=(0.0, 1.0),
                             generator=torch.Generator().manual_seed(seed))
    return features.mask(shape).to(data.kspace.device), features.intensity.to(data.kspace.device)


def _model_rows(name: str, model, data, repeats: int, device: str) -> list[dict]:
    attack = FNAF(num_candidates=K, seed=0)
    masks, intensity = _candidates(data)
    runs = {"batched": lambda: attack(model, data.kspace * data.mask, data.mask, kspace=data.kspace),
            "sequential": lambda: fnaf_sequential(model, data.kspace, data.mask, masks, intensity)}
    ours, ref = (run() for run in runs.values())  # results, and the warm-up of both paths
    seconds = measure(runs, device=device, repeats=repeats, warmup=0)
    speedup = seconds["sequential"] / seconds["batched"]
    size = data.kspace.shape[-1]
    note = (f"{len(data)} single-coil {size}x{size} slices, K={K}, CPU preset, random weights; median of {repeats}; "
            f"{threads_note(device)}")
    bound = 5.0 if device.startswith("cuda") else 1.0
    ours_rate, ref_rate = float(ours.hit.float().mean()), float(ref.hit.float().mean())
    difference = float((ours.loss - ref.loss).abs().max() / ref.loss.abs().max().clamp_min(1e-30))
    same = ours_rate == ref_rate and bool((ours.accepted == ref.accepted).all())
    return [
        row(NAME, name, "batched_s", seconds["batched"], "s", note),
        row(NAME, name, "sequential_s", seconds["sequential"], "s", "reference: one candidate (all slices) per call"),
        row(NAME, name, "speedup", speedup, "x", "sequential_s / batched_s (target: >= 5 on GPU, no slower on CPU)",
            **at_least(speedup, bound)),
        row(NAME, name, "hit_rate", ours_rate, "1", "reconguard"),
        row(NAME, name, "reference_hit_rate", ref_rate, "1", "reference (same candidates)",
            target="equal to reconguard", met=same),
        row(NAME, name, "chosen_loss_rel_diff", difference, "1",
            "max over slices |loss_ours - loss_ref| / max |loss_ref| of the chosen candidates"),
    ]


def run(*, device: str = "cpu", quick: bool = False) -> list[dict]:
    """Time FNAF's batched random search against one candidate per model call.

    Args:
        device: ``"cpu"`` or a CUDA device.
        quick: Two 64x64 slices, 3 repeats (instead of four 128x128 slices, 5 repeats).

    Returns:
        Rows for :mod:`benchmarks.run`.
    """
    batch, size, repeats = (2, 64, 3) if quick else (4, 128, 5)
    data = phantom_batch(batch, size=size, coils=1, device=device)
    rows: list[dict] = []
    for name in MODELS:
        rows += _model_rows(name, preset_model(name, device), data, repeats, device)
    return rows
