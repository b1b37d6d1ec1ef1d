"""``reconguard train``: supervised (or robust) training with validation, best checkpoint and resume."""

from __future__ import annotations

import argparse
import textwrap

from reconguard.cli.options import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    add_device_option,
    add_sampling_options,
    check_device,
    number,
    parse_assignments,
    pick,
)

# Kept in step with the option defaults of reconguard.defenses.training (a test checks it); written
# out here so that `reconguard --help` does not import torch.
ROBUST_HELP = """\
robust training (--robust, options with --robust-set KEY=VALUE; unknown keys are refused):
  pgd     adversarial training, Madry et al. arXiv:1706.06083: every step trains on the output of
          PGD on the current model (random start, the run's loss vs the target) within a relative
          budget. Options: method=pgd, domain=kspace, norm=l2 (linf for domain=image), eps=0.02,
          steps=3, step_size=2.5/steps (0.2 for linf), mix=0 (weight of the clean batch in the
          loss; 0.5 = half clean, half adversarial). method=free: free adversarial training,
          Shafahi et al. arXiv:1904.12843: each batch replayed replays=4 times, the input
          gradient of each weight update moves the perturbation by step_size=1 (x eps); the
          perturbation restarts at each batch; divide --epochs by replays for the same cost.
  fnaf    FNAF-robust training, Cheng et al. MIDL 2020 / Calivá et al. arXiv:2011.00070: the worst
          of candidates=5 random features (size=10 pixels, region=0.375 of the side, intensity_range=[0, 1] of
          the slice maximum, info_threshold=0.0001, insertion=complex) is inserted into each
          slice; loss alpha=1 x L(recon, target with feature) + beta=100 x L(T recon, T target),
          T the feature dilated by dilation=1 pixels, both terms averaged over the whole image (the
          paper's weighting), mixed with the clean slices at weight mix=0.5 (L = --loss, l1 or
          mse; mse is the papers' objective). Usually with --init (a trained model), as in the papers.
  smooth  train through randomized smoothing (reconguard.defenses.smoothing.RandomizedSmoothing;
          Cohen et al. arXiv:1902.02918, SMUG arXiv:2303.12735): options are its hyper-parameters
          (sigma=0.01, samples=10, mode=denoiser|input, ...); validation scores the smoothed
          model; the checkpoint is the inner model, the options are in OUT/config.json.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard train``."""
    from reconguard.training.presets import CPU_PRESETS

    presets = "; ".join(f"{name}: {cfg}" for name, cfg in CPU_PRESETS.items())
    parser = subparsers.add_parser(
        "train",
        help="train a reconstructor on a fastMRI-format data set",
        description=textwrap.fill(
            "Train a reconstructor on DATA/train with random under-sampling masks, validate on "
            "DATA/val every epoch (PSNR/SSIM/NMSE, fastMRI semantics) and keep the best "
            "checkpoint. Interrupted runs resume when the same command is run again. With --robust, "
            "the same loop trains adversarially robust models (see below)."
        ),
        epilog=textwrap.fill(f"CPU-sized model defaults (override with --set KEY=VALUE): {presets}.")
        + f"\n\n{ROBUST_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", default=None, help="model name: unet, varnet, modl, rim, irim, xpdnet, recurrent_varnet, "
        "resunet or diffusion (trained on images only) (default with --init: the checkpoint's)"
    )
    parser.add_argument("--data", required=True, help="data set directory (with train/ and val/)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<model>-<acceleration>x[-<robust>])")
    add_sampling_options(parser)
    _add_schedule_options(parser)
    add_device_option(parser)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="model hyper-parameter (repeatable)")
    _add_robust_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace a run with a different configuration")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _add_schedule_options(parser: argparse.ArgumentParser) -> None:
    """The training budget, optimiser, loss and seed."""
    parser.add_argument("--epochs", type=POSITIVE_INT, default=None,
                        help="passes over the training split (default: 20, or unlimited with --max-steps)")
    parser.add_argument("--max-steps", type=POSITIVE_INT, default=None,
                        help="stop after this many optimiser steps (batches) in total, whichever of --epochs and "
                        "--max-steps comes first")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="slices per step (default: 8)")
    parser.add_argument("--lr", type=POSITIVE_NUMBER, default=1e-3, help="peak Adam learning rate (default: 1e-3)")
    parser.add_argument(
        "--final-lr-fraction",
        type=number(0.0, strict=True, high=1.0),
        default=1.0,
        help="learning rate of the last epoch relative to --lr, reached by a half-cosine decay "
        "(default: 1, constant: on the built-in data a decay to 0.05 did not help a 20-epoch U-Net)",
    )
    parser.add_argument("--loss", default="l1", choices=["l1", "mse", "ssim"], help="training loss (default: l1)")
    parser.add_argument(
        "--target", default="magnitude", choices=["magnitude", "complex"],
        help="what the loss compares: magnitudes (default) or real/imaginary parts with the fully sampled "
        "complex image (trains the output phase too; l1/mse, no --robust)",
    )
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                        help="seed of weights, shuffling and masks (default: 0)")
    parser.add_argument("--max-minutes", type=POSITIVE_NUMBER, default=None,
                        help="wall-clock cap: stop training after this many minutes of training (the log and "
                        "history.json say when it cut training short); prefer --epochs/--max-steps, which give "
                        "the same model on any machine")


