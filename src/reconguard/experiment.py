"""One unit of work -- a batch of slices x model x defense x attack (x surrogate) -- evaluated to records.

:func:`evaluate` is the one place where an attack meets a model, a defense and the metrics. The
audit (:mod:`reconguard.audit.runner`) calls it for every unit of its matrix; ``reconguard
attack``, ``defend`` and ``transfer`` call it for every batch of their one cell and only format
what it returns. Every number is a :class:`Record` ``(volume, slice, condition, metric, value)``
with one vocabulary (:data:`CONDITIONS`) and one set of image metrics
(:data:`reconguard.metrics.METRICS`, plus ``loss`` and the attack's own measures), so the command
line, the database and the report read the same names: a pivoted column is always
``<condition>_<metric>`` (``clean_psnr``, ``attacked_relative_norm``, ``fnaf_hit``).

Nothing here asks which kind of attack ran: a feature attack (FNAF) is an
:class:`~reconguard.attacks.base.Attack` whose result says which truth its reconstruction is scored
against (:meth:`AttackResult.truth`) and which numbers it adds (:meth:`AttackResult.measures`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Iterable, NamedTuple

import numpy as np
import torch

from reconguard.attacks import BPDA, Attack, AttackResult, evaluate_transfer
from reconguard.data import Sample
from reconguard.metrics import magnitude, slice_metrics
from reconguard.metrics.artefacts import SHAPE_DESCRIPTORS, describe_artefact
from reconguard.models.base import Reconstructor
from reconguard.models.zero_filled import zero_filled
from reconguard.physics.masks import MaskGenerator

#: Every condition a record can have, and what it means (docs/audit.md lists the same).
CONDITIONS: dict[str, str] = {
    "clean": "the clean measurement through the evaluated pipeline (the defended one in a defended cell)",
    "attacked": "the attack on the evaluated pipeline: adaptive in a defended cell (PGD through the defense, "
                "BPDA when it is not differentiable, EOT when it is random); the surrogate's attack replayed "
                "in a transfer cell",
    "nonadaptive": "defended cells: the attack crafted on the bare model, then fed to the defense",
    "undefended_clean": "defended cells: the bare model on the clean measurement",
    "undefended_attacked": "defended cells: the bare model under the attack crafted on it",
    "noise": "random noise matched to the attack in every norm that matters: its l2 norm (l2 threats), its l2 "
             "and l-inf sizes (l-inf threats), its count and amplitude (l0) (attacks.noise.matched_noise); "
             "also its noise gain (metric gain, as for attacked)",
    "gaussian_noise": "only when the attack's gaussian_noise option is set: Gaussian noise whose largest entry "
                      "equals the attack's (the pre-0.2 l-inf baseline, far below the attack's energy)",
    "zero_filled": "zero-filling of the same under-sampled k-space (the report's quality baseline)",
    "fnaf": "feature attacks: hit, accepted, the criterion's score and threshold, the three criteria's scores, "
            "region losses (FNAFResult.measures)",
    "artefact": "what the error map attacked - clean looks like (metrics.describe_artefact)",
}
#: Conditions whose images an audit keeps for its panels.
PANEL_CONDITIONS = ("clean", "attacked", "nonadaptive", "noise")


class Record(NamedTuple):
    """One number: ``value`` of ``metric`` for one slice under one condition (``None`` if not finite)."""

    volume: str
    slice: int
    condition: str
    metric: str
    value: float | None


@dataclass(frozen=True)
class Setup:
    """What a cell evaluates, resolved to objects (everything but the batch).

    Attributes:
        model: The audited reconstructor (bare).
        attack: Any attack.
        mask_fn: The sampling mask of the cell (fixed per volume).
        defense: The defended pipeline wrapping ``model`` (``None``: undefended).
        source: The surrogate the attack is crafted on (``None`` or ``model``: white-box).
        seed: Seeds random models and defenses per unit (with the batch index), whoever runs it.
        adaptive: Run the adaptive attack on a defended cell (``False`` only for timing runs:
            there is then no ``attacked`` condition).
        time_clean: Also time one clean pass of the pipeline (and of the bare model) per batch.
    """

    model: Reconstructor
    attack: Attack
    mask_fn: MaskGenerator
    defense: Reconstructor | None = None
    source: Reconstructor | None = None
    seed: int = 0
    adaptive: bool = True
    time_clean: bool = False


@dataclass(frozen=True)
class UnitResult:
    """Everything one unit produced.

    Attributes:
        records: The numbers.
        images: Magnitude images by condition, centre-cropped like the target.
        truth: What ``attacked`` is scored against (the target, or FNAF's target with the feature).
        outline: The feature's pixels for panels (feature attacks), else ``None``.
        seconds: Wall-clock seconds of the batch by condition (the attack for ``attacked`` and
            ``undefended_attacked``; one reconstruction for the others that were timed).
        result: The attack's result behind ``attacked`` (the surrogate's in a transfer cell;
            the one crafted on the bare model when a defended cell skips the adaptive attack).
        mask: The sampling mask used.
    """

    records: tuple[Record, ...]
    images: dict[str, torch.Tensor]
    truth: torch.Tensor
    outline: torch.Tensor | None
    seconds: dict[str, float]
    result: AttackResult
    mask: torch.Tensor

    def panels(self, batch: Sample) -> list[dict[str, np.ndarray]]:
        """Per slice, the images of a figure as float32 arrays: ``target`` (the truth), the
        reconstructions of :data:`PANEL_CONDITIONS` present, ``max_value`` and, for feature attacks,
        ``feature_mask``."""
        out = []
        for i in range(len(batch)):
            shown = {k: v[i, 0] for k, v in self.images.items() if k in PANEL_CONDITIONS}
            arrays = {"target": self.truth[i, 0], **shown}
            panel = {k: v.detach().float().cpu().numpy() for k, v in arrays.items()}
            panel["max_value"] = np.asarray(float(batch.max_value[i]))
            if self.outline is not None:
                panel["feature_mask"] = self.outline[i, 0].float().cpu().numpy()
            out.append(panel)
        return out

    def attacked_batch(self, batch: Sample) -> Sample:
        """``batch`` as the model saw it under attack (attacked k-space, its mask, the truth), for fastMRI files."""
        mask = self.mask.expand(len(batch), *self.mask.shape[1:])
        return replace(batch, kspace=self.result.adv_kspace, target=self.truth, mask=mask)


def evaluate(setup: Setup, batch: Sample, index: int = 0, *, crafted: dict | None = None) -> UnitResult:
    """Evaluate one unit: ``setup`` on ``batch`` (batch ``index`` of its split).

    Args:
        setup: The cell.
        batch: Fully sampled slices (under-sampled here with ``setup.mask_fn``).
        index: The batch's index in its split (seeds random models with ``setup.seed``).
        crafted: A cache of attacks already crafted (by attack, model, mask generator and slices:
            the objects' identities), shared between the cells of one batch so that a surrogate is
            attacked once for all its targets and a bare model once for its white-box cell and its
            defended cells (a random surrogate then draws once for all of them); a
            :class:`CraftedCache` bounds its memory. ``None``: no sharing.

    Returns:
        The :class:`UnitResult`.
    """
    crafted = {} if crafted is None else crafted
    _reseed(setup, index)
    masked_kspace, mask = batch.undersample(setup.mask_fn)
    arm = _Arm(setup, batch, masked_kspace, mask, crafted)
    arm.attack_pipeline()
    if setup.defense is not None:
        arm.attack_bare_model()
    if setup.time_clean or "clean" not in arm.recons:
        arm.time_clean()
    return arm.result()


class CraftedCache(OrderedDict):
    """The ``crafted`` cache of :func:`evaluate` across units, least recently used out first once
    its results hold more than ``max_bytes`` of tensors (a miss only recomputes: attacks are
    deterministic given their seed). Attacks on stochastic models are not kept: their draws depend
    on what the unit did before, and a unit's records must not depend on which units ran first."""

    def __init__(self, max_bytes: int = 1 << 30):
        super().__init__()
        self.max_bytes, self.bytes, self._sizes = max_bytes, 0, {}

    def __getitem__(self, key: Any) -> AttackResult:
        self.move_to_end(key)
        return super().__getitem__(key)

    def __setitem__(self, key: Any, result: AttackResult) -> None:
        tensors = [v for v in vars(result).values() if torch.is_tensor(v)]
        tensors += [t for b in result.baselines for t in (b.delta, b.recon)]
        if key in self:
            self.bytes -= self._sizes[key]
        self._sizes[key] = sum(t.numel() * t.element_size() for t in tensors)
        super().__setitem__(key, result)
        self.bytes += self._sizes[key]
        while self.bytes > self.max_bytes and len(self) > 1:
            old, _ = self.popitem(last=False)
            self.bytes -= self._sizes.pop(old)


def _reseed(setup: Setup, index: int) -> None:
    """Random models and defenses draw the unit's numbers, whoever runs it and in whatever order."""
    parts = (setup.model, setup.defense, setup.source)
    for part in {id(p): p for p in parts if p is not None}.values():
        if hasattr(part, "manual_seed"):
            part.manual_seed(setup.seed * 1_000_003 + index)


class _Arm:
    """The reconstructions, losses, truths and timings of one unit, gathered condition by condition."""

    def __init__(self, setup: Setup, batch: Sample, masked_kspace: torch.Tensor, mask: torch.Tensor, crafted: dict):
        self.setup, self.batch, self.masked_kspace, self.mask, self.crafted = setup, batch, masked_kspace, mask, crafted
        self.pipeline = setup.defense if setup.defense is not None else setup.model
        self.recons: dict[str, torch.Tensor] = {}
        self.losses: dict[str, torch.Tensor | None] = {}
        self.truths: dict[str, torch.Tensor] = {}
        self.seconds: dict[str, float] = {}
        self.main: AttackResult | None = None  # the result behind "attacked"
        self.bare: AttackResult | None = None  # the attack crafted on the bare model (defended cells)

    def craft(self, model: Reconstructor, owner: Reconstructor | None = None) -> AttackResult:
        """The cell's attack on ``model`` (from the batch's cache when another cell crafted it).
        ``owner`` is what the cache knows ``model`` by when ``model`` is a wrapper built for this
        unit (a BPDA of the defense): objects the setups hold keep their ids for the cache's life."""
        batch = self.batch
        key = (id(self.setup.attack), id(owner if owner is not None else model), id(self.setup.mask_fn),
               tuple(batch.fname), tuple(int(s) for s in batch.slice_idx))
        shared = not (isinstance(self.crafted, CraftedCache) and getattr(model, "stochastic", False))
        if not shared or key not in self.crafted:
            result = self.setup.attack(model, self.masked_kspace, self.mask, target=batch.target,
                                       coil_maps=batch.coil_maps, max_value=batch.max_value, kspace=batch.kspace)
            if not shared:
                return result
            self.crafted[key] = result
        return self.crafted[key]

    def attack_pipeline(self) -> None:
        """``clean``, ``attacked``, ``noise``: white-box (adaptive when defended) or a transfer."""
        setup, batch = self.setup, self.batch
        if setup.source is not None and setup.source is not setup.model:
            source = self.craft(setup.source)
            outcome = evaluate_transfer(setup.attack, source, self.pipeline, self.masked_kspace, self.mask,
                                        target=batch.target, coil_maps=batch.coil_maps, max_value=batch.max_value)
            self.add("clean", outcome.clean_recon, outcome.clean_loss)
            self.add("attacked", outcome.recon, outcome.loss, truth=source.truth(batch.target))
            for condition, recon in outcome.baseline_recons.items():
                self.add(condition, recon, outcome.baseline_losses[condition])
            self.main, self.seconds["attacked"] = source, source.seconds
        elif setup.defense is None or setup.adaptive:
            defense = setup.defense
            through = self.pipeline if defense is None or defense.differentiable else BPDA(defense, setup.model)
            result = self.craft(through, owner=self.pipeline)
            self.add("clean", result.clean_recon, result.clean_loss)
            self.add("attacked", result.recon, result.loss, truth=result.truth(batch.target))
            for baseline in result.baselines:
                self.add(baseline.condition, baseline.recon, baseline.loss)
            self.main, self.seconds["attacked"] = result, result.seconds

    def attack_bare_model(self) -> None:
        """Defended cells: the attack crafted on the bare model, undefended and fed to the defense."""
        plain = self.bare = self.craft(self.setup.model)
        truth = plain.truth(self.batch.target)
        start = time.perf_counter()
        with torch.no_grad():
            replayed = plain.replay(self.setup.defense, self.mask, coil_maps=self.batch.coil_maps)
        self.seconds["nonadaptive"] = time.perf_counter() - start
        self.add("nonadaptive", replayed, None, truth=truth)
        self.add("undefended_clean", plain.clean_recon, plain.clean_loss)
        self.add("undefended_attacked", plain.recon, plain.loss, truth=truth)
        self.seconds["undefended_attacked"] = plain.seconds

    def time_clean(self) -> None:
        """One timed clean pass of the pipeline (and of the bare model in a defended cell)."""
        parts = {"clean": self.pipeline}
        if self.setup.defense is not None:
            parts["undefended_clean"] = self.setup.model
        for condition, model in parts.items():
            start = time.perf_counter()
            with torch.no_grad():
                recon = model(self.masked_kspace, self.mask, coil_maps=self.batch.coil_maps)
            self.seconds[condition] = time.perf_counter() - start
            self.recons.setdefault(condition, recon)

    def add(self, condition: str, recon: torch.Tensor | None, loss: torch.Tensor | None,
            truth: torch.Tensor | None = None) -> None:
        if recon is not None:
            self.recons[condition], self.losses[condition] = recon, loss
            if truth is not None:
                self.truths[condition] = truth

    def result(self) -> UnitResult:
        batch, target = self.batch, self.batch.target
        images = {c: magnitude(r, target) for c, r in self.recons.items()}
        images["zero_filled"] = magnitude(zero_filled(self.masked_kspace, batch.coil_maps), target)
        records = []
        for condition, image in images.items():
            scores = slice_metrics(self.truths.get(condition, target), image, data_range=batch.max_value)
            loss = self.losses.get(condition)
            records += _rows(batch, condition, scores if loss is None else {**scores, "loss": loss})
        main = self.main if self.main is not None else self.bare
        if self.main is not None:
            records += _rows(batch, main.MEASURED_AS, main.measures())
        truth = self.truths.get("attacked", target)
        if "attacked" in images and truth is target:  # a feature attack changes the truth: no error map
            described = describe_artefact(images["attacked"] - images["clean"], target)
            records += _rows(batch, "artefact", {k: described[k] for k in SHAPE_DESCRIPTORS})
        records += self.gains()
        records += self.detector()
        outline = getattr(main, "feature_mask", None)  # feature attacks' own field
        return UnitResult(records=tuple(records), images=images, truth=truth, seconds=self.seconds, result=main,
                          outline=None if outline is None else magnitude(outline.to(target.dtype), target),
                          mask=self.mask)

    @torch.no_grad()
    def gains(self) -> list[Record]:
        """``gain`` of ``attacked`` and of each noise baseline: per slice, how much the evaluated
        pipeline's output moves per unit of input change, ``||f(x + d) - f(x)|| / ||d_x||`` in l2
        (``d_x``: what the perturbation changes in the network's input image,
        :meth:`AttackResult.input_change`). Zero-filling's is 1; a gain far above 1 under random
        noise means any perturbation of this size is amplified, adversarial or not."""
        main = self.main
        if main is None or main.threat is None or "clean" not in self.recons:
            return []
        deltas = {"attacked": main.delta, **{b.condition: b.delta for b in main.baselines}}
        maps, clean, rows = self.batch.coil_maps, self.recons["clean"], []
        for condition, delta in deltas.items():
            if condition in self.recons:
                change = (self.recons[condition] - clean).flatten(1).norm(dim=1)
                rows += _rows(self.batch, condition, {"gain": change / main.input_change(delta, self.mask, maps)})
        return rows

    @torch.no_grad()
    def detector(self) -> list[Record]:
        """``detector_score`` and ``flagged`` per slice and input, for a defense with a calibrated
        detector (the cyclic defense): flagged attacked inputs are true alarms, flagged clean ones
        false. A network-input attack is scored with its input perturbation."""
        defense = self.setup.defense
        threshold = getattr(defense, "threshold", None)
        if threshold is None or not callable(getattr(defense, "score", None)):
            return []
        inputs = {"clean": (self.masked_kspace, None)}
        for condition, result in (("attacked", self.main), ("nonadaptive", self.bare)):
            if result is not None:
                inputs[condition] = (result.adv_kspace, result.input_delta)
        rows = []
        for condition, (kspace, input_delta) in inputs.items():
            extra = {} if input_delta is None else {"input_delta": input_delta}
            score = defense.score(kspace, self.mask, coil_maps=self.batch.coil_maps, **extra)
            rows += _rows(self.batch, condition, {"detector_score": score, "flagged": (score > threshold).float()})
        return rows


def _rows(batch: Sample, condition: str, values: dict[str, Any]) -> list[Record]:
    return [Record(batch.fname[i], int(batch.slice_idx[i]), condition, name, _finite(value[i]))
            for name, value in values.items() for i in range(len(batch))]


def _finite(value: torch.Tensor) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


def wide(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One dict per slice (in order of appearance): ``volume``, ``slice`` and one
    ``<condition>_<metric>`` key per record -- the columns every table and CSV file uses."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for record in records:
        row = rows.setdefault((record.volume, record.slice), {"volume": record.volume, "slice": record.slice})
        row[f"{record.condition}_{record.metric}"] = record.value
    return list(rows.values())


def calibrated(defense: Reconstructor, dataset: Any, mask_fn: MaskGenerator, *, slices: int, batch_size: int,
               device: str | torch.device) -> Reconstructor:
    """``defense`` with its detector calibrated on the first ``slices`` clean slices of ``dataset``
    (:meth:`~reconguard.defenses.CyclicMitigation.calibrated`); a defense without a detector as it is."""
    if not hasattr(defense, "calibrated"):
        return defense
    count = min(len(dataset), slices)
    batches = []
    for start in range(0, count, batch_size):
        batch = Sample.collate([dataset[i] for i in range(start, min(count, start + batch_size))]).to(device)
        batches.append((*batch.undersample(mask_fn), batch.coil_maps))
    return defense.calibrated(batches)
