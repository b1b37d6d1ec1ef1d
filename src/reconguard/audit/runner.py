"""Run an audit: prepare data and models, then every pending work unit of the matrix.

A work unit is one cell x one fixed batch of slices (slices ``[b * batch_size, (b + 1) * batch_size)``
of the split). Every random choice inside a unit is seeded by the cell (attack seed) and the
slice's volume (sampling mask), never by which process or which invocation runs it, so a unit's
records are the same whether it runs alone, after a resume, or on rank 3 of a torchrun job.

Conditions recorded per slice (metrics psnr, ssim, nmse unless said otherwise):

- perturbation cells: ``clean``, ``attacked``, ``noise`` (same-norm Gaussian noise); with a
  defense, ``clean`` and ``noise`` go through the defense, ``attacked`` is the *adaptive* attack on
  the defended pipeline (PGD through it, BPDA with the undefended model when it is not
  differentiable, EOT when it is random), and ``nonadaptive`` is the attack crafted on the bare
  model, then defended;
- transfer cells (``source != model``): the surrogate's perturbation on the target;
- feature cells (FNAF): ``clean``, and ``fnaf`` with metrics ``feature_loss``, ``hit``, ``accepted``;
- every cell also records ``zero_filled``: zero-filling of the same under-sampled k-space (the
  baseline of the report's quality gate);
- defended perturbation cells whose defense has a calibrated detector (the cyclic defense) record
  ``detector_score`` and ``flagged`` (1 if the score exceeds the threshold) under ``clean``,
  ``attacked`` and ``nonadaptive``: the detector on each input;
- every perturbation cell also records ``artefact`` metrics of the error map attacked - clean
  (``spectral_flatness``, ``neighbour_correlation``, ``edge_correlation``;
  :func:`reconguard.metrics.describe_artefact`): noise-like vs anatomy-like damage.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from reconguard import __version__
from reconguard.attacks import BPDA
from reconguard.attacks.transfer import transfer
from reconguard.audit import claims, distributed, preparation
from reconguard.audit.cells import Cell, build_attack, expand
from reconguard.audit.config import AuditConfig
from reconguard.audit.store import Store, Unit
from reconguard.data import Sample, SliceDataset
from reconguard.defenses import build_defense
from reconguard.metrics import magnitude, slice_metrics
from reconguard.metrics.artefacts import SHAPE_DESCRIPTORS, describe_artefact
from reconguard.models import build, load, load_fastmri
from reconguard.models.zero_filled import zero_filled
from reconguard.physics.masks import build_mask
from reconguard.physics.operators import center_crop

METRICS = ("psnr", "ssim", "nmse")


@dataclass
class Workspace:
    """What a process needs to run units: data, loaded models and defenses (built once, cached)."""

    config: AuditConfig
    device: str
    data_dir: Path
    model_paths: dict[str, Any]
    trainings: dict[str, dict[str, Any]] = field(default_factory=dict)  # how the train: models were trained
    _models: dict[str, Any] = field(default_factory=dict)
    _defenses: dict[tuple[str, str, float], Any] = field(default_factory=dict)
    _dataset: Any = None

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            self._dataset = SliceDataset(self.data_dir / self.config.data["split"])
        return self._dataset

    def count(self) -> int:
        """Slices audited: the split, or its first ``max_slices``."""
        limit = self.config.data["max_slices"]
        return len(self.dataset) if limit is None else min(limit, len(self.dataset))

    def mask_fn(self, acceleration: float) -> Any:
        sampling = self.config.sampling
        return build_mask(sampling["mask"], acceleration=acceleration, center_fraction=sampling["center_fraction"])

    def model(self, key: str) -> Any:
        if key not in self._models:
            spec, where = self.config.models[key], self.model_paths[key]
            if spec["kind"] == "fastmri":
                model = load_fastmri(where, spec["model"], **spec["config"])
            elif spec["kind"] == "name":
                with torch.random.fork_rng(devices=[]):  # same weights in every process and every run
                    torch.manual_seed(0)
                    model = build(spec["model"], **spec["config"])
            else:
                model = load(where)
            self._models[key] = model.to(self.device).eval()
        return self._models[key]

    def defense(self, model: str, name: str, acceleration: float) -> Any:
        """The defended model; a cyclic detector is calibrated once on clean slices of its split."""
        key = (model, name, acceleration)
        if key not in self._defenses:
            spec = self.config.defenses[name]
            defense = build_defense(spec["defense"], self.model(model), **spec["settings"])
            if spec["calibrate"] and hasattr(defense, "calibrated"):
                defense = defense.calibrated(self._calibration_batches(spec["calibrate"], acceleration))
            self._defenses[key] = defense
        return self._defenses[key]

    def _calibration_batches(self, split: str, acceleration: float) -> list[tuple]:
        dataset = SliceDataset(self.data_dir / split)
        count = min(len(dataset), 4 * self.config.batch_size)
        batches = []
        for start in range(0, count, self.config.batch_size):
            batch = Sample.collate([dataset[i] for i in range(start, min(count, start + self.config.batch_size))])
            batch = batch.to(self.device)
            batches.append((*batch.undersample(self.mask_fn(acceleration)), batch.coil_maps))
        return batches

    def batch(self, index: int) -> Any:
        size = self.config.batch_size
        slices = range(index * size, min(self.count(), (index + 1) * size))
        return Sample.collate([self.dataset[i] for i in slices]).to(self.device)


def run_unit(ws: Workspace, cell: Cell, index: int, rank: int) -> Unit:
    """Compute one work unit's records (and panels)."""
    start = time.perf_counter()
    batch = ws.batch(index)
    attack = build_attack(ws.config.attacks[cell.attack], eps=cell.eps, seed=cell.seed)
    model = ws.model(cell.model)
    defended = model if cell.defense == "none" else ws.defense(cell.model, cell.defense, cell.acceleration)
    through = defended if defended is model or defended.differentiable else BPDA(defended, model)
    for stochastic in {id(m): m for m in (model, defended, ws.model(cell.source))}.values():
        if hasattr(stochastic, "manual_seed"):  # random defenses/models: the unit's draws, whoever runs it
            stochastic.manual_seed(cell.seed * 1_000_003 + index)
    mask_fn = ws.mask_fn(cell.acceleration)
    if cell.eps is None:
        records, panels = _feature_unit(batch, mask_fn, attack, through)
    else:
        records, panels = _perturbation_unit(ws, cell, batch, mask_fn, attack, model, defended, through)
    return Unit(cell.cell_id, index, len(batch), time.perf_counter() - start, rank, tuple(records),
                panels if ws.config.panels else ())


