"""The recipe of reconguard's reference models: what ships in ``reconguard/models/weights``.

Every shipped model is trained by :func:`train_reference` on the built-in data set (its default
build: MNI152, 128x128, single-coil, noise 0.01, seed 0) with a budget in **epochs**, never in
minutes, so the same recipe gives the same weights on a fast idle machine and on a slow busy one
(up to floating-point summation order across thread counts). :func:`export_reference` then stores
the best-validation weights in float16 beside a manifest with their validation and test metrics,
the test metrics of zero-filling and CS-TV, the training time and the SHA-256 of every file.

Regenerate everything (hours on a 2-core CPU; runs resume where they stopped)::

    python -m reconguard.training.reference --data data/builtin --runs runs/reference

``reconguard demo --retrain`` runs the same recipes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from torch.utils.data import DataLoader

from reconguard.data import SliceDataset
from reconguard.data.sample import Sample
from reconguard.files import atomic_write
from reconguard.models import registry
from reconguard.models.pretrained import MANIFEST, WEIGHTS, manifest, sha256
from reconguard.physics.masks import build_mask
from reconguard.training.config import TrainConfig
from reconguard.training.evaluation import evaluate, summarize
from reconguard.training.trainer import train

HALF_TOLERANCE_DB = 0.05  # largest test-PSNR change float16 storage may cause
BASELINES = ("zero_filled", "cs_tv")  # every shipped model must beat these on the test split

# The built-in data build the recipes train on (``reconguard data build`` defaults).
DATA_BUILD: dict[str, Any] = {"source": "mni152", "size": 128, "coils": 1, "noise": 0.01, "seed": 0}


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How one reference model is trained: the :class:`~reconguard.training.TrainConfig` fields
    other than ``data`` and ``out``; ``init`` names another recipe whose best weights start it."""

    model: str
    model_config: dict[str, Any] = field(default_factory=dict)
    epochs: int
    batch_size: int = 4
    lr: float = 1e-3
    final_lr_fraction: float = 0.05
    loss: str = "l1"
    target: str = "magnitude"
    robust: str = "none"
    robust_config: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    seed: int = 0
    acceleration: float = 4.0


_UNET = {"in_chans": 1, "chans": 16, "num_pool_layers": 4}  # the reference U-Net and its FNAF-robust fine-tune

