"""``reconguard transfer``: black-box transfer of attacks from surrogate models to target models."""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from reconguard.attacks.presets import ATTACKS, attack_table
from reconguard.cli.attack import add_attack_options, make_attack, model_label
from reconguard.cli.options import POSITIVE_INT, add_device_option, add_sampling_options, check_device
from reconguard.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard transfer``."""
    parser = subparsers.add_parser(
        "transfer",
        help="craft attacks on surrogate models, evaluate them on target models",
        description=(
            "Black-box transfer: attack each --surrogate on every slice of DATA/SPLIT and evaluate "
            "the same perturbation (and same-norm Gaussian noise) on every --target. Prints the "
            "surrogate x target matrix of mean PSNR (clean, attacked, noise); the diagonal, where a "
            "surrogate is also a target, is the white-box result. --out writes the tidy records "
            "(one row per slice, pair, metric and condition) as CSV."
        ),
        epilog=attack_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = parser.add_argument
    arg("--surrogate", action="append", required=True, help="model to craft on (repeatable)")
    arg("--target", action="append", required=True, help="model to evaluate on (repeatable)")
    arg("--data", required=True, help="data set directory")
    arg("--split", default="test", help="sub-directory to use (default: test)")
    add_attack_options(parser)
    add_sampling_options(parser)
    arg("--max-slices", type=POSITIVE_INT, default=None, help="use only the first N slices of the split")
    arg("--batch-size", type=POSITIVE_INT, default=4, help="slices per batch (default: 4)")
    arg("--out", type=Path, default=None, help="write the records to this CSV file")
    add_device_option(parser)
    arg("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard transfer``."""
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from reconguard.attacks import transfer_matrix
    from reconguard.data import Sample, SliceDataset
    from reconguard.files import atomic_write
    from reconguard.models import load
    from reconguard.physics.masks import build_mask
    from reconguard.report.tables import csv_text

    check_device(args.device)
    if ATTACKS.get(args.attack) is not None and ATTACKS[args.attack].kind != "perturbation":
        raise ConfigError(f"{args.attack} inserts features rather than perturbing; transfer needs a perturbation")
    attack = make_attack(args)
    mask_fn = build_mask(args.mask, acceleration=args.acceleration, center_fraction=args.center_fraction)
    dataset = SliceDataset(Path(args.data) / args.split)
    models = {model_label(spec): load(spec).to(args.device) for spec in dict.fromkeys(args.surrogate + args.target)}
    surrogates = {model_label(s): models[model_label(s)] for s in args.surrogate}
    targets = {model_label(t): models[model_label(t)] for t in args.target}
    count = len(dataset) if args.max_slices is None else min(args.max_slices, len(dataset))
    loader = DataLoader(Subset(dataset, range(count)), batch_size=args.batch_size, collate_fn=Sample.collate)
    batches = tqdm((b.to(args.device) for b in loader), total=len(loader), desc="transfer", disable=args.quiet)
    records = transfer_matrix(attack, surrogates, targets, batches, mask_fn=mask_fn)
    print(format_matrix(records, title=f"{args.attack} {attack.threat.label}, {count} slices of {args.split}"))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, csv_text(records))
        print(f"\nwrote {len(records)} records to {args.out}")
    return 0


def format_matrix(records: list[dict], *, title: str) -> str:
    """Mean PSNR per (surrogate, target) pair as a Markdown table."""
    from reconguard.report.tables import markdown_table

    sums: dict[tuple[str, str, bool], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["metric"] == "psnr":
            sums[(r["surrogate"], r["target"], r["white_box"])][r["condition"]].append(r["value"])
    body = []
    for (surrogate, target, white_box), values in sums.items():
        mean = {c: sum(v) / len(v) for c, v in values.items()}
        kind = "white-box" if white_box else "transfer"
        body.append((surrogate, target, kind, f"{mean['clean']:.2f}", f"{mean['attack']:.2f}",
                     f"{mean['noise']:.2f}", f"{mean['clean'] - mean['attack']:.2f}"))
    header = ("surrogate", "target", "kind", "clean PSNR", "attacked PSNR", "noise PSNR", "drop (dB)")
    return f"{title}\n\n" + markdown_table(header, body, align="lllrrrr")
