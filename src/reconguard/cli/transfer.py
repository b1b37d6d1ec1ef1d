"""``reconguard transfer``: black-box transfer of attacks from surrogate models to target models."""

from __future__ import annotations

import argparse
from collections import defaultdict

from reconguard.attacks.presets import attack_table
from reconguard.cli.cell_options import add_cell_options, add_run_options, model_label, resolve_cell


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard transfer``."""
    parser = subparsers.add_parser(
        "transfer",
        help="craft attacks on surrogate models, evaluate them on target models",
        description=(
            "Black-box transfer: attack each --surrogate on every slice of DATA/SPLIT and evaluate "
            "the same perturbation (and its matched random noise) on every --target. Prints the "
            "surrogate x target matrix of mean PSNR (clean, attacked, noise); the diagonal, where a "
            "surrogate is also a target, is the white-box result. --out writes the tidy records "
            "(one row per slice, pair, metric and condition, in the audit's vocabulary: clean, "
            "attacked, noise, zero_filled, artefact) as CSV."
        ),
        epilog=attack_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = parser.add_argument
    arg("--surrogate", action="append", required=True, help="model to craft on (repeatable)")
    arg("--target", action="append", required=True, help="model to evaluate on (repeatable)")
    add_cell_options(parser, verb="use")
    add_run_options(parser, out="write the records to this CSV file", overwrite=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard transfer``: one audit cell per (surrogate, target) pair, as tidy records."""
    from reconguard.cli.cell import run_cells, split
    from reconguard.experiment import Setup
    from reconguard.files import atomic_write
    from reconguard.models import load
    from reconguard.report.tables import csv_text

    attack, mask_fn = resolve_cell(args, needs="transfer needs a perturbation")
    dataset, count = split(args.data, args.split, args.max_slices)
    models = {model_label(spec): load(spec).to(args.device) for spec in dict.fromkeys(args.surrogate + args.target)}
    setups = {(s, t): Setup(model=models[t], attack=attack, mask_fn=mask_fn, source=models[s], seed=args.seed)
              for s in dict.fromkeys(map(model_label, args.surrogate))
              for t in dict.fromkeys(map(model_label, args.target))}
    common = {"attack": type(attack).__name__, "threat": attack.threat.label, "eps": float(attack.threat.eps)}
    records = []
    for (surrogate, target), _, unit in run_cells(setups, dataset, count, batch_size=args.batch_size,
                                                  device=args.device, desc="transfer", quiet=args.quiet):
        pair = {"surrogate": surrogate, "target": target, "white_box": surrogate == target, **common}
        records += [{"sample": f"{r.volume}:{r.slice}", **pair, "metric": r.metric, "condition": r.condition,
                     "value": r.value, "seconds": unit.seconds["attacked"]} for r in unit.records]
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
        if r["metric"] == "psnr" and r["condition"] in ("clean", "attacked", "noise") and r["value"] is not None:
            sums[(r["surrogate"], r["target"], r["white_box"])][r["condition"]].append(r["value"])
    body = []
    for (surrogate, target, white_box), values in sums.items():
        mean = {c: sum(v) / len(v) for c, v in values.items()}
        kind = "white-box" if white_box else "transfer"
        body.append((surrogate, target, kind, f"{mean['clean']:.2f}", f"{mean['attacked']:.2f}",
                     f"{mean['noise']:.2f}", f"{mean['clean'] - mean['attacked']:.2f}"))
    header = ("surrogate", "target", "kind", "clean PSNR", "attacked PSNR", "noise PSNR", "drop (dB)")
    return f"{title}\n\n" + markdown_table(header, body, align="lllrrrr")