RECIPES: dict[str, Recipe] = {
    # fastMRI's U-Net baseline at half width: magnitude in, magnitude out, L1 on magnitudes.
    # (A complex-output U-Net -- real/imaginary channels in and out, complex L1 -- trained to
    # 27.5 dB validation PSNR in 39 epochs against 29.6 dB for CS-TV: the random smooth phase of
    # the built-in data makes the two channels vary from slice to slice, and a 16-channel U-Net
    # learns that far more slowly than the phase-free magnitude.)
    "unet": Recipe(model="unet", model_config=_UNET, epochs=150),
    # The FNAF-robust U-Net: the reference U-Net fine-tuned with the paper's objective and weighting
    # (alpha 1, beta 100 on the feature mask averaged over the image, clean and featured slices
    # mixed equally), as Cheng et al. fine-tuned a trained model.
    "unet-fnaf": Recipe(
        model="unet", model_config=_UNET, epochs=10, lr=2e-4, robust="fnaf", robust_config={"beta": 100.0},
        init="unet",
    ),
    # MoDL as published (Aggarwal et al.): 10 unrolls of one shared 5-layer CNN and CG data
    # consistency, at half the published width (32 channels) for the CPU. The data-consistency
    # weight is fixed at the value of Saberi et al.'s trained MoDL (0.1813 in the CycMit-MRI
    # checkpoint; learned there from 0.05): learned from 0.05 here it drifted *down* (0.049 after
    # 2 epochs), and an input component outside the acquired samples leaves each DC step
    # multiplied by 1 / lam -- 20x instead of 5.5x.
    "modl": Recipe(
        model="modl",
        model_config={"num_unrolls": 10, "chans": 32, "num_layers": 5, "cg_iterations": 10, "lam": 0.18,
                      "learn_lam": False},
        epochs=30, target="complex",
    ),
    # E2E-VarNet with 8 cascades of small U-Nets (published: 12 cascades, 18 channels, 4 pools).
    "varnet": Recipe(
        model="varnet",
        model_config={"num_cascades": 8, "chans": 12, "pools": 3, "sens_chans": 4, "sens_pools": 3},
        epochs=25,
    ),
    # The unsupervised diffusion prior (trained on fully sampled images only; the masks play no
    # part): the CPU-sized time-conditioned U-Net (2.3 M weights) with v prediction on a cosine
    # schedule (bounded clean-image estimates at every noise level, which the sampler projects
    # onto the measurements), flips and conjugation as augmentation. Validation reconstructs the
    # 4x val split with one 5-step posterior sample (cheap: it runs every epoch); `steps` and
    # `samples` are sampling settings that `reconguard.models.load(..., steps=..., samples=...)`
    # changes without retraining.
    "diffusion": Recipe(
        model="diffusion",
        model_config={"chans": 16, "num_pool_layers": 3, "num_res_blocks": 1, "attention": True,
                      "timesteps": 1000, "schedule": "cosine", "prediction": "v", "augment": True,
                      "steps": 5},
        epochs=120, batch_size=8,
    ),
    # Han et al.'s supervised surrogates for the transfer attack on the diffusion prior, trained
    # at their acceleration (8x) at the CPU presets: ResUNet++ on magnitude images, i-RIM.
    "resunet-8x": Recipe(model="resunet", model_config={"chans": 8, "num_pool_layers": 3}, epochs=40, acceleration=8.0),
    "irim-8x": Recipe(
        model="irim", model_config={"num_steps": 4, "chans": 8, "hidden_chans": 12, "num_layers": 3},
        epochs=40, acceleration=8.0,
    ),
}


