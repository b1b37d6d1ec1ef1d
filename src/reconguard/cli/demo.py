"""``reconguard demo``: the main job on the built-in data, end to end, with no arguments."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="build the built-in data, train a U-Net, evaluate it (no arguments needed)",
        description=(
            "Build the built-in data set (MNI152 brain anatomy shipped with nilearn; k-space is "
            "simulated), train a CPU-sized U-Net at 4x for a few minutes, and print PSNR/SSIM/NMSE "
            "on the test split next to the zero-filled and compressed-sensing baselines. Results "
            "are cached in --workdir: a second run reuses the data and the trained model."
        ),
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="cache directory (default: runs/demo)")
    parser.add_argument(
        "--source",
        default="mni152",
        choices=["mni152", "colin27", "phantom"],
        help="anatomy of the built-in data (default: mni152)",
    )
    parser.add_argument("--size", type=int, default=128, help="slice size in pixels (default: 128)")
    parser.add_argument("--acceleration", type=float, default=4.0, help="under-sampling factor (default: 4)")
    parser.add_argument("--max-minutes", type=float, default=4.0, help="U-Net training budget (default: 4)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard demo``."""
    from torch.utils.data import DataLoader

    from reconguard.data import SliceDataset, build_dataset
    from reconguard.data.sample import Sample
    from reconguard.models import load
    from reconguard.report.tables import metrics_table
    from reconguard.training.evaluation import evaluate, summarize
    from reconguard.training.presets import CPU_PRESETS
    from reconguard.training.trainer import TrainConfig, train

    progress = not args.quiet
    start = time.monotonic()
    data_dir = args.workdir / f"data-{args.source}-{args.size}"
    print(f"[1/3] built-in data set in {data_dir}")
    build_dataset(data_dir, source=args.source, size=args.size, progress=progress)
    run_dir = args.workdir / f"unet-{args.source}-{args.size}-{args.acceleration:g}x"
    print(f"[2/3] training a U-Net in {run_dir} (at most {args.max_minutes:g} min; cached)")
    config = TrainConfig(
        model="unet",
        model_config=CPU_PRESETS["unet"],
        data=str(data_dir),
        out=str(run_dir),
        acceleration=args.acceleration,
        max_minutes=args.max_minutes,
    )
    train(config, progress=progress)
    print("[3/3] evaluating on the test split")
    mask_fn = config.mask_fn()
    loader = DataLoader(SliceDataset(data_dir / "test"), batch_size=8, collate_fn=Sample.collate)
    rows = []
    for label, spec in [("zero-filled", "zero_filled"), ("CS-TV", "cs_tv"), ("U-Net", run_dir / "best")]:
        rows.append((label, summarize(evaluate(load(spec), loader, mask_fn=mask_fn, progress=progress))))
    print()
    print(metrics_table(rows, title=f"{args.source} test split, {args.acceleration:g}x random mask"))
    print(f"\ndone in {(time.monotonic() - start) / 60:.1f} min; U-Net weights: {run_dir}/best.safetensors")
    return 0
