"""``reconguard defend``: what a defense costs on clean inputs and what it buys under attack.

For every slice: the undefended and defended reconstructions of the clean input; of the input
attacked through the *undefended* model (a non-adaptive attack); and of the input attacked through
the *defended* pipeline (the adaptive attack: white-box PGD when the defense is differentiable,
BPDA with the undefended model as the gradient when it is not, EOT when it is random). A defense is
reported as robust only by its adaptive row. In the files these are the conditions undefended_clean,
clean, undefended_attacked, nonadaptive and attacked (columns <condition>_<metric>, as everywhere),
with the seconds per slice of the bare model (undefended_clean_seconds) and of the defense on clean
and attacked inputs (clean_seconds, nonadaptive_seconds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reconguard.attacks.presets import attack_table
from reconguard.cli.cell_options import add_cell_options, add_run_options, model_label, resolve_cell
from reconguard.cli.options import parse_assignments


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
    arg("--defense", required=True, help="cyclic (training-free cyclic consistency) or smooth (randomized smoothing)")
    arg("--defense-set", action="append", metavar="KEY=VALUE", help="defense hyper-parameter (repeatable)")
    arg("--calibrate", default="val", metavar="SPLIT",
        help="cyclic: calibrate the detector threshold (95th percentile of clean scores) on this split; "
        "'none' always mitigates (default: val)")
    arg("--no-adaptive", dest="adaptive", action="store_false",
        help="skip the adaptive attack (timing runs only: the defense is then not reported as robust)")
    add_cell_options(parser, verb="evaluate", max_slices=8, max_help="; defenses are slow")
    add_run_options(parser, out="run directory (default: runs/defend-<model>-<defense>-<attack>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard defend``: a one-cell audit of a defended model, formatted."""
    from reconguard.cli.cell import means, run_cells, slice_rows, split
    from reconguard.cli.rundir import check_out
    from reconguard.defenses import build_defense
    from reconguard.experiment import Setup, calibrated
    from reconguard.files import atomic_directory, atomic_write
    from reconguard.models import load
    from reconguard.report.tables import csv_text

    attack, mask_fn = resolve_cell(args, needs="defend evaluates PGD/FGSM/sparse attacks")
    model = load(args.model).to(args.device)
    defense = build_defense(args.defense, model, **parse_assignments(args.defense_set))
    label = model_label(args.model)
    out = args.out or Path(f"runs/defend-{label}-{args.defense}-{args.attack}")
    check_out(out, args.overwrite)
    if args.calibrate != "none":
        defense = calibrated(defense, split(args.data, args.calibrate, None)[0], mask_fn, slices=4 * args.max_slices,
                             batch_size=args.batch_size, device=args.device)
    dataset, count = split(args.data, args.split, args.max_slices)
    context = {"model": label, "defense": args.defense, "attack": args.attack, "threat": attack.threat.label}
    setup = Setup(model=model, attack=attack, mask_fn=mask_fn, defense=defense, seed=args.seed,
                  adaptive=args.adaptive, time_clean=True)
    rows: list[dict[str, Any]] = []
    for _, batch, unit in run_cells({label: setup}, dataset, count, batch_size=args.batch_size, device=args.device,
                                    desc=f"defend {args.defense}", quiet=args.quiet):
        rows += slice_rows(batch, unit, context)
    adaptive = "PGD through the defense" if defense.differentiable else "BPDA (undefended model as gradient)"
    summary = {**context, "slices": len(rows), "threshold": getattr(defense, "threshold", None),
               "adaptive_attack": adaptive, "eot": bool(getattr(defense, "stochastic", False)), "mean": means(rows)}
    with atomic_directory(out) as staging:
        atomic_write(staging / "metrics.csv", csv_text(rows))
        atomic_write(staging / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    print(f"\nwrote {out}/metrics.csv and summary.json")
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown table: clean / attacked, undefended / defended / adaptive, and the cost per slice."""
    from reconguard.metrics import METRICS
    from reconguard.report.tables import markdown_table, show

    mean = summary["mean"]
    labels = {
        "undefended_clean": "clean input, undefended",
        "clean": "clean input, defended",
        "undefended_attacked": "attacked (crafted on the model), undefended",
        "nonadaptive": "attacked (crafted on the model), defended",
        "attacked": f"adaptive attack on the defense ({summary['adaptive_attack']})",
    }
    body = [(label, *(show(mean[f"{c}_{m}"], metric.format) for m, metric in METRICS.items()))
            for c, label in labels.items() if f"{c}_psnr" in mean]
    if "attacked_psnr" not in mean:
        body.append((labels["attacked"], "not run", *[""] * (len(METRICS) - 1)))
    seconds = ", ".join(f"{name} {show(mean.get(f'{c}_seconds'), '{:.3f}')}" for c, name in
                        (("undefended_clean", "model"), ("clean", "defended clean"),
                         ("nonadaptive", "defended attacked")))
    head = (f"{summary['defense']} on {summary['model']}, {summary['attack']} {summary['threat']}, "
            f"{summary['slices']} slices; seconds per slice: {seconds}")
    header = ("input", *(f"{m.upper()} (dB)" if m == "psnr" else m.upper() for m in METRICS))
    return head + "\n\n" + markdown_table(header, body)
