"""``reconguard attack``: attack a reconstructor on every slice of a data split, save the evidence.

The attacks and their defaults are the rows of :data:`reconguard.attacks.presets.ATTACKS`.
Perturbation attacks (PGD, FGSM, sparse spikes) report the
clean, attacked and same-norm-noise reconstructions; feature attacks (FNAF) report the clean and
featured reconstructions and whether the feature went missing. The run is built in a staging
directory and published in one rename (:func:`reconguard.files.atomic_directory`).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from reconguard.attacks.presets import ATTACKS, OPTIONS, attack_table
from reconguard.cli.options import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    add_device_option,
    add_sampling_options,
    check_device,
    integer,
    number,
)

METRICS = ("psnr", "ssim", "nmse")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard attack``."""
    parser = subparsers.add_parser(
        "attack",
        help="adversarially attack a reconstructor on a data split",
        description=_DESCRIPTION,
        epilog=attack_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = parser.add_argument
    arg("--model", required=True, help="checkpoint path (.safetensors with its .json) or a model name")
    arg("--data", required=True, help="data set directory")
    arg("--split", default="test", help="sub-directory to attack (default: test)")
    add_attack_options(parser)
    add_sampling_options(parser)
    arg("--max-slices", type=POSITIVE_INT, default=None, help="attack only the first N slices of the split")
    arg("--batch-size", type=POSITIVE_INT, default=4, help="slices per batch (default: 4)")
    arg("--panels", type=NON_NEGATIVE_INT, default=3, help="figures of the N most damaged slices (default: 3)")
    arg("--out", type=Path, default=None, help="run directory (default: runs/attack-<model>-<attack>-<eps>)")
    arg("--overwrite", action="store_true", help="replace an existing run directory")
    add_device_option(parser)
    arg("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def add_attack_options(parser: argparse.ArgumentParser) -> None:
    """``--attack`` and one flag per row of :data:`reconguard.attacks.presets.OPTIONS` (shared with
    ``reconguard defend`` and ``transfer``)."""
    parser.add_argument("--attack", default="pgd-kspace", metavar="|".join(ATTACKS),
                        help="attack (default: pgd-kspace)")
    for name, option in OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if option.kind is bool and option.off is not None:
            pair = parser.add_mutually_exclusive_group()
            pair.add_argument(flag, dest=name, action="store_true", default=True, help=f"{option.help} (default)")
            pair.add_argument(option.off[0], dest=name, action="store_false", help=option.off[1])
        elif option.kind is bool:
            parser.add_argument(flag, action="store_true", help=option.help)
        else:
            default = "per attack" if option.default is None else format(option.default, _FORMAT[option.kind])
            parser.add_argument(flag, type=_parser(option), default=option.default, metavar=option.metavar,
                                choices=option.choices, help=f"{option.help} (default: {default})")


_FORMAT = {int: "d", float: "g", str: ""}


def _parser(option: Any) -> Any:
    """The argparse ``type`` of an attack option: its kind and range."""
    if option.kind is int:
        return integer(int(option.low))
    if option.kind is float:
        return number(option.low, strict=option.strict, high=option.high)
    return option.kind


_DESCRIPTION = """\
Attack every slice of DATA/SPLIT (masks fixed per volume, as in evaluation) and write to OUT:
  adversarial/<volume>.h5  attacked under-sampled k-space in fastMRI format (with the target and
                           the sampling mask; readable by any fastMRI loader)
  metrics.csv              one row per slice: PSNR/SSIM/NMSE of the clean and attacked (and, for
                           perturbations, same-norm random-noise) reconstructions; budget used,
                           loss, time; for fnaf the hit and feature losses
  summary.json             means over slices (fnaf: the hit rate) and the options of the run
  panels/                  figures of the most damaged slices (largest PSNR drop; fnaf: largest
                           missing-feature MSE, the feature outlined)
and print the means as a Markdown table. OUT is written to a staging directory and renamed into
place when complete."""


def make_attack(args: argparse.Namespace) -> Any:
    """The attack named by ``--attack``, with the command line's options (see :func:`build_attack`)."""
    from reconguard.attacks.presets import OPTIONS, build_attack

    return build_attack(args.attack, **{key: getattr(args, key) for key in OPTIONS})


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard attack``."""
    from torch.utils.data import DataLoader, Subset

    from reconguard.cli.rundir import check_out
    from reconguard.data import Sample, SliceDataset
    from reconguard.data.writer import VolumeWriter
    from reconguard.files import atomic_directory, atomic_write
    from reconguard.models import load
    from reconguard.physics.masks import build_mask
    from reconguard.report.tables import csv_text

    check_device(args.device)
    attack = make_attack(args)
    kind = ATTACKS[args.attack].kind
    mask_fn = build_mask(args.mask, acceleration=args.acceleration, center_fraction=args.center_fraction)
    dataset = SliceDataset(Path(args.data) / args.split)
    model = load(args.model).to(args.device)
    label = model_label(args.model)
    threat = attack.threat.label if kind == "perturbation" else f"{args.attack}(n={args.feature_size})"
    eps = attack.threat.eps if kind == "perturbation" else None
    out = args.out or Path(f"runs/attack-{label}-{args.attack}" + (f"-{eps:g}" if eps is not None else ""))
    check_out(out, args.overwrite)
    count = len(dataset) if args.max_slices is None else min(args.max_slices, len(dataset))
    loader = DataLoader(Subset(dataset, range(count)), batch_size=args.batch_size, collate_fn=Sample.collate)
    context = {"model": label, "attack": args.attack, "threat": threat, "eps": eps}
    with atomic_directory(out) as staging:
        writer = VolumeWriter(staging / "adversarial", dataset.volumes,
                              {f"reconguard_{k}": v for k, v in context.items() if v is not None})
        rows, worst, extra = _attack_split(args, kind, attack, model, loader, mask_fn, writer, context, count)
        summary = _summarize(rows, args, context, attack, out, kind, extra)
        atomic_write(staging / "metrics.csv", csv_text(rows))
        atomic_write(staging / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
        _write_panels(staging / "panels", worst, context)
    print(format_summary(summary))
    print(f"\nwrote {out}/: adversarial/ ({writer.written} fastMRI volume files), metrics.csv, "
          f"summary.json, panels/ ({len(worst)} figures)")
    return 0


def _attack_split(args, kind, attack, model, loader, mask_fn, writer, context, count):
    """Attack every batch; write attacked volumes as they complete; return rows, worst slices, extra."""
    from tqdm.auto import tqdm

    from reconguard.attacks import HitCounter

    worst, rows, hits = _WorstSlices(args.panels), [], HitCounter()
    with tqdm(total=count, desc=args.attack, unit="slice", disable=args.quiet, leave=False) as bar:
        for batch in loader:
            batch = batch.to(args.device)
            masked_kspace, mask = batch.undersample(mask_fn)
            if kind == "feature":
                result = attack(model, batch.kspace, mask, coil_maps=batch.coil_maps, max_value=batch.max_value)
                hits.add(result)
                new_rows, images, attacked = _feature_rows(batch, result, context)
            else:
                result = attack(model, masked_kspace, mask, target=batch.target, coil_maps=batch.coil_maps,
                                max_value=batch.max_value)
                new_rows, images, attacked = _perturbation_rows(batch, masked_kspace, mask, result, context)
            writer.add(replace(attacked, mask=mask.expand(len(batch), *mask.shape[1:])))
            for row, image in zip(new_rows, images):
                worst.offer(_damage(row), row, image)
            rows += new_rows
            bar.update(len(batch))
            drop = sum(r["psnr_clean"] - r["psnr_attacked"] for r in rows) / len(rows)
            bar.set_postfix(psnr_drop=f"{drop:.2f}dB")
    writer.flush()
    return rows, worst.items(), {"hit_rate": hits.summary().__dict__} if kind == "feature" else {}


def _damage(row: dict[str, Any]) -> float:
    """How badly a slice was hit: the missing-feature MSE (fnaf) or the PSNR drop (perturbations)."""
    return row["feature_loss"] if "feature_loss" in row else row["psnr_clean"] - row["psnr_attacked"]


def metric_values(target, peak, images: dict[str, Any]) -> dict[str, Any]:
    """``{"<metric>_<condition>": (B,)}`` for every image of ``images``."""
    from reconguard.metrics import slice_metrics

    scores = {condition: slice_metrics(target, image, data_range=peak) for condition, image in images.items()}
    return {f"{metric}_{condition}": scores[condition][metric] for metric in METRICS for condition in scores}


def artefact_values(error, reference) -> dict[str, Any]:
    """What the attack's error map looks like (:func:`reconguard.metrics.describe_artefact`), per slice."""
    from reconguard.metrics.artefacts import SHAPE_DESCRIPTORS, describe_artefact

    described = describe_artefact(error, reference)
    return {f"artefact_{k}": described[k] for k in SHAPE_DESCRIPTORS}


def _perturbation_rows(batch, masked_kspace, mask, result, context):
    """Tidy metric rows of one batch, the cropped images for the panels, and the attacked batch."""
    from reconguard.metrics import magnitude

    target, peak = batch.target, batch.max_value
    recons = {"clean": result.clean_recon, "attacked": result.recon, "noise": result.noise_recon}
    images = {name: magnitude(recon, target) for name, recon in recons.items()}
    if result.threat.norm == "l0":  # a count: relative to the number of acquired samples
        scale = mask.expand_as(masked_kspace).flatten(1).sum(dim=1).to(result.norm.dtype)
    else:  # the budget of eps = 1, relative: ||y||, max|A^H y|, ... whatever the threat refers to
        unit = replace(result.threat, eps=1.0, relative=True)
        scale = unit.budget(masked_kspace, mask, coil_maps=batch.coil_maps, target=target).flatten(1)[:, 0]
    values = {"norm": result.norm, "budget": result.budget.flatten(1)[:, 0], "relative_norm": result.norm / scale}
    values.update(metric_values(target, peak, images))
    values.update(loss=result.loss, noise_loss=result.noise_loss, clean_loss=result.clean_loss)
    values.update(artefact_values(images["attacked"] - images["clean"], target))
    rows, crops = _rows(batch, values, context, result.seconds), _crops(batch, images, target)
    return rows, crops, replace(batch, kspace=result.adv_kspace)


def _feature_rows(batch, result, context):
    """Rows of an FNAF batch: clean vs featured reconstruction, hit and feature losses."""
    from reconguard.metrics import magnitude
    from reconguard.physics.operators import center_crop

    featured = center_crop(result.target, batch.target.shape[-2:])
    clean, attacked = magnitude(result.clean_recon, batch.target), magnitude(result.recon, featured)
    values = metric_values(batch.target, batch.max_value, {"clean": clean})
    values.update(metric_values(featured, batch.max_value, {"attacked": attacked}))
    for name in ("hit", "accepted", "feature_loss", "region_loss", "control_region_loss", "information", "rejected"):
        values[name] = getattr(result, name)
    rows = _rows(batch, values, context, result.seconds)
    crops = _crops(batch, {"clean": clean, "attacked": attacked}, featured)
    for crop, mask in zip(crops, center_crop(result.feature_mask, batch.target.shape[-2:])):
        crop["feature_mask"] = mask[0].cpu()
    return rows, crops, replace(batch, kspace=result.adv_kspace, target=featured)


def _rows(batch, values, context, seconds):
    rows = []
    for i in range(len(batch)):
        row = {"volume": batch.fname[i], "slice": batch.slice_idx[i], **context}
        row.update({key: _scalar(value[i]) for key, value in values.items()})
        row["seconds"] = seconds / len(batch)
        rows.append(row)
    return rows


def _scalar(value: Any) -> float | int | bool:
    item = value.item()
    return item if isinstance(item, (bool, int)) else float(item)


def _crops(batch, images, target):
    return [
        {"target": target[i, 0].cpu(), **{k: v[i, 0].cpu() for k, v in images.items()},
         "max_value": float(batch.max_value[i])}
        for i in range(len(batch))
    ]


class _WorstSlices:
    """The ``n`` slices with the largest PSNR drop seen so far (a min-heap on the drop)."""

    def __init__(self, n: int):
        self.n, self.heap, self.counter = n, [], 0

    def offer(self, drop: float, row: dict[str, Any], images: dict[str, Any]) -> None:
        self.counter += 1
        item = (-math.inf if math.isnan(drop) else drop, -self.counter, row, images)
        if len(self.heap) < self.n:
            heapq.heappush(self.heap, item)
        elif self.n and item[:2] > self.heap[0][:2]:
            heapq.heapreplace(self.heap, item)

    def items(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(row, images) for *_, row, images in sorted(self.heap, reverse=True)]


def _write_panels(directory: Path, worst: list, context: dict[str, Any]) -> None:
    from reconguard.report.figures import attack_panel

    directory.mkdir()
    for row, im in worst:
        stem = Path(row["volume"]).stem
        damage = (f"missing-feature MSE {row['feature_loss']:.2e}" if "feature_loss" in row
                  else f"PSNR drop {_damage(row):.2f} dB")
        title = f"{context['model']} | {context['attack']} {context['threat']} | {stem} slice {row['slice']} | {damage}"
        attack_panel(im["target"], im["clean"], im["attacked"], im.get("noise"), title=title,
                     path=directory / f"{stem}_{row['slice']}.png", data_range=im["max_value"],
                     feature_mask=im.get("feature_mask"))


def _summarize(rows, args, context, attack, out, kind, extra) -> dict[str, Any]:
    numeric = [k for k, v in rows[0].items() if isinstance(v, float) and k not in ("eps",)]
    mean = {key: _finite_or_none(sum(float(r[key]) for r in rows) / len(rows)) for key in numeric}
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    resolved: dict[str, Any] = {"out": str(out), "kind": kind}
    if kind == "perturbation":
        threat = attack.threat
        resolved.update(domain=threat.domain, norm=threat.norm, relative=threat.relative, support=threat.support,
                        loss=attack.loss.kind, reference=attack.loss.reference,
                        **{k: getattr(attack, k) for k in ("steps", "step_size", "restarts") if hasattr(attack, k)})
    return {
        **context,
        "resolved": resolved,
        "slices": len(rows),
        "volumes": len({r["volume"] for r in rows}),
        "mean": mean,
        **{k: {n: _finite_or_none(v) if isinstance(v, float) else v for n, v in e.items()} for k, e in extra.items()},
        "note": "means over slices of batch metrics (data range = volume max), not fastMRI volume metrics",
        "options": options,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown table of the slice means: clean vs attacked (vs same-norm noise); fnaf hit rate."""
    from reconguard.report.tables import markdown_table, show

    mean = summary["mean"]
    fmt = {"psnr": "{:.2f}", "ssim": "{:.4f}", "nmse": "{:.4f}"}
    conditions = [("clean", "clean"), ("attacked", "attacked"), ("noise", "same-norm noise")]
    body = [
        (name, *(show(mean[f"{m}_{cond}"], fmt[m]) for m in METRICS))
        for cond, name in conditions
        if f"psnr_{cond}" in mean
    ]
    if "hit_rate" in summary:
        stats = summary["hit_rate"]
        detail = (f"hit rate {show(stats['rate'], '{:.1%}')} ({stats['hits']}/{stats['slices']} slices, "
                  f"{stats['excluded']} excluded by the information check)")
    else:
        detail = f"achieved relative norm {show(mean['relative_norm'], '{:.4g}')}"
    head = (f"{summary['attack']} on {summary['model']}, {summary['threat']}, {summary['slices']} slices "
            f"({summary['volumes']} volumes); {detail}")
    return head + "\n\n" + markdown_table(("input", "PSNR (dB)", "SSIM", "NMSE"), body)


def model_label(spec: str) -> str:
    """Short name of a model for file names: the registered name, or the checkpoint's stem
    (prefixed with its directory for generic stems such as ``best``)."""
    from reconguard.models.registry import MODELS

    if spec in MODELS:
        return spec
    path = Path(spec)
    stem = path.with_suffix("").name if path.suffix in (".safetensors", ".json") else path.name
    return f"{path.parent.name}-{stem}" if stem in ("best", "last") and path.parent.name else stem


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
