"""``reconguard evaluate``: fastMRI metrics of one or more reconstructors on a data split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reconguard.cli.options import POSITIVE_INT, add_device_option, add_sampling_options, check_device


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="PSNR/SSIM/NMSE of reconstructors on a data split",
        description=(
            "Reconstruct every slice of DATA/SPLIT with each model (masks fixed per volume, "
            "seeded by file name as in fastMRI) and print volume-averaged PSNR, SSIM and NMSE "
            "computed exactly as fastMRI's evaluate.py."
        ),
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="checkpoint path (.safetensors with its .json) or a model name such as zero_filled "
        "or cs_tv; repeat to compare several",
    )
    parser.add_argument("--data", required=True, help="data set directory")
    parser.add_argument("--split", default="test", help="sub-directory to evaluate (default: test)")
    add_sampling_options(parser)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="slices per batch (default: 8)")
    add_device_option(parser)
    parser.add_argument("--json", type=Path, default=None, help="also write per-volume results to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard evaluate``."""
    from torch.utils.data import DataLoader

    from reconguard.data import SliceDataset
    from reconguard.data.sample import Sample
    from reconguard.models import load
    from reconguard.physics.masks import build_mask
    from reconguard.report.tables import metrics_table
    from reconguard.training.evaluation import evaluate, summarize

    check_device(args.device)
    mask_fn = build_mask(args.mask, acceleration=args.acceleration, center_fraction=args.center_fraction)
    dataset = SliceDataset(Path(args.data) / args.split)
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=Sample.collate)
    models = [(spec, load(spec).to(args.device)) for spec in args.model]
    rows, per_volume = [], {}
    for spec, model in models:
        results = evaluate(model, loader, mask_fn=mask_fn, device=args.device, progress=not args.quiet)
        rows.append((spec, summarize(results)))
        per_volume[spec] = [r.__dict__ for r in results]
    print(metrics_table(rows, title=f"{args.split} split, {args.acceleration:g}x {args.mask} mask"))
    if args.json is not None:
        from reconguard.files import atomic_write

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, json.dumps({"summary": dict(rows), "volumes": per_volume}, indent=2))
    return 0
