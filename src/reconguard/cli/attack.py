"""``reconguard attack``: attack a reconstructor on every slice of a data split, save the evidence.

Every attack is one row of :data:`ATTACKS` (domain, default norm/budget/steps, literature source
and a builder); adding an attack (``sparse-kspace``, ``fnaf``) means adding one row. The run is
built in a hidden staging directory next to ``--out`` and renamed into place only when complete,
so an error or Ctrl-C never leaves a half-written run behind.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from reconguard.cli.options import add_sampling_options
from reconguard.errors import ConfigError


@dataclass(frozen=True)
class AttackPreset:
    """Defaults of one ``--attack`` choice.

    Attributes:
        domain: Threat domain (``"kspace"`` or ``"image"``).
        norm: Default norm; ``norms`` lists the ones allowed.
        eps: Default budget (relative unless ``--absolute``).
        build: ``(threat, loss, *, seed, **iteration options) -> Attack``.
        steps: Default iterations; ``None`` for one-shot attacks (they refuse iteration options).
        step_size: Default step as a fraction of the budget (``None``: the attack's own default).
        about: One-line description with the source of the defaults (shown in ``--help``).
    """

    domain: str
    norm: str
    eps: float
    build: Callable[..., Any]
    steps: int | None = None
    step_size: float | None = None
    norms: tuple[str, ...] = ("l2", "linf")
    about: str = ""


def _pgd(threat, loss, *, seed, steps, step_size, restarts):
    from reconguard.attacks import PGD

    return PGD(threat, loss, steps=steps, step_size=step_size, restarts=restarts, seed=seed)


def _fgsm(threat, loss, *, seed):
    from reconguard.attacks import fgsm

    if loss.reference == "clean":  # delta = 0 minimises the distance to the clean recon: zero gradient
        raise ConfigError("FGSM starts at delta = 0, where the --unsupervised loss has zero gradient; use PGD")
    return fgsm(threat, loss, seed=seed)


_KSPACE_SOURCE = "Darestani et al. arXiv:2102.06103 and Genzel et al. arXiv:2011.04268 use ~0.01-0.08"
ATTACKS: dict[str, AttackPreset] = {
    "pgd-kspace": AttackPreset(
        "kspace", "l2", 0.02, _pgd, steps=10,
        about=f"PGD on the acquired k-space samples, ||delta|| <= eps ||y|| per slice, steps of "
        f"2.5/steps of the budget (Madry et al.); {_KSPACE_SOURCE}",
    ),
    "pgd-image": AttackPreset(
        "image", "linf", 0.01, _pgd, steps=10, step_size=0.2,
        about="PGD on the zero-filled image, |delta| <= eps max|A^H y|, steps of eps/5; "
        "Saberi, Zhang, Akcakaya arXiv:2501.01908",
    ),
    "fgsm-kspace": AttackPreset(
        "kspace", "l2", 0.02, _fgsm,
        about="one full-budget normalised-gradient step, pgd-kspace's budget (Goodfellow et al. arXiv:1412.6572)",
    ),
    "fgsm-image": AttackPreset(
        "image", "linf", 0.01, _fgsm,
        about="one full-budget gradient-sign step, pgd-image's budget (Goodfellow et al. arXiv:1412.6572)",
    ),
}
METRICS = ("psnr", "ssim", "nmse")
CONDITIONS = ("clean", "attacked", "noise")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard attack``."""
    parser = subparsers.add_parser(
        "attack",
        help="adversarially attack a reconstructor on a data split",
        description=_DESCRIPTION,
        epilog=_attack_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = parser.add_argument
    arg("--model", required=True, help="checkpoint path (.safetensors with its .json) or a model name")
    arg("--data", required=True, help="data set directory")
    arg("--split", default="test", help="sub-directory to attack (default: test)")
    arg("--attack", default="pgd-kspace", metavar="|".join(ATTACKS), help="attack (default: pgd-kspace)")
    arg("--eps", type=float, default=None, help="budget (default: per attack, see below)")
    arg("--norm", default=None, metavar="l2|linf", help="budget norm (default: per attack)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--relative", dest="relative", action="store_true", default=True,
                       help="eps relative to the measurement (default; see the attacks below)")
    scale.add_argument("--absolute", dest="relative", action="store_false", help="eps in raw data units")
    arg("--steps", type=int, default=None, help="iterations (default: per attack)")
    arg("--step-size", type=float, default=None, help="step as a fraction of the budget (default: per attack)")
    arg("--restarts", type=int, default=None, help="random restarts, best kept per slice (default: 1)")
    arg("--loss", default="mse", metavar="mse|l1|ssim", help="attack objective (default: mse)")
    arg("--unsupervised", action="store_true", help="maximise the distance to the clean recon, not the target")
    arg("--seed", type=int, default=0, help="seed of random starts and the noise baseline (default: 0)")
    add_sampling_options(parser)
    arg("--max-slices", type=int, default=None, help="attack only the first N slices of the split")
    arg("--batch-size", type=int, default=4, help="slices per batch (default: 4)")
    arg("--panels", type=int, default=3, help="figures of the N slices with the largest PSNR drop (default: 3)")
    arg("--out", type=Path, default=None, help="run directory (default: runs/attack-<model>-<attack>-<eps>)")
    arg("--overwrite", action="store_true", help="replace an existing run directory")
    arg("--device", default="cpu", help="cpu or cuda (default: cpu)")
    arg("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


_DESCRIPTION = """\
Attack every slice of DATA/SPLIT (masks fixed per volume, as in evaluation) and write to OUT:
  adversarial/<volume>.h5  adversarial under-sampled k-space in fastMRI format (with the target
                           and the sampling mask; readable by any fastMRI loader)
  metrics.csv              one row per slice: PSNR/SSIM/NMSE of the clean, attacked and
                           same-norm random-noise reconstructions, achieved norm, loss, time
  summary.json             means over slices and the options of the run
  panels/                  figures of the slices with the largest PSNR drop
and print the means as a Markdown table. OUT is written to a staging directory and renamed into
place when complete."""


def _attack_table() -> str:
    import textwrap

    lines = ["attacks (defaults; --norm, --eps, --steps, --step-size, --restarts override them):"]
    for name, p in ATTACKS.items():
        steps = f"{p.steps} steps" if p.steps else "1 step"
        text = f"{p.domain} {p.norm}, eps {p.eps:g} (relative), {steps}: {p.about}"
        lines.append(textwrap.fill(text, 96, initial_indent=f"  {name:<13}", subsequent_indent=" " * 15,
                                   break_on_hyphens=False))
    return "\n".join(lines)


def make_attack(args: argparse.Namespace) -> Any:
    """Build the attack named by ``args.attack`` from its preset and the overriding options.

    Raises:
        ConfigError: Unknown attack/norm/loss, eps < 0, or options the attack does not take.
    """
    from reconguard.attacks import AttackLoss, ThreatModel

    preset = ATTACKS.get(args.attack)
    if preset is None:
        raise ConfigError(f"unknown attack {args.attack!r}; choose one of {list(ATTACKS)}")
    norm = args.norm or preset.norm
    if norm not in preset.norms:
        raise ConfigError(f"--norm {norm!r} is not available for {args.attack}; choose one of {list(preset.norms)}")
    eps = preset.eps if args.eps is None else args.eps
    threat = ThreatModel(domain=preset.domain, norm=norm, eps=eps, relative=args.relative)
    loss = AttackLoss(kind=args.loss, reference="clean" if args.unsupervised else "target")
    given = {"steps": args.steps, "step_size": args.step_size, "restarts": args.restarts}
    if preset.steps is None:
        used = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if used:
            raise ConfigError(f"{args.attack} takes one full-budget step; {', '.join(used)} do not apply")
        return preset.build(threat, loss, seed=args.seed)
    options = {"steps": preset.steps, "step_size": preset.step_size, "restarts": 1}
    options.update({k: v for k, v in given.items() if v is not None})
    return preset.build(threat, loss, seed=args.seed, **options)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard attack``."""
    from torch.utils.data import DataLoader, Subset

    from reconguard.data import Sample, SliceDataset
    from reconguard.models import load
    from reconguard.physics.masks import build_mask

    for name in ("batch_size", "max_slices"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.panels < 0:
        raise ConfigError(f"--panels must be >= 0, got {args.panels}")
    _check_device(args.device)
    attack = make_attack(args)
    mask_fn = build_mask(args.mask, acceleration=args.acceleration, center_fraction=args.center_fraction)
    dataset = SliceDataset(Path(args.data) / args.split)
    model = load(args.model).to(args.device)
    label = model_label(args.model)
    out = args.out or Path(f"runs/attack-{label}-{args.attack}-{attack.threat.eps:g}")
    _check_out(out, args.overwrite)
    count = len(dataset) if args.max_slices is None else min(args.max_slices, len(dataset))
    loader = DataLoader(Subset(dataset, range(count)), batch_size=args.batch_size, collate_fn=Sample.collate)
    context = {"model": label, "attack": args.attack, "threat": attack.threat.label, "eps": attack.threat.eps}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        rows, worst = _attack_split(args, attack, model, loader, mask_fn, dataset, staging, context, count)
        summary = _summarize(rows, args, context, attack, out)
        _write_text(staging / "metrics.csv", _csv(rows))
        _write_text(staging / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
        _write_panels(staging / "panels", worst, context, attack.threat.label)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(format_summary(summary))
    print(f"\nwrote {out}/: adversarial/ ({summary['volumes']} fastMRI volume files), metrics.csv, "
          f"summary.json, panels/ ({len(worst)} figures)")
    return 0


def _attack_split(args, attack, model, loader, mask_fn, dataset, staging, context, count):
    """Attack every batch; write adversarial volumes as they complete; return rows and worst slices."""
    from tqdm.auto import tqdm

    writer = _VolumeWriter(staging / "adversarial", dataset, context)
    worst = _WorstSlices(args.panels)
    rows: list[dict[str, Any]] = []
    total_drop = 0.0
    with tqdm(total=count, desc=args.attack, unit="slice", disable=args.quiet, leave=False) as bar:
        for batch in loader:
            batch = batch.to(args.device)
            masked_kspace, mask = batch.undersample(mask_fn)
            result = attack(model, masked_kspace, mask, target=batch.target, coil_maps=batch.coil_maps,
                            max_value=batch.max_value)
            new_rows, images = _slice_rows(batch, masked_kspace, mask, result, context)
            rows += new_rows
            writer.add(batch, result.adv_kspace, mask)
            for row, image in zip(new_rows, images):
                drop = row["psnr_clean"] - row["psnr_attacked"]
                worst.offer(drop, row, image)
                total_drop += drop
            bar.update(len(batch))
            bar.set_postfix(psnr_drop=f"{total_drop / len(rows):.2f}dB")
    writer.flush()
    return rows, worst.items()


def _slice_rows(batch, masked_kspace, mask, result, context):
    """Tidy metric rows of one batch, and the cropped magnitude images for the panels."""
    from reconguard.metrics import nmse, psnr, ssim
    from reconguard.training.evaluation import magnitude

    target, peak = batch.target, batch.max_value
    recons = {"clean": result.clean_recon, "attacked": result.recon, "noise": result.noise_recon}
    images = {name: magnitude(recon, target) for name, recon in recons.items()}
    if result.threat.norm == "l0":  # a count: relative to the number of acquired samples
        scale = mask.expand_as(masked_kspace).flatten(1).sum(dim=1).to(result.norm.dtype)
    else:  # the budget of eps = 1, relative: ||y||, max|A^H y|, ... whatever the threat refers to
        unit = replace(result.threat, eps=1.0, relative=True)
        scale = unit.budget(masked_kspace, mask, coil_maps=batch.coil_maps, target=target).flatten(1)[:, 0]
    values = {"norm": result.norm, "budget": result.budget.flatten(1)[:, 0], "relative_norm": result.norm / scale}
    metrics = {
        "psnr": lambda image: psnr(target, image, data_range=peak, reduction="none"),
        "ssim": lambda image: ssim(target, image, data_range=peak, reduction="none"),
        "nmse": lambda image: nmse(target, image, reduction="none"),
    }
    values.update({f"{m}_{c}": metrics[m](images[c]) for m in METRICS for c in CONDITIONS})
    values.update(loss=result.loss, noise_loss=result.noise_loss, clean_loss=result.clean_loss)
    rows, crops = [], []
    for i in range(len(batch)):
        row = {"volume": batch.fname[i], "slice": batch.slice_idx[i], **context}
        row.update({key: float(value[i]) for key, value in values.items()})
        row["seconds"] = result.seconds / len(batch)
        rows.append(row)
        crops.append({"target": target[i, 0].cpu(), **{k: v[i, 0].cpu() for k, v in images.items()},
                      "max_value": float(peak[i])})
    return rows, crops


class _VolumeWriter:
    """Collects adversarial slices per volume; writes each volume once all its slices are in."""

    def __init__(self, directory: Path, dataset: Any, context: dict[str, Any]):
        self.directory, self.context = directory, context
        self.infos = {info.fname: info for info in dataset.volumes}
        self.parts: dict[str, list[Any]] = {}
        directory.mkdir()

    def add(self, batch: Any, adv_kspace: Any, mask: Any) -> None:
        adversarial = replace(batch, kspace=adv_kspace, mask=mask.expand(len(batch), *mask.shape[1:])).to("cpu")
        for i, name in enumerate(batch.fname):
            self.parts.setdefault(name, []).append(_take(adversarial, i))
        for name in [n for n in self.parts if n != batch.fname[-1]]:  # slices come in volume order
            self._write(name, self.parts.pop(name))

    def flush(self) -> None:
        for name in list(self.parts):
            self._write(name, self.parts.pop(name))

    def _write(self, name: str, slices: list[Any]) -> None:
        from reconguard.data import Sample, write_volume

        info = self.infos[name]
        volume = Sample.collate(sorted(slices, key=lambda s: s.slice_idx))
        line_mask = volume.mask.shape[-2] == 1 and bool((volume.mask == volume.mask[:1]).all())
        attrs = {k: v for k, v in info.attrs.items() if k != "norm"}  # norm: of the slices written
        attrs.update({f"reconguard_{k}": v for k, v in self.context.items()})
        slices = ",".join(map(str, volume.slice_idx))  # indices in the source volume
        attrs.update(max=float(volume.max_value[0]), source_file=str(info.path), slices=slices)
        if not line_mask:
            attrs["mask_note"] = "2-D mask not storable in fastMRI format; k-space is zero where not acquired"
        path = write_volume(
            self.directory / name,
            kspace=volume.kspace if info.multicoil else volume.kspace[:, 0],
            target=volume.target[:, 0] if info.target_key else None,
            coil_maps=volume.coil_maps,
            mask=volume.mask[0].reshape(-1) if line_mask else None,
            recon_size=info.recon_size,
            attrs=attrs,
        )
        os.chmod(path, 0o644)  # write_volume's temporary file is 0600; results are meant to be shared


def _take(batch: Any, i: int) -> Any:
    """Slice ``i`` of a :class:`Sample` batch, as a batch of one."""
    tensors = {k: v[i : i + 1] for k, v in vars(batch).items() if hasattr(v, "shape")}
    return replace(batch, **tensors, fname=batch.fname[i : i + 1], slice_idx=batch.slice_idx[i : i + 1])


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


def _write_panels(directory: Path, worst: list, context: dict[str, Any], threat: str) -> None:
    from reconguard.report.figures import attack_panel

    directory.mkdir()
    for row, im in worst:
        stem = Path(row["volume"]).stem
        title = (f"{context['model']} | {context['attack']} {threat} | {stem} slice {row['slice']} | "
                 f"PSNR drop {row['psnr_clean'] - row['psnr_attacked']:.2f} dB")
        attack_panel(im["target"], im["clean"], im["attacked"], im["noise"], title=title,
                     path=directory / f"{stem}_{row['slice']}.png", data_range=im["max_value"])


def _summarize(rows: list[dict[str, Any]], args: argparse.Namespace, context: dict[str, Any], attack: Any,
               out: Path) -> dict[str, Any]:
    keys = [f"{m}_{c}" for m in METRICS for c in CONDITIONS] + ["relative_norm", "norm", "loss", "noise_loss",
                                                                 "seconds"]
    mean = {key: _finite_or_none(sum(r[key] for r in rows) / len(rows)) for key in keys}
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    threat = attack.threat
    resolved = {"domain": threat.domain, "norm": threat.norm, "relative": threat.relative, "support": threat.support,
                "loss": attack.loss.kind, "reference": attack.loss.reference, "out": str(out),
                **{k: getattr(attack, k) for k in ("steps", "step_size", "restarts") if hasattr(attack, k)}}
    return {
        **context,
        "resolved": resolved,
        "slices": len(rows),
        "volumes": len({r["volume"] for r in rows}),
        "mean": mean,
        "note": "means over slices of batch metrics (data range = volume max), not fastMRI volume metrics",
        "options": options,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown table of the slice means: clean vs attacked vs same-norm noise."""
    mean = summary["mean"]
    fmt = {"psnr": "{:.2f}", "ssim": "{:.4f}", "nmse": "{:.4f}"}
    lines = [
        f"{summary['attack']} on {summary['model']}, {summary['threat']}, {summary['slices']} slices "
        f"({summary['volumes']} volumes); achieved relative norm {_show(mean['relative_norm'], '{:.4g}')}",
        "",
        "| input | PSNR (dB) | SSIM | NMSE |",
        "|---|---:|---:|---:|",
    ]
    for cond, name in zip(CONDITIONS, ("clean", "attacked", "same-norm noise")):
        cells = " | ".join(_show(mean[f"{m}_{cond}"], fmt[m]) for m in METRICS)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def model_label(spec: str) -> str:
    """Short name of a model for file names: the registered name, or the checkpoint's stem
    (prefixed with its directory for generic stems such as ``best``)."""
    from reconguard.models.registry import MODELS

    if spec in MODELS:
        return spec
    path = Path(spec)
    stem = path.with_suffix("").name if path.suffix in (".safetensors", ".json") else path.name
    return f"{path.parent.name}-{stem}" if stem in ("best", "last") and path.parent.name else stem


def _check_device(device: str) -> None:
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} already holds a run; pass --overwrite to replace it")


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished staging directory into place (the old run is removed only afterwards)."""
    os.chmod(staging, 0o755)  # mkdtemp makes 0700 directories
    if not out.exists():
        os.replace(staging, out)
        return
    trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    try:
        os.replace(out, trash / "run")
        try:
            os.replace(staging, out)
        except BaseException:
            os.replace(trash / "run", out)  # put the old run back
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _show(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)
