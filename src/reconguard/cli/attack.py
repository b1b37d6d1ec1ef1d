"""``reconguard attack``: attack a reconstructor on every slice of a data split, save the evidence.

The attacks and their defaults are the rows of :data:`reconguard.attacks.presets.ATTACKS`.
Perturbation attacks (PGD, FGSM, sparse spikes) report the
clean, attacked and matched-noise reconstructions; feature attacks (FNAF) report the clean and
featured reconstructions and whether the feature went missing. The run is built in a staging
directory and published in one rename (:func:`reconguard.files.atomic_directory`).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
from pathlib import Path
from typing import Any

from reconguard.attacks.presets import ATTACKS, attack_table
from reconguard.cli.cell_options import add_cell_options, add_run_options, model_label, resolve_cell
from reconguard.cli.options import NON_NEGATIVE_INT


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard attack``."""
    parser = subparsers.add_parser(
        "attack",
        help="adversarially attack a reconstructor on a data split",
        description=_DESCRIPTION,
        epilog=attack_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="checkpoint path (.safetensors with its .json) or a model name")
    add_cell_options(parser, verb="attack")
    parser.add_argument("--panels", type=NON_NEGATIVE_INT, default=3,
                        help="figures of the N most damaged slices (default: 3)")
    add_run_options(parser, out="run directory (default: runs/attack-<model>-<attack>-<eps>)")
    parser.set_defaults(func=run)


_DESCRIPTION = """\
Attack every slice of DATA/SPLIT (masks fixed per volume, as in evaluation) and write to OUT:
  adversarial/<volume>.h5  attacked under-sampled k-space in fastMRI format (with the target and
                           the sampling mask; readable by any fastMRI loader)
  metrics.csv              one row per slice, columns <condition>_<metric>: PSNR/SSIM/NMSE (and
                           loss) of the clean, attacked, zero-filled (and, for perturbations,
                           matched random-noise) reconstructions; attacked_norm/budget/
                           relative_norm; artefact_* descriptors; attacked_gain and noise_gain
                           (output change per input change); attacked_seconds; for fnaf the
                           fnaf_hit, fnaf_accepted, fnaf_score and the three criteria's scores
  summary.json             means over slices (fnaf: the hit rate) and the options of the run
  panels/                  figures of the most damaged slices (largest PSNR drop; fnaf: largest
                           missing-feature MSE, the feature outlined)
and print the means as a Markdown table. OUT is written to a staging directory and renamed into
place when complete."""


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard attack``: a one-cell audit of every slice, formatted."""
    from reconguard.attacks import FNAFResult, HitCounter
    from reconguard.cli.cell import means, run_cells, slice_rows, split
    from reconguard.cli.rundir import check_out
    from reconguard.data.writer import VolumeWriter
    from reconguard.experiment import Setup
    from reconguard.files import atomic_directory, atomic_write
    from reconguard.models import load
    from reconguard.report.tables import csv_text

    attack, mask_fn = resolve_cell(args)
    dataset, count = split(args.data, args.split, args.max_slices)
    model = load(args.model).to(args.device)
    label = model_label(args.model)
    eps = None if attack.threat is None else attack.threat.eps
    threat = f"{args.attack}(n={args.feature_size})" if attack.threat is None else attack.threat.label
    out = args.out or Path(f"runs/attack-{label}-{args.attack}" + (f"-{eps:g}" if eps is not None else ""))
    check_out(out, args.overwrite)
    context = {"model": label, "attack": args.attack, "threat": threat, "eps": eps}
    setup = Setup(model=model, attack=attack, mask_fn=mask_fn, seed=args.seed)
    rows: list[dict[str, Any]] = []
    worst: list[tuple[dict[str, Any], dict[str, Any]]] = []
    hits = HitCounter()
    with atomic_directory(out) as staging:
        writer = VolumeWriter(staging / "adversarial", dataset.volumes,
                              {f"reconguard_{k}": v for k, v in context.items() if v is not None})
        for _, batch, unit in run_cells({label: setup}, dataset, count, batch_size=args.batch_size,
                                        device=args.device, desc=args.attack, quiet=args.quiet):
            writer.add(unit.attacked_batch(batch))
            new = slice_rows(batch, unit, context)
            if isinstance(unit.result, FNAFResult):
                hits.add(unit.result)
            worst = heapq.nlargest(args.panels, worst + list(zip(new, unit.panels(batch))),
                                   key=lambda item: _damage(item[0]))
            rows += new
        writer.flush()
        summary = {**context, "resolved": _resolved(attack, out, args.attack), "slices": len(rows),
                   "volumes": len({r["volume"] for r in rows}), "mean": means(rows)}
        if hits.slices or hits.excluded:
            summary["hit_rate"] = {k: _finite_or_none(v) if isinstance(v, float) else v
                                   for k, v in hits.summary().__dict__.items()}
        summary["note"] = "means over slices of batch metrics (data range = volume max), not fastMRI volume metrics"
        summary["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
        atomic_write(staging / "metrics.csv", csv_text(rows))
        atomic_write(staging / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
        _write_panels(staging / "panels", [row for row, _ in worst], [crop for _, crop in worst], context)
    print(format_summary(summary))
    print(f"\nwrote {out}/: adversarial/ ({writer.written} fastMRI volume files), metrics.csv, "
          f"summary.json, panels/ ({len(worst)} figures)")
    return 0


def _damage(row: dict[str, Any]) -> float:
    """How badly a slice was hit: the criterion's score (fnaf) or the PSNR drop (perturbations)."""
    if "fnaf_score" in row:
        value = row["fnaf_score"]
    else:
        clean, attacked = row.get("clean_psnr"), row.get("attacked_psnr")
        value = None if clean is None or attacked is None else clean - attacked
    return -math.inf if value is None or math.isnan(value) else value