def _feature_unit(batch, mask_fn, attack, through) -> tuple[list[tuple], tuple]:
    """FNAF: black-box feature search (through the defense, if any)."""
    masked_kspace, mask = batch.undersample(mask_fn)
    result = attack(through, batch.kspace, mask, coil_maps=batch.coil_maps, max_value=batch.max_value)
    featured = center_crop(result.target, batch.target.shape[-2:])
    images = {"clean": magnitude(result.clean_recon, batch.target), "attacked": magnitude(result.recon, featured)}
    records = _records(batch, {"clean": images["clean"], **_zero_filled(batch, masked_kspace)}, batch.target)
    records += _records(batch, {"attacked": images["attacked"]}, featured)
    values = {"feature_loss": result.feature_loss, "hit": result.hit, "accepted": result.accepted}
    records += _extra(batch, "fnaf", values)
    return records, _panels(batch, images, featured, center_crop(result.feature_mask, batch.target.shape[-2:]))


def _perturbation_unit(ws, cell, batch, mask_fn, attack, model, defended, through) -> tuple[list[tuple], tuple]:
    """PGD/FGSM/sparse: white-box (adaptive through a defense), or transfer from the cell's source."""
    masked_kspace, mask = batch.undersample(mask_fn)
    inputs = dict(target=batch.target, coil_maps=batch.coil_maps, max_value=batch.max_value)
    if cell.source != cell.model:
        result = _transfer(attack, ws.model(cell.source), model, masked_kspace, mask, inputs)
    else:
        result = attack(through, masked_kspace, mask, **inputs)
    recons = {"clean": result.clean_recon, "attacked": result.recon, "noise": result.noise_recon}
    if defended is not model:
        plain = attack(model, masked_kspace, mask, **inputs)
        with torch.no_grad():
            recons["nonadaptive"] = plain.replay(defended, mask, coil_maps=batch.coil_maps)
    images = {k: magnitude(v, batch.target) for k, v in recons.items()}
    described = describe_artefact(images["attacked"] - images["clean"], batch.target)
    records = _records(batch, {**images, **_zero_filled(batch, masked_kspace)}, batch.target)
    records += _extra(batch, "artefact", {k: described[k] for k in SHAPE_DESCRIPTORS})
    if defended is not model:
        records += _detector(batch, defended, mask, {"clean": masked_kspace, "attacked": result, "nonadaptive": plain})
    return records, _panels(batch, images, batch.target, None)