def train_config(name: str, *, data: str, runs: str, epochs: int | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of recipe ``name`` for data set ``data``, run in ``runs/name``
    (``epochs`` overrides the recipe's, for a shorter try: the result is not the reference model)."""
    recipe = RECIPES[name]
    init = None if recipe.init is None else f"{runs}/{recipe.init}/best"
    fields = {k: v for k, v in vars(recipe).items() if k != "init"}
    if epochs is not None:
        fields["epochs"] = epochs
    return TrainConfig(**fields, init=init, data=data, out=f"{runs}/{name}")


def train_reference(names: list[str], *, data: str, runs: str, epochs: int | None = None,
                    progress: bool = True) -> None:
    """Train (or resume) the named recipes in order (a recipe's ``init`` must come first);
    ``epochs`` overrides every recipe's budget (see :func:`train_config`)."""
    for name in names:
        train(train_config(name, data=data, runs=runs, epochs=epochs), progress=progress)


def export_reference(names: list[str], *, data: str, runs: str, out: Path = WEIGHTS,
                     progress: bool = True) -> dict[str, Any]:
    """Store the best weights of the named runs in ``out`` and write ``out/manifest.json``.

    Each model is stored in float16 unless that moves its test PSNR by more than
    :data:`HALF_TOLERANCE_DB` (then float32). The manifest records, per model, the recipe, the
    best validation epoch and metrics, the test metrics (of the stored weights and of the float32
    ones), the training time and epochs, and the SHA-256 of its files; the test metrics of
    zero-filling and CS-TV; and the fingerprint of the data build. Models of the existing
    manifest that are not named are kept.
    """
    out.mkdir(parents=True, exist_ok=True)
    existing = manifest(out)
    entries = dict(existing.get("models", {}))
    for name in names:
        entries[name] = _export_one(name, data=data, runs=runs, out=out, progress=progress)
    accelerations = sorted({entry["recipe"]["acceleration"] for entry in entries.values()})
    baselines = {f"{a:g}x": {m: _test_metrics(registry.load(m), data, a, progress) for m in BASELINES}
                 for a in accelerations}
    payload = {"data_build": DATA_BUILD, "data_fingerprint": data_fingerprint(Path(data)),
               "baselines": {k: {m: _rounded(v) for m, v in b.items()} for k, b in baselines.items()},
               "models": entries}
    atomic_write(out / MANIFEST, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return payload


def _export_one(name: str, *, data: str, runs: str, out: Path, progress: bool) -> dict[str, Any]:
    recipe = RECIPES[name]
    model = registry.load(f"{runs}/{name}/best")
    full = _test_metrics(model, data, recipe.acceleration, progress)
    registry.save(model, out / name, half=True)
    stored = _test_metrics(registry.load(out / name), data, recipe.acceleration, progress)
    dtype = "float16"
    if abs(stored["psnr"] - full["psnr"]) > HALF_TOLERANCE_DB:
        registry.save(model, out / name)
        stored, dtype = full, "float32"
    history = json.loads((Path(runs) / name / "history.json").read_text())
    best = max(history, key=lambda h: h["psnr"])
    files = [f"{name}.safetensors", f"{name}.json"]
    return {
        "recipe": asdict(recipe), "dtype": dtype, "epochs": history[-1]["epoch"], "best_epoch": best["epoch"],
        "train_minutes": round(history[-1]["minutes"], 1), "val": _rounded(best), "test": _rounded(stored),
        "test_float32": _rounded(full), "sha256": {f: sha256(out / f) for f in files},
    }


def _test_metrics(model, data: str, acceleration: float, progress: bool) -> dict[str, float]:
    loader = DataLoader(SliceDataset(Path(data) / "test"), batch_size=8, collate_fn=Sample.collate)
    mask_fn = build_mask("random", acceleration=acceleration)
    return summarize(evaluate(model, loader, mask_fn=mask_fn, progress=progress))


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(metrics[k]), 4) for k in ("psnr", "ssim", "nmse") if k in metrics}


def manifest_table(payload: dict[str, Any] | None = None) -> str:
    """The shipped models as a Markdown table (test PSNR/SSIM next to the baselines, training)."""
    payload = payload or manifest()
    lines = ["| model | test PSNR (dB) | test SSIM | epochs (best) | training (min, 2-core CPU) | stored |",
             "|---|---:|---:|---:|---:|---|"]
    for acceleration, baselines in payload.get("baselines", {}).items():
        for name, metrics in baselines.items():
            lines.append(f"| {name} ({acceleration}) | {metrics['psnr']:.2f} | {metrics['ssim']:.4f} | - | - | - |")
    for name, entry in payload.get("models", {}).items():
        test = entry["test"]
        lines.append(f"| {name} ({entry['recipe']['acceleration']:g}x) | {test['psnr']:.2f} | {test['ssim']:.4f} | "
                     f"{entry['epochs']} ({entry['best_epoch']}) | {entry['train_minutes']:.0f} | {entry['dtype']} |")
    return "\n".join(lines)


def data_fingerprint(data: Path) -> str:
    """SHA-256 over the k-space and targets of every file of a data set (order-independent of
    file-system listing), so a build made elsewhere can be compared with the one models were
    trained on."""
    digest = hashlib.sha256()
    for path in sorted(data.glob("*/*.h5")):
        digest.update(str(path.relative_to(data)).encode())
        with h5py.File(path, "r") as handle:
            for key in sorted(k for k in handle.keys() if k in ("kspace", "reconstruction_esc", "reconstruction_rss")):
                digest.update(np.ascontiguousarray(handle[key][()]).tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """``python -m reconguard.training.reference``: train (and with ``--export``, ship) the
    reference models."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/builtin")
    parser.add_argument("--runs", default="runs/reference")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"recipes {list(RECIPES)} (default: all, in order)")
    parser.add_argument("--export", action="store_true",
                        help=f"after training, store the best weights in {WEIGHTS} with their manifest")
    parser.add_argument("--table", action="store_true", help="print the shipped models' table and exit")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.table:
        print(manifest_table())
        return 0
    unknown = sorted(set(args.names) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; choose from {list(RECIPES)}")
    names = args.names or list(RECIPES)
    train_reference(names, data=args.data, runs=args.runs, progress=not args.quiet)
    if args.export:
        export_reference(names, data=args.data, runs=args.runs, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
