"""Run an audit: prepare data and models, then every pending work unit of the matrix.

A work unit is one cell x one fixed batch of slices (slices ``[b * batch_size, (b + 1) * batch_size)``
of the split). Every random choice inside a unit is seeded by the cell (attack seed) and the
slice's volume (sampling mask), never by which process or which invocation runs it, so a unit's
records are the same whether it runs alone, after a resume, or on rank 3 of a torchrun job.

A unit is evaluated by :func:`reconguard.experiment.evaluate`; its records, conditions and
metrics are the ones listed there (and in docs/audit.md).
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
from reconguard.audit import claims, distributed, preparation
from reconguard.audit.cells import Cell, build_attack, expand
from reconguard.audit.config import AuditConfig
from reconguard.audit.store import Store, Unit
from reconguard.data import Sample, SliceDataset
from reconguard.defenses import build_defense
from reconguard.experiment import CraftedCache, Setup, calibrated, evaluate
from reconguard.models import build, load, load_fastmri
from reconguard.physics.masks import build_mask


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
    _attacks: dict[tuple[str, float | None, int], Any] = field(default_factory=dict)
    _masks: dict[float, Any] = field(default_factory=dict)
    _dataset: Any = None
    #: Attacks crafted in earlier units, reused by later ones: a bare model's attack by its defended
    #: cells, a surrogate's by its transfer cells (the same objects, so the same keys).
    crafted: CraftedCache = field(default_factory=CraftedCache)

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            self._dataset = SliceDataset(self.data_dir / self.config.data.split)
        return self._dataset

    def count(self, cell: Cell | None = None) -> int:
        """Slices audited (by ``cell``): the split, or its first ``max_slices`` (of the data, and of
        the cell's defense)."""
        limits = [len(self.dataset), self.config.data.max_slices]
        if cell is not None and cell.defense != "none":
            limits.append(self.config.defenses[cell.defense].max_slices)
        return min(limit for limit in limits if limit is not None)

    def mask_fn(self, acceleration: float) -> Any:
        if acceleration not in self._masks:
            sampling = self.config.sampling
            self._masks[acceleration] = build_mask(sampling.mask, acceleration=acceleration,
                                                   center_fraction=sampling.center_fraction)
        return self._masks[acceleration]

    def attack(self, cell: Cell) -> Any:
        key = (cell.attack, cell.eps, cell.seed)
        if key not in self._attacks:
            self._attacks[key] = build_attack(self.config.attacks[cell.attack], eps=cell.eps, seed=cell.seed)
        return self._attacks[key]

    def model(self, key: str) -> Any:
        if key not in self._models:
            spec, where = self.config.models[key], self.model_paths[key]
            if spec.kind == "fastmri":
                model = load_fastmri(where, spec.model, **spec.config)
            elif spec.kind == "name":
                with torch.random.fork_rng(devices=[]):  # same weights in every process and every run
                    torch.manual_seed(0)
                    model = build(spec.model, **spec.config)
            else:
                model = load(where)
            self._models[key] = model.to(self.device).eval()
        return self._models[key]

    def defense(self, model: str, name: str, acceleration: float) -> Any:
        """The defended model; a cyclic detector is calibrated once on clean slices of its split."""
        key = (model, name, acceleration)
        if key not in self._defenses:
            spec = self.config.defenses[name]
            if spec.weights is not None:
                weights = preparation.load_spec(spec.weights).to(self.device).eval()
                defense = build_defense(spec.defense, self.model(model), weights=weights)
            else:
                defense = build_defense(spec.defense, self.model(model), **spec.settings)
            if spec.calibrate:
                split, size = SliceDataset(self.data_dir / spec.calibrate), self.config.batch_size
                defense = calibrated(defense, split, self.mask_fn(acceleration), slices=4 * size, batch_size=size,
                                     device=self.device)
            self._defenses[key] = defense
        return self._defenses[key]

    def batch(self, index: int) -> Any:
        size = self.config.batch_size
        slices = range(index * size, min(self.count(), (index + 1) * size))
        return Sample.collate([self.dataset[i] for i in slices]).to(self.device)


def run_unit(ws: Workspace, cell: Cell, index: int, rank: int) -> Unit:
    """Compute one work unit's records (and panels) with :func:`reconguard.experiment.evaluate`."""
    start = time.perf_counter()
    batch = ws.batch(index)
    defense = None if cell.defense == "none" else ws.defense(cell.model, cell.defense, cell.acceleration)
    setup = Setup(model=ws.model(cell.model), attack=ws.attack(cell), mask_fn=ws.mask_fn(cell.acceleration),
                  defense=defense, source=ws.model(cell.source), seed=cell.seed)
    unit = evaluate(setup, batch, index, crafted=ws.crafted)
    panels = unit.panels(batch) if ws.config.panels else []
    named = tuple((batch.fname[i], int(batch.slice_idx[i]), panel) for i, panel in enumerate(panels))
    return Unit(cell.cell_id, index, len(batch), time.perf_counter() - start, rank, unit.records, named)


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
    size = ws.config.batch_size
    plan = [(c.cell_id, b) for c in cells for b in range(-(-ws.count(c) // size))]
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