def _zero_filled(batch, masked_kspace) -> dict[str, torch.Tensor]:
    """Zero-filling of the same under-sampled k-space: the baseline of the report's quality gate."""
    return {"zero_filled": magnitude(zero_filled(masked_kspace, batch.coil_maps), batch.target)}


@torch.no_grad()
def _detector(batch, defended, mask, inputs: dict[str, Any]) -> list[tuple]:
    """``detector_score`` and ``flagged`` per slice and input, for a defense with a calibrated
    detector (the cyclic defense): flagged attacked inputs are true alarms, flagged clean ones false.
    Inputs are k-space or attack results; a network-input attack leaves k-space as it was, so its
    input is skipped."""
    threshold = getattr(defended, "threshold", None)
    if threshold is None or not callable(getattr(defended, "score", None)):
        return []
    rows = []
    for condition, item in inputs.items():
        if getattr(item, "input_delta", None) is not None:
            continue
        kspace = getattr(item, "adv_kspace", item)
        score = defended.score(kspace, mask, coil_maps=batch.coil_maps)
        rows += _extra(batch, condition, {"detector_score": score, "flagged": (score > threshold).float()})
    return rows


def _extra(batch, condition: str, values: dict[str, torch.Tensor]) -> list[tuple]:
    return [(batch.fname[i], int(batch.slice_idx[i]), condition, name, _finite(value[i]))
            for name, value in values.items() for i in range(len(batch))]


def _transfer(attack, surrogate, model, masked_kspace, mask, inputs):
    """The surrogate's perturbation (and its noise baseline) evaluated on ``model``."""
    outcome = transfer(attack, surrogate, {"target": model}, masked_kspace, mask, **inputs)["target"]
    return outcome  # has clean_recon, recon, noise_recon like an AttackResult


def _records(batch, images: dict[str, torch.Tensor], reference: torch.Tensor) -> list[tuple]:
    rows = []
    for condition, image in images.items():
        scores = slice_metrics(reference, image, data_range=batch.max_value)
        for metric in METRICS:
            rows += [(batch.fname[i], int(batch.slice_idx[i]), condition, metric, _finite(scores[metric][i]))
                     for i in range(len(batch))]
    return rows


def _finite(value: torch.Tensor) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


def _panels(batch, images, target, feature_mask) -> tuple:
    out = []
    for i in range(len(batch)):
        arrays = {"target": target[i, 0], **{k: v[i, 0] for k, v in images.items()}}
        panel = {k: v.detach().float().cpu().numpy() for k, v in arrays.items()}
        panel["max_value"] = np.asarray(float(batch.max_value[i]))
        if feature_mask is not None:
            panel["feature_mask"] = feature_mask[i, 0].float().cpu().numpy()
        out.append((batch.fname[i], int(batch.slice_idx[i]), panel))
    return tuple(out)


