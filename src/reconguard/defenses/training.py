"""Robust training: what the one training loop trains on, batch by batch.

:func:`reconguard.training.train` runs a single loop; a *strategy* (chosen by
``TrainConfig.robust``) turns each clean batch into the batch to train on and states the objective:

- ``"none"`` (:class:`CleanTraining`): the measured batch, the run's loss.
- ``"pgd"`` (:class:`AdversarialTraining`): Madry et al.'s min-max -- PGD on the current model
  finds a worst-case perturbation within the budget and the step trains on it (optionally mixed
  with the clean batch); ``method="free"`` replays each batch and reuses the input gradient of every
  weight update to grow the perturbation (Shafahi et al.).
- ``"fnaf"`` (:class:`FNAFTraining`): the worst of ``candidates`` random small features
  (FNAF random search on the current model, information check on) is inserted into each slice and
  the step trains on the paper's ``alpha L(x, y) + beta L(T x, T y)`` (``T`` the feature's mask,
  both terms averaged over the image), mixed with the clean slices.
- ``"smooth"`` (:class:`~reconguard.defenses.strategies.SmoothingTraining`): the step trains the model *through*
  :class:`~reconguard.defenses.smoothing.RandomizedSmoothing`, i.e. the smoothed reconstruction.

Every random choice is seeded from ``(seed, epoch, step, replay)`` via :func:`derive_seed`, so a
resumed run repeats an uninterrupted one bit for bit. The weights trained are always the plain
model's (what the run saves); the strategy only changes inputs, wrappers and objective.

References:
    Madry et al., arXiv:1706.06083; Shafahi et al., "Adversarial training for free!",
    arXiv:1904.12843; Cheng et al., MIDL 2020 (PMLR 121:121-135); Calivá et al.,
    arXiv:2011.00070; Cohen et al., arXiv:1902.02918; Li et al. (SMUG), arXiv:2303.12735.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar

import torch

from reconguard.attacks.features import PAPER_REGION, Region
from reconguard.attacks.fnaf import FNAF
from reconguard.attacks.losses import AttackLoss
from reconguard.attacks.noise import scaled_noise
from reconguard.attacks.pgd import PGD
from reconguard.attacks.threat import ThreatModel
from reconguard.data.sample import Sample
from reconguard.errors import require
from reconguard.models.base import Reconstructor
from reconguard.physics.operators import center_crop

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers such as ``(seed, epoch, step, replay)`` (stable across runs)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass(frozen=True)
class TrainBatch:
    """What one optimiser step trains on.

    Attributes:
        masked_kspace, mask, coil_maps: The model input.
        target, max_value: Magnitude target and per-slice data range of the loss.
        region: Image-space loss region (FNAF: the dilated feature), or ``None``.
        delta: Free adversarial training: the perturbation leaf whose gradient the weight
            update's backward pass fills in.

    Shapes:
        masked_kspace ``(N, C, H, W)``; target, region ``(N, 1, h, w)``; max_value ``(N,)``
    """

    masked_kspace: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    max_value: torch.Tensor
    coil_maps: torch.Tensor | None = None
    region: torch.Tensor | None = None
    delta: torch.Tensor | None = None


@dataclass(frozen=True, kw_only=True)
class CleanTraining:
    """Plain supervised training (``robust="none"``); the base of every strategy.

    A strategy's dataclass fields are its options (``TrainConfig.robust_config``); ``loss`` is the
    run's loss and not an option.
    """

    name: ClassVar[str] = "none"
    loss: str = "l1"

    @property
    def passes(self) -> int:
        """Optimiser steps per batch."""
        return 1

    def options(self) -> dict[str, Any]:
        """The resolved options (defaults filled in), as recorded in ``config.json``."""
        return {k: v for k, v in asdict(self).items() if k != "loss"}

    def prepare(
        self,
        model: Reconstructor,
        sample: Sample,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        *,
        seed: tuple[int, ...],
        previous: TrainBatch | None = None,
    ) -> TrainBatch:
        """The batch to train on (``previous``: this batch's last one, for replays)."""
        return TrainBatch(masked_kspace, mask, sample.target, sample.max_value, sample.coil_maps)

    def wrap(self, model: Reconstructor, *, seed: tuple[int, ...]) -> Reconstructor:
        """The reconstructor whose output is trained (and validated)."""
        return model

    def objective(self, recon: torch.Tensor, batch: TrainBatch, loss_fn: LossFn) -> torch.Tensor:
        """The scalar loss of the magnitude reconstruction ``recon`` (cropped to the target)."""
        return loss_fn(recon, batch.target, batch.max_value)


@dataclass(frozen=True, kw_only=True)
class AdversarialTraining(CleanTraining):
    """PGD adversarial training (``robust="pgd"``), or free adversarial training.

    Attributes:
        method: ``"pgd"``: each step trains on the output of :class:`~reconguard.attacks.PGD`
            (random start, ``steps`` steps, the run's loss vs the target, model in eval mode);
            ``"free"``: each batch is replayed ``replays`` times, one forward/backward each, and
            the gradient w.r.t. the input that the weight update computes anyway moves the
            perturbation by ``step_size`` (a fraction of the budget) -- the cost of ``replays``
            clean steps, so divide ``epochs`` by ``replays`` to keep the cost of a clean run.
            Unlike Shafahi et al., the perturbation restarts (randomly) at every new batch
            instead of carrying over from the previous one, so a resumed run needs no extra state.
        domain, norm, eps: The threat (relative budget): default k-space l2, ``eps=0.02`` of the
            measured k-space norm; ``norm`` defaults to ``"l2"`` (k-space) / ``"linf"`` (image).
        steps: PGD steps (pgd only); 3 keeps the cost at ~4x a clean step.
        step_size: Fraction of the budget per step; default PGD's (``2.5/steps`` l2, 0.2 linf)
            for pgd and 1 (Shafahi et al.'s ``eps``) for free.
        mix: Weight of the clean batch in the loss, ``(1 - mix) L(adv) + mix L(clean)``; default
            0 (Madry et al.: adversarial only); 0.5 is Goodfellow et al.'s even mix.
        replays: Replays of each batch (free only; the paper's ``m``, 4 to 10).

    References:
        Madry et al., arXiv:1706.06083; Shafahi et al., arXiv:1904.12843; Goodfellow et al.,
        arXiv:1412.6572.
    """

    name: ClassVar[str] = "pgd"
    method: str = "pgd"
    domain: str = "kspace"
    norm: str | None = None
    eps: float = 0.02
    steps: int = 3
    step_size: float | None = None
    mix: float = 0.0
    replays: int = 4

    def __post_init__(self) -> None:
        require(self.method in ("pgd", "free"), f"method must be 'pgd' or 'free', got {self.method!r}")
        require(_number(self.mix) and 0 <= self.mix <= 1, f"mix must be in [0, 1], got {self.mix!r}")
        require(_integer(self.replays) and self.replays >= 1, f"replays must be >= 1, got {self.replays!r}")
        require(_integer(self.steps), f"steps must be an integer, got {self.steps!r}")
        if self.norm is None:
            object.__setattr__(self, "norm", "l2" if self.domain == "kspace" else "linf")
        if self.step_size is None and self.method == "free":
            object.__setattr__(self, "step_size", 1.0)
        require(self.step_size is None or _number(self.step_size), f"step_size must be a number: {self.step_size!r}")
        object.__setattr__(self, "step_size", self.attack(seed=0).step_size)  # validates the rest

    @property
    def passes(self) -> int:
        return self.replays if self.method == "free" else 1

    @property
    def threat(self) -> ThreatModel:
        """The perturbation budget."""
        return ThreatModel(domain=self.domain, norm=self.norm, eps=self.eps, relative=True)

    def attack(self, *, seed: int) -> PGD:
        """The inner maximisation: PGD on the run's loss against the ground truth."""
        return PGD(self.threat, AttackLoss(kind=self.loss), steps=self.steps, step_size=self.step_size, seed=seed)

    def prepare(self, model, sample, masked_kspace, mask, *, seed, previous=None) -> TrainBatch:
        if self.method == "free":
            return self._free(sample, masked_kspace, mask, seed, previous)
        result = self.attack(seed=derive_seed(*seed))(
            model, masked_kspace, mask, target=sample.target, coil_maps=sample.coil_maps, max_value=sample.max_value
        )
        batch = TrainBatch(result.adv_kspace, mask, sample.target, sample.max_value, sample.coil_maps)
        return _with_clean(batch, masked_kspace) if self.mix > 0 else batch

    def _free(self, sample: Sample, masked_kspace, mask, seed, previous: TrainBatch | None) -> TrainBatch:
        threat, maps = self.threat, sample.coil_maps
        budget = threat.budget(masked_kspace, mask, coil_maps=maps, target=sample.target)
        support = threat.support_mask(mask, masked_kspace)
        if previous is None:
            generator = torch.Generator(device=masked_kspace.device).manual_seed(derive_seed(*seed))
            radius = torch.rand(budget.shape, generator=generator, device=budget.device, dtype=budget.dtype)
            shape = threat.delta_shape(masked_kspace)
            delta = scaled_noise(threat, shape, support, radius * budget, generator, like=masked_kspace)
        else:
            grad = previous.delta.grad if previous.delta.grad is not None else torch.zeros_like(previous.delta)
            delta = previous.delta.detach() + self.step_size * budget * threat.ascent(grad)
        delta = threat.project(delta, budget, support).requires_grad_(True)
        adv = threat.apply(masked_kspace, mask, delta, maps)
        batch = TrainBatch(adv, mask, sample.target, sample.max_value, maps, delta=delta)
        return _with_clean(batch, masked_kspace) if self.mix > 0 else batch

    def objective(self, recon, batch, loss_fn) -> torch.Tensor:
        if self.mix == 0:
            return loss_fn(recon, batch.target, batch.max_value)
        half = recon.shape[0] // 2  # adversarial slices first, then the clean ones
        adv, clean = (loss_fn(recon[s], batch.target[s], batch.max_value[s]) for s in (slice(half), slice(half, None)))
        return (1 - self.mix) * adv + self.mix * clean


@dataclass(frozen=True, kw_only=True)
class FNAFTraining(CleanTraining):
    """FNAF-robust training (``robust="fnaf"``): small features the model misses, mixed with clean slices.

    Each step runs :class:`~reconguard.attacks.FNAF` random search (the paper's loss) on the
    current model (eval mode, no gradients), inserts the worst feature into each slice (slices
    whose candidates all fail the information check stay clean, with no feature term) and, with
    ``mix > 0``, appends the clean slices (the authors' code takes one clean and one feature step
    per batch; here both halves share one step). The objective is the paper's

        ``(1 - mix) [alpha L(x, y) + beta L(T x, T y)] + mix L(x_clean, y_clean)``

    with ``L`` the run's loss (``l1`` or ``mse``, the papers' objective) *averaged over the whole
    image* and ``T`` the mask of the feature dilated by ``dilation`` pixels: ``beta`` is the weight
    of a feature pixel relative to any other pixel, the same at every image size. Start from a
    trained model with ``TrainConfig.init``, as the papers did.

    Attributes:
        candidates: Random features per slice, the worst kept (the FNAF attack uses 11).
        size, region, intensity_range, info_threshold, insertion: As in :class:`FNAF`
            (``insertion`` defaults to ``"complex"`` in both, so the attack measures robustness
            on the input distribution trained on).
        dilation: Pixels by which ``T`` grows around the feature (the authors' code: about 1).
        alpha, beta: Weights of the image and the feature term (the paper: 1 and 100).
        mix: Weight of the clean slices (0: features only; 0.5: equal, as the authors).

    References:
        Cheng et al., MIDL 2020 (PMLR 121:121-135); Calivá et al., arXiv:2011.00070.
    """

    name: ClassVar[str] = "fnaf"
    candidates: int = 5
    size: int = 10
    region: Region = PAPER_REGION
    intensity_range: tuple[float, float] = (0.0, 1.0)
    info_threshold: float = 1e-4
    dilation: int = 1
    alpha: float = 1.0
    beta: float = 100.0
    mix: float = 0.5
    insertion: str = "complex"

    def __post_init__(self) -> None:
        require(self.loss in ("l1", "mse"), f"FNAF-robust training needs loss 'l1' or 'mse', got {self.loss!r}")
        require(_number(self.mix) and 0 <= self.mix < 1, f"mix must be in [0, 1), got {self.mix!r}")
        require(
            isinstance(self.intensity_range, (list, tuple)) and len(self.intensity_range) == 2,
            f"intensity_range must be [low, high], got {self.intensity_range!r}",
        )
        object.__setattr__(self, "intensity_range", tuple(float(v) for v in self.intensity_range))
        self.attack(seed=0)  # validates every option

    def attack(self, *, seed: int) -> FNAF:
        """The feature search: random, worst of ``candidates`` under the paper's loss."""
        return FNAF(
            size=self.size, region=self.region, intensity_range=self.intensity_range,
            num_candidates=self.candidates, criterion="paper", alpha=self.alpha, beta=self.beta,
            info_threshold=self.info_threshold, dilation=self.dilation, insertion=self.insertion, seed=seed,
        )

    def prepare(self, model, sample, masked_kspace, mask, *, seed, previous=None) -> TrainBatch:
        found = self.attack(seed=derive_seed(*seed))(
            model, masked_kspace, mask, coil_maps=sample.coil_maps, max_value=sample.max_value, kspace=sample.kspace
        )
        batch = feature_batch(sample, masked_kspace, mask, found, accepted=found.accepted)
        return _with_clean_slices(batch, sample, masked_kspace) if self.mix > 0 else batch

    def objective(self, recon, batch, loss_fn) -> torch.Tensor:
        featured = recon.shape[0] // 2 if self.mix > 0 else recon.shape[0]  # featured slices first
        part = lambda t: t[:featured]  # noqa: E731
        error = (part(recon) - part(batch.target)).abs()
        error = error.square() if self.loss == "mse" else error
        feature_term = (error * part(batch.region)).mean()  # T is a mask: averaged over every pixel
        robust = self.alpha * loss_fn(part(recon), part(batch.target), part(batch.max_value)) + self.beta * feature_term
        if self.mix == 0:
            return robust
        clean = loss_fn(recon[featured:], batch.target[featured:], batch.max_value[featured:])
        return (1 - self.mix) * robust + self.mix * clean


def _with_clean_slices(batch: TrainBatch, sample: Sample, masked_kspace: torch.Tensor) -> TrainBatch:
    """The featured slices followed by the clean ones (no feature term: an empty region)."""
    mask = batch.mask.expand(masked_kspace.shape[0], *batch.mask.shape[1:])
    pair = lambda a, b: None if a is None else torch.cat([a, b])  # noqa: E731
    return TrainBatch(
        pair(batch.masked_kspace, masked_kspace), pair(mask, mask), pair(batch.target, sample.target),
        pair(batch.max_value, sample.max_value), pair(batch.coil_maps, sample.coil_maps),
        region=pair(batch.region, torch.zeros_like(batch.region)),
    )


def feature_batch(
    sample: Sample,
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    inserted: Any,
    *,
    accepted: torch.Tensor | None = None,
) -> TrainBatch:
    """The training batch of slices with one inserted feature each.

    Args:
        sample: The clean batch (its ``target`` gets the feature added, centre-cropped).
        masked_kspace, mask: The clean measurement (kept where a slice is not ``accepted``).
        inserted: An :class:`~reconguard.attacks.FNAFResult` or
            :class:`~reconguard.attacks.insertion.Insertion` with one feature per slice.
        accepted: Slices whose feature passed the information check (default: all).

    Shapes:
        accepted ``(B,)`` bool; region of the result ``(B, 1, h, w)``, like the target
    """
    keep = torch.ones(len(sample), dtype=torch.bool) if accepted is None else accepted.to(torch.bool)
    keep = keep.to(masked_kspace.device).reshape(-1, 1, 1, 1)
    size = sample.target.shape[-2:]
    feature = center_crop(inserted.feature_mask * inserted.intensity.reshape(-1, 1, 1, 1), size)
    return TrainBatch(
        masked_kspace=torch.where(keep, inserted.adv_kspace, masked_kspace),
        mask=mask,
        target=sample.target + keep * feature.to(sample.target.dtype),
        max_value=sample.max_value,
        coil_maps=sample.coil_maps,
        region=center_crop(inserted.loss_mask, size) & keep,
    )


def _with_clean(batch: TrainBatch, masked_kspace: torch.Tensor) -> TrainBatch:
    """The adversarial slices followed by the clean ones (one forward pass for both)."""
    twice = lambda t: None if t is None else torch.cat([t, t])  # noqa: E731
    return TrainBatch(
        torch.cat([batch.masked_kspace, masked_kspace]), twice(batch.mask), twice(batch.target),
        twice(batch.max_value), twice(batch.coil_maps), delta=batch.delta,
    )



def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
