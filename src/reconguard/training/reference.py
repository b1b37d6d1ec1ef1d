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
from dataclasses import dataclass, field
from typing import Any

from reconguard.training.trainer import TrainConfig, train

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


RECIPES: dict[str, Recipe] = {
    # A complex-output U-Net (fastMRI's architecture at half width): the cyclic defense re-encodes
    # its output into k-space, so the phase is trained too.
    "unet": Recipe(
        model="unet", model_config={"in_chans": 2, "chans": 16, "num_pool_layers": 4},
        epochs=150, target="complex",
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
        epochs=50,
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


def train_config(name: str, *, data: str, runs: str) -> TrainConfig:
    """The :class:`TrainConfig` of recipe ``name`` for data set ``data``, run in ``runs/name``."""
    recipe = RECIPES[name]
    init = None if recipe.init is None else f"{runs}/{recipe.init}/best"
    fields = {k: v for k, v in vars(recipe).items() if k != "init"}
    return TrainConfig(**fields, init=init, data=data, out=f"{runs}/{name}")


def train_reference(names: list[str], *, data: str, runs: str, progress: bool = True) -> None:
    """Train (or resume) the named recipes in order (a recipe's ``init`` must come first)."""
    for name in names:
        train(train_config(name, data=data, runs=runs), progress=progress)


def main(argv: list[str] | None = None) -> int:
    """``python -m reconguard.training.reference``: train the reference models."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/builtin")
    parser.add_argument("--runs", default="runs/reference")
    parser.add_argument("names", nargs="*", default=list(RECIPES), help="recipes (default: all, in order)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    train_reference(args.names, data=args.data, runs=args.runs, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
