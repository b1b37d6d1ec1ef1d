"""``reconguard defend``: what a defense costs on clean inputs and what it buys under attack.

For every slice: the undefended and defended reconstructions of the clean input; of the input
attacked through the *undefended* model (a non-adaptive attack); and of the input attacked through
the *defended* pipeline (the adaptive attack: white-box PGD when the defense is differentiable,
BPDA with the undefended model as the gradient when it is not, EOT when it is random). A defense is
reported as robust only by its adaptive row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from reconguard.attacks.presets import ATTACKS, attack_table
from reconguard.cli.attack import add_attack_options, make_attack, metric_values, model_label
from reconguard.cli.options import (
    POSITIVE_INT,
    add_device_option,
    add_sampling_options,
    check_device,
    parse_assignments,
)
from reconguard.errors import ConfigError

CONDITIONS = ("clean", "clean_defended", "attacked", "attacked_defended", "adaptive_defended")
METRICS = ("psnr", "ssim", "nmse")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard defend``."""
    parser = subparsers.add_parser(
        "defend",
        help="evaluate a defense: clean cost, gain under attack, adaptive attack",
        description=__doc__.split("\n\n", 1)[1].replace("``", "'"),
        epilog=attack_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = parser.add_argument
    arg("--model", required=True, help="checkpoint path or model name of the reconstructor to protect")
    arg("--data", required=True, help="data set directory")
    arg("--split", default="test", help="sub-directory to evaluate (default: test)")
    arg("--defense", required=True, help="cyclic (training-free cyclic consistency) or smooth (randomized smoothing)")
    arg("--defense-set", action="append", metavar="KEY=VALUE", help="defense hyper-parameter (repeatable)")
    arg("--calibrate", default="val", metavar="SPLIT",
        help="cyclic: calibrate the detector threshold (95th percentile of clean scores) on this split; "
        "'none' always mitigates (default: val)")
    add_attack_options(parser)
    add_sampling_options(parser)
    arg("--no-adaptive", dest="adaptive", action="store_false",
        help="skip the adaptive attack (timing runs only: the defense is then not reported as robust)")
    arg("--max-slices", type=POSITIVE_INT, default=8,
        help="evaluate the first N slices (default: 8; defenses are slow)")
    arg("--batch-size", type=POSITIVE_INT, default=4, help="slices per batch (default: 4)")
    arg("--out", type=Path, default=None, help="run directory (default: runs/defend-<model>-<defense>-<attack>)")
    arg("--overwrite", action="store_true", help="replace an existing run directory")
    add_device_option(parser)
    arg("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard defend``."""
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from reconguard.cli.rundir import check_out
    from reconguard.data import Sample, SliceDataset
    from reconguard.defenses import build_defense
    from reconguard.files import atomic_directory, atomic_write
    from reconguard.models import load
    from reconguard.physics.masks import build_mask
    from reconguard.report.tables import csv_text

    check_device(args.device)
    if ATTACKS.get(args.attack) is not None and ATTACKS[args.attack].kind != "perturbation":
        raise ConfigError(f"{args.attack} is not a perturbation attack; defend evaluates PGD/FGSM/sparse attacks")
    attack = make_attack(args)
    mask_fn = build_mask(args.mask, acceleration=args.acceleration, center_fraction=args.center_fraction)
    model = load(args.model).to(args.device)
    defense = build_defense(args.defense, model, **parse_assignments(args.defense_set))
    label = model_label(args.model)
    out = args.out or Path(f"runs/defend-{label}-{args.defense}-{args.attack}")
    check_out(out, args.overwrite)
    defense = _calibrated(defense, args, mask_fn)
    threshold = getattr(defense, "threshold", None)
    dataset = SliceDataset(Path(args.data) / args.split)
    count = min(args.max_slices, len(dataset))
    loader = DataLoader(Subset(dataset, range(count)), batch_size=args.batch_size, collate_fn=Sample.collate)
    context = {"model": label, "defense": args.defense, "attack": args.attack, "threat": attack.threat.label}
    rows: list[dict[str, Any]] = []
    with tqdm(total=count, desc=f"defend {args.defense}", unit="slice", disable=args.quiet) as bar:
        for batch in loader:
            rows += _evaluate_batch(batch.to(args.device), mask_fn, model, defense, attack, context,
                                    adaptive=args.adaptive)
            bar.update(len(batch))
    summary = _summary(rows, context, threshold, defense)
    with atomic_directory(out) as staging:
        atomic_write(staging / "metrics.csv", csv_text(rows))
        atomic_write(staging / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    print(f"\nwrote {out}/metrics.csv and summary.json")
    return 0


def _calibrated(defense: Any, args: argparse.Namespace, mask_fn: Any) -> Any:
    """The defense with its detector threshold set from clean slices of ``--calibrate`` (if it has one)."""
    if not hasattr(defense, "calibrated") or args.calibrate == "none":
        return defense
    from torch.utils.data import DataLoader, Subset

    from reconguard.data import Sample, SliceDataset

    dataset = SliceDataset(Path(args.data) / args.calibrate)
    subset = Subset(dataset, range(min(len(dataset), 4 * args.max_slices)))
    batches = []
    for batch in DataLoader(subset, batch_size=args.batch_size, collate_fn=Sample.collate):
        batch = batch.to(args.device)
        masked_kspace, mask = batch.undersample(mask_fn)
        batches.append((masked_kspace, mask, batch.coil_maps))
    return defense.calibrated(batches)


def _evaluate_batch(batch, mask_fn, model, defense, attack, context, *, adaptive: bool) -> list[dict[str, Any]]:
    import torch

    from reconguard.attacks import BPDA
    from reconguard.metrics import magnitude

    masked_kspace, mask = batch.undersample(mask_fn)
    inputs = dict(target=batch.target, coil_maps=batch.coil_maps, max_value=batch.max_value)
    recons, seconds = {}, {}
    for name, reconstructor in (("clean", model), ("clean_defended", defense)):
        start = time.perf_counter()
        with torch.no_grad():
            recons[name] = reconstructor(masked_kspace, mask, coil_maps=batch.coil_maps)
        seconds[name] = (time.perf_counter() - start) / len(batch)
    plain = attack(model, masked_kspace, mask, **inputs)
    recons["attacked"] = plain.recon
    start = time.perf_counter()
    with torch.no_grad():
        recons["attacked_defended"] = plain.replay(defense, mask, coil_maps=batch.coil_maps)
    seconds["attacked_defended"] = (time.perf_counter() - start) / len(batch)
    if adaptive:
        through = defense if defense.differentiable else BPDA(defense, model)
        recons["adaptive_defended"] = attack(through, masked_kspace, mask, **inputs).recon
    images = {condition: magnitude(recon, batch.target) for condition, recon in recons.items()}
    values = metric_values(batch.target, batch.max_value, images)
    rows = []
    for i in range(len(batch)):
        row = {"volume": batch.fname[i], "slice": batch.slice_idx[i], **context}
        row.update({key: float(value[i]) for key, value in values.items()})
        row.update(seconds_model=seconds["clean"], seconds_defense=seconds["clean_defended"],
                   seconds_defense_attacked=seconds["attacked_defended"])
        rows.append(row)
    return rows


def _summary(rows, context, threshold, defense) -> dict[str, Any]:
    keys = [k for k in rows[0] if k.split("_", 1)[0] in METRICS or k.startswith("seconds")]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    adaptive = "PGD through the defense" if defense.differentiable else "BPDA (undefended model as gradient)"
    return {**context, "slices": len(rows), "threshold": threshold, "adaptive_attack": adaptive,
            "eot": bool(getattr(defense, "stochastic", False)), "mean": mean}


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown table: clean / attacked, undefended / defended / adaptive, and the cost per slice."""
    from reconguard.report.tables import markdown_table

    mean = summary["mean"]
    labels = {
        "clean": "clean input, undefended",
        "clean_defended": "clean input, defended",
        "attacked": "attacked (crafted on the model), undefended",
        "attacked_defended": "attacked (crafted on the model), defended",
        "adaptive_defended": f"adaptive attack on the defense ({summary['adaptive_attack']})",
    }
    body = [(labels[c], f"{mean[f'psnr_{c}']:.2f}", f"{mean[f'ssim_{c}']:.4f}", f"{mean[f'nmse_{c}']:.4f}")
            for c in CONDITIONS if f"psnr_{c}" in mean]
    if "psnr_adaptive_defended" not in mean:
        body.append((labels["adaptive_defended"], "not run", "", ""))
    head = (f"{summary['defense']} on {summary['model']}, {summary['attack']} {summary['threat']}, "
            f"{summary['slices']} slices; seconds per slice: model {mean['seconds_model']:.3f}, "
            f"defended clean {mean['seconds_defense']:.3f}, defended attacked {mean['seconds_defense_attacked']:.3f}")
    return head + "\n\n" + markdown_table(("input", "PSNR (dB)", "SSIM", "NMSE"), body)