# -- preparation -------------------------------------------------------------------------------


def prepare(config: AuditConfig, world: distributed.World, device: str, *, progress: bool) -> Workspace:
    """Build the built-in data and train the config's ``train`` models (rank 0; the others wait)."""
    trainings: dict[str, dict[str, Any]] = {}
    if world.leader:
        preparation.build_data(config, progress=progress)
        trainings = preparation.train_models(config, device, progress=progress)
    distributed.barrier(world)
    return Workspace(config, device, preparation.data_directory(config), preparation.model_paths(config),
                     trainings=trainings)


# -- the loop ----------------------------------------------------------------------------------


def run_audit(config: AuditConfig, *, progress: bool = True, on_unit: Callable[[Unit], None] | None = None,
              lease: float = claims.LEASE_SECONDS) -> Store:
    """Run (or resume) an audit, or join the audit processes already working on ``config.output``.

    Args:
        config: A validated config.
        progress: Show a progress bar (all units, with the ones other processes finish).
        on_unit: Called on rank 0 after each unit this process committed (tests use it to interrupt a run).
        lease: Seconds a claimed unit stays reserved without renewal (:mod:`reconguard.audit.claims`).

    Returns:
        The store (complete on rank 0 once every unit of the matrix is done, by any process).
    """
    world, device = distributed.setup(config.device)
    try:
        store, run_id = None, 0
        if world.leader:
            preparation.check_inputs(config)  # before the output directory is touched
        cells = expand(config)  # from the config and the checked inputs; two keys sharing a model fail here
        with claims.preparation_lock(config.output) if world.leader else contextlib.nullcontext():
            if world.leader:
                claims.warn_if_network_filesystem(config.output)
            ws = prepare(config, world, device, progress=progress and world.leader)
            if world.leader:
                store = Store(config.output)
                store.add_cells(c.row() for c in cells)
                for key, info in ws.trainings.items():
                    store.record_training(key, info)
                run_id = store.start_run(config=config.as_dict(), versions=_versions(), git_revision=_git_revision(),
                                         device=device, world_size=world.size, host=platform.node(), started=_now())
        _execute(ws, cells, world, store, run_id, progress, on_unit, lease)
        if store is not None:
            store.finish_run(run_id, _now())
        distributed.barrier(world)
        return store or Store(config.output)
    finally:
        distributed.teardown()


def _execute(ws, cells, world, store, run_id, progress, on_unit, lease) -> None:
    """Claim units (rank 0 claims one per rank), compute them, commit them -- until every unit is done."""
    by_id = {c.cell_id: c for c in cells}
    batches = -(-ws.count() // ws.config.batch_size)
    plan = [(c.cell_id, b) for c in cells for b in range(batches)]
    bar = tqdm(total=len(plan), desc="audit", unit="unit", disable=not (progress and world.leader))
    worker = claims.Worker()
    with claims.Heartbeat(store, worker, lease) if store is not None else contextlib.nullcontext():
        while True:
            units = None if store is None else claims.next_units(store, plan, world.size, worker, lease, bar)
            units = distributed.broadcast(world, units)
            if not units:
                break
            mine = units[world.rank] if world.rank < len(units) else None
            unit = run_unit(ws, by_id[mine[0]], mine[1], world.rank) if mine is not None else None
            for item in distributed.gather(world, unit) or ():
                if item is not None and store.commit_unit(item, run_id) and on_unit is not None:
                    on_unit(item)
            cell = by_id[units[0][0]]
            bar.set_postfix_str(f"{cell.model}/{cell.defense}/{cell.attack}"
                                + ("" if cell.eps is None else f"/eps={cell.eps:g}"))
    bar.close()


def _versions() -> dict[str, str]:
    return {"reconguard": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}


def _git_revision() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