def _write_panels(directory: Path, rows: list[dict[str, Any]], crops: list[dict[str, Any]],
                  context: dict[str, Any]) -> None:
    from reconguard.report.figures import attack_panel

    directory.mkdir()
    for row, im in zip(rows, crops):
        stem = Path(row["volume"]).stem
        damage = (f"FNAF score {row['fnaf_score']:.3g}" if "fnaf_score" in row else f"PSNR drop {_damage(row):.2f} dB")
        title = f"{context['model']} | {context['attack']} {context['threat']} | {stem} slice {row['slice']} | {damage}"
        attack_panel(im["target"], im["clean"], im["attacked"], im.get("noise"), title=title,
                     path=directory / f"{stem}_{row['slice']}.png", data_range=float(im["max_value"]),
                     feature_mask=im.get("feature_mask"))


def _resolved(attack: Any, out: Path, name: str) -> dict[str, Any]:
    """The run directory, the attack's kind and (perturbations) its threat, loss and schedule."""
    resolved: dict[str, Any] = {"out": str(out), "kind": ATTACKS[name].kind}
    threat = attack.threat
    if threat is not None:
        resolved.update(domain=threat.domain, norm=threat.norm, relative=threat.relative, support=threat.support,
                        loss=attack.loss.kind, reference=attack.loss.reference,
                        **{k: getattr(attack, k) for k in ("steps", "step_size", "restarts") if hasattr(attack, k)})
    return resolved


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown table of the slice means: clean vs attacked (vs matched noise); fnaf hit rate."""
    from reconguard.metrics import METRICS
    from reconguard.report.tables import markdown_table, show

    mean = summary["mean"]
    conditions = [("clean", "clean"), ("attacked", "attacked"), ("noise", "matched noise"),
                  ("gaussian_noise", "Gaussian noise (max-matched)")]
    body = [(name, *(show(mean[f"{cond}_{m}"], metric.format) for m, metric in METRICS.items()))
            for cond, name in conditions if f"{cond}_psnr" in mean]
    if "hit_rate" in summary:
        stats = summary["hit_rate"]
        detail = (f"hit rate {show(stats['rate'], '{:.1%}')} ({stats['hits']}/{stats['slices']} slices, "
                  f"{stats['excluded']} excluded by the information check)")
    else:
        detail = (f"achieved relative norm {show(mean['attacked_relative_norm'], '{:.4g}')}; output change per "
                  f"input change {show(mean.get('attacked_gain'), '{:.3g}')} (matched noise: "
                  f"{show(mean.get('noise_gain'), '{:.3g}')})")
    head = (f"{summary['attack']} on {summary['model']}, {summary['threat']}, {summary['slices']} slices "
            f"({summary['volumes']} volumes); {detail}")
    header = ("input", *(f"{m.upper()} (dB)" if m == "psnr" else m.upper() for m in METRICS))
    return head + "\n\n" + markdown_table(header, body)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