def _add_robust_options(parser: argparse.ArgumentParser) -> None:
    """``--robust``, its options, and ``--init`` (robust fine-tuning usually starts from a trained model)."""
    parser.add_argument(
        "--robust",
        default="none",
        choices=["none", "pgd", "fnaf", "smooth"],
        help="robust training: pgd (Madry et al. arXiv:1706.06083; method=free: Shafahi et al. "
        "arXiv:1904.12843), fnaf (Cheng et al. MIDL 2020, Calivá et al. arXiv:2011.00070) or smooth "
        "(randomized smoothing) -- options and defaults below (default: none)",
    )
    parser.add_argument(
        "--robust-set", action="append", metavar="KEY=VALUE", help="option of the --robust mode (repeatable)"
    )
    parser.add_argument(
        "--init",
        default=None,
        metavar="CKPT",
        help="start from the weights of a saved model (e.g. runs/unet-4x/best); its model and "
        "hyper-parameters are the run's (--set may only repeat them)",
    )


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard train``."""
    from reconguard.training.config import TrainConfig
    from reconguard.training.trainer import train

    check_device(args.device)
    model, model_config = _model_choice(args)
    suffix = "" if args.robust == "none" else f"-{args.robust}"
    out = args.out or f"runs/{model}-{args.acceleration:g}x{suffix}"
    config = TrainConfig(
        model=model,
        model_config=model_config,
        out=out,
        epochs=20 if args.epochs is None and args.max_steps is None else args.epochs,
        robust_config=_robust_options(args.robust_set),
        **pick(args, "data", "acceleration", "center_fraction", "mask", "max_steps", "batch_size", "lr",
               "final_lr_fraction", "loss", "target", "seed", "max_minutes", "device", "robust", "init"),
    )
    history = train(config, overwrite=args.overwrite, progress=not args.quiet)
    if history:
        best = max(history, key=lambda h: h["psnr"])
        print(
            f"best validation PSNR {best['psnr']:.2f} dB, SSIM {best['ssim']:.4f} (epoch {best['epoch']}"
            f"{', partial' if best.get('partial') else ''}); "
            f"weights: {out}/best.safetensors"
        )
    return 0


def _model_choice(args: argparse.Namespace) -> tuple[str, dict]:
    """Model name and hyper-parameters: the CPU preset, or the ``--init`` checkpoint's, plus ``--set``."""
    from reconguard.errors import ConfigError
    from reconguard.training.presets import CPU_PRESETS

    if args.init is None:
        if args.model is None:
            raise ConfigError("--model is required (or --init CKPT to start from a saved model)")
        return args.model, {**CPU_PRESETS.get(args.model, {}), **parse_assignments(args.set)}
    from reconguard.models import load

    start = load(args.init)
    if args.model not in (None, start.name):
        raise ConfigError(f"--init {args.init} is a {start.name}, not a {args.model}")
    return start.name, {**start.config, **parse_assignments(args.set)}


def _robust_options(items: list[str] | None) -> dict:
    from reconguard.errors import ConfigError

    try:
        return parse_assignments(items)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("--set", "--robust-set")) from None
