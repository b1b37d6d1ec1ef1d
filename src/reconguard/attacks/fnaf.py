"""False-negative adversarial features (FNAF): small true features a reconstruction erases.

A FNAF is a tiny feature (``size`` 4-connected pixels) inserted into the *fully sampled* image and
re-acquired, so it is in the ground truth and measured by the scanner, yet missing from the
network's reconstruction: a false negative a radiologist would not see. The attack is a black-box
search: random candidates (evaluated as one batch), optionally refined by finite differences on the
feature's position. Candidates whose measured part barely changes the zero-filled image are
rejected (information preservation): missing what the scanner did not record is not the network's
fault.

**What counts as a hit** (``criterion``; docs/attacks.md has the full story). Every rule scores the
reconstruction inside the feature's region ``T`` (the feature dilated by ``dilation`` pixels):

- ``"linear"`` (reconguard's default): ``linear_loss``, the share of the feature that a linear
  reconstruction of the same measurements shows and the network loses. With ``d_net =
  |recon_with| - |recon_without|`` (what the feature added to the reconstruction), ``d_lin`` the
  same for zero-filling and ``f`` the feature, ``E(d) = sum_T (d - f)^2``::

      linear_loss = (E(d_net) - E(d_lin)) / (E(0) - E(d_lin))

  0: the network shows the feature as well as zero-filling does; 1: it erases it (as if the
  feature were absent); below 0: it shows it better. A hit is ``linear_loss > gamma`` (default
  0.5: the network loses more than half of what the data carry of the feature). Zero-filling
  scores exactly 0, so under-sampling blur alone is never a hit, and the score is a ratio of sums
  over ``T``, so it does not depend on the image size. A candidate zero-filling does not show at
  all (``E(d_lin) >= E(0)``) carries no usable information and is rejected, like one that fails
  the paper's information check below.
- ``"missing"``: ``feature_loss``, the MSE inside ``T`` between ``d_net`` and ``f``, on magnitudes
  divided by ``max_value``: 0 for a model that reconstructs the feature, whatever its baseline
  error, but not 0 for zero-filling (its blur of the feature counts).
- ``"paper"`` (Cheng et al.): ``paper_loss``, the raw squared error in ``T`` on magnitudes divided
  by the standard deviation of the zero-filled input (fastMRI's mean/std normalisation; the mean
  cancels), ``MSE(T(x), T(y))`` with ``T`` a mask, averaged by default over the paper's 320x320
  pixels (:data:`PAPER_PIXELS`) at every image size, so that ``gamma`` means what it means in the
  paper for a feature of the same pixel count (``paper_pixels=None`` averages over the image
  itself, as the paper's code does at its own size). The authors' code dilates by about one pixel
  (``dilation=1``).

References:
    Cheng, Calivá, Shah, Han, Majumdar, Pedoia, "Addressing the false negative problem of deep
    learning MRI reconstruction models by adversarial attacks and robust training", MIDL 2020,
    PMLR 121:121-135; extended in Calivá, Cheng, Shah, Pedoia, "Adversarial robust training of
    deep learning MRI reconstruction models", arXiv:2011.00070.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from reconguard.attacks.base import Attack, AttackInputs, AttackResult, frozen
from reconguard.attacks.features import (
    PAPER_REGION,
    Features,
    Region,
    concat_candidates,
    make_features,
    select_candidates,
)
from reconguard.attacks.insertion import Scene, dilate, input_std, linear_score, region_energy, region_mean
from reconguard.errors import ConfigError
from reconguard.models.base import Reconstructor
from reconguard.models.zero_filled import zero_filled
from reconguard.physics.operators import center_crop, validate_kspace

Criterion = Literal["linear", "missing", "paper"]
CRITERIA = ("linear", "missing", "paper")
#: The hit threshold ``gamma`` of each criterion when none is given (``paper``: the paper's 1e-3).
GAMMAS = {"linear": 0.5, "missing": 1e-3, "paper": 1e-3}
PAPER_PIXELS = 320 * 320  # the paper's 320x320 images: its MSE(T(x), T(y)) averages over these


@dataclass(frozen=True)
class _Scores:
    """Per-candidate scores ``(B, K)`` and what was evaluated ``(B, K, ...)``.

    The evaluated tensors travel with the scores so that choosing a candidate
    (:func:`~reconguard.attacks.features.select_candidates`) also chooses its reconstruction:
    the result needs no second pass through the model.
    """

    loss: torch.Tensor
    feature_loss: torch.Tensor
    paper_loss: torch.Tensor
    linear_loss: torch.Tensor
    information: torch.Tensor
    usable: torch.Tensor  # passed the information check of the criterion
    region_loss: torch.Tensor
    adv_kspace: torch.Tensor
    recon: torch.Tensor
    target: torch.Tensor
    feature_mask: torch.Tensor
    loss_mask: torch.Tensor


@dataclass
class _Run:
    """The model, the prepared batch, its clean reconstruction and the running tallies."""

    model: Reconstructor
    scene: Scene
    clean: torch.Tensor  # (B, 1, H, W) complex reconstruction of the input without a feature
    clean_std: torch.Tensor  # (B,) standard deviation of the clean zero-filled magnitude
    linear: torch.Tensor  # (B, 1, H, W) |zero-filled image| of the input without a feature
    evaluations: int = 1
    candidates: int = 0
    rejected: torch.Tensor | int = 0


@dataclass(frozen=True, kw_only=True)
class FNAFResult(AttackResult):
    """The worst feature found for each slice: an :class:`~reconguard.attacks.base.AttackResult`
    (``adv_kspace``, ``recon``, ``clean_recon``, ``loss``, ``evaluations``, ``seconds``; no threat,
    perturbation or noise baseline) with the feature's own fields.

    Attributes:
        adv_kspace: Under-sampled k-space of the image with the feature (what the model saw).
        recon: The model's reconstruction of ``adv_kspace``.
        clean_recon: Its reconstruction of the same slice without a feature (the control run).
        target: Fully sampled magnitude image with the feature (the truth ``recon`` is scored against).
        feature_mask, loss_mask: The feature's pixels, and them dilated by ``dilation`` pixels (``T``).
        intensity, position: Absolute feature amplitude; bounding-box corner ``(row, col)``.
        loss: What the search maximised (``alpha`` whole-image MSE + ``beta`` region term, in the
            ``criterion``'s normalisation; see :class:`FNAF`).
        score: The ``criterion``'s score (one of the three below).
        gamma: The hit threshold on :attr:`score` (per slice, for the records).
        linear_loss: The share of the feature zero-filling shows and the network loses (module
            docstring).
        feature_loss: The missing-feature MSE inside ``T`` (``/ max_value^2``; module docstring).
        paper_loss: The paper's score: squared error in ``T`` in units of the input's variance,
            summed and divided by ``paper_pixels``.
        information: MSE inside ``T`` of the feature's zero-filled image (its measured part).
        accepted: Passed the information check (False only when every candidate failed).
        hit: ``accepted`` and :attr:`score` above ``gamma``: a false negative.
        region_loss: The raw MSE inside ``T`` (reconstruction vs target, ``/ max_value^2``).
        control_region_loss, control_paper_loss: ``region_loss`` and ``paper_loss`` of the clean
            reconstruction vs the clean target in the same ``T`` (what the model misses anyway).
        rejected: Candidates that failed the information check, of ``candidates`` evaluated.

    Shapes:
        adv_kspace ``(B, C, H, W)``; recon, clean_recon, target, feature_mask, loss_mask ``(B, 1, H, W)``;
        position ``(B, 2)``; every other tensor ``(B,)``
    """

    MEASURED_AS: ClassVar[str] = "fnaf"
    #: The per-slice fields :meth:`measures` returns.
    MEASURES: ClassVar[tuple[str, ...]] = ("hit", "accepted", "score", "gamma", "linear_loss", "feature_loss",
                                           "paper_loss", "region_loss", "control_region_loss", "control_paper_loss",
                                           "information", "rejected")

    target: torch.Tensor
    feature_mask: torch.Tensor
    loss_mask: torch.Tensor
    intensity: torch.Tensor
    position: torch.Tensor
    score: torch.Tensor
    gamma: torch.Tensor
    linear_loss: torch.Tensor
    feature_loss: torch.Tensor
    paper_loss: torch.Tensor
    information: torch.Tensor
    accepted: torch.Tensor
    hit: torch.Tensor
    region_loss: torch.Tensor
    control_region_loss: torch.Tensor
    control_paper_loss: torch.Tensor
    rejected: torch.Tensor
    candidates: int

    def truth(self, target: torch.Tensor) -> torch.Tensor:
        """The fully sampled image with the feature, cropped like ``target``."""
        return center_crop(self.target, target.shape[-2:])

    def measures(self) -> dict[str, torch.Tensor]:
        """Hit, acceptance and the feature losses, per slice."""
        return {name: getattr(self, name) for name in self.MEASURES}


class FNAF(Attack):
    """Search for false-negative adversarial features (black box, no gradients).

    Args:
        size: Pixels per feature (the paper: 10).
        region: The central region features live in: a fraction of each side (default 0.375, the
            paper's central 120 of 320 pixels), a side in pixels, or ``(h, w)`` pixels.
        intensity_range: Feature amplitude range, fractions of the slice maximum.
        num_candidates: Random candidates per slice (the paper: 11), evaluated as one batch (see ``max_batch``).
        search: ``"random"``, or ``"finite_difference"`` to refine the best random candidate's position.
        step: Finite-difference step in pixels (the paper: 10): the loss is probed at the position
            shifted by ``+-step/2`` along each axis (one batch), then the feature moves ``step``
            pixels along the sign of each partial derivative; the best feature seen is kept.
        iterations: Finite-difference iterations (the paper: 2).
        criterion: The hit score (module docstring) and the search loss: ``"linear"``,
            ``alpha MSE + beta linear_loss``; ``"missing"``, ``alpha MSE + beta feature_loss``
            (``MSE`` on ``magnitude / max_value``); ``"paper"``, ``alpha MSE(x, y) + beta
            MSE(T(x), T(y))`` on mean/std-normalised magnitudes.
        alpha, beta: Weights of the whole-image and the feature-region term.
        paper_pixels: Pixels the paper's score averages over (``None``: the image's own).
        gamma: A feature is a hit when the criterion's score exceeds this; ``None``: the
            criterion's default (:data:`GAMMAS`: 0.5 for ``linear``, the paper's 1e-3 otherwise).
        info_threshold: Candidates whose measured part changes the zero-filled image by less than
            this (MSE inside ``T``, ``/ max_value^2``) are rejected (the paper: 1e-4); ``linear``
            also rejects candidates zero-filling does not show (module docstring).
        dilation: Pixels by which the feature is dilated (square) into ``T``.
        insertion: ``"complex"`` (``x' = x + f exp(i angle x)``: the clean input distribution,
            as FNAF-robust training) or ``"magnitude"`` (the paper's ``|x| + f``, which also drops
            the phase of the whole input); see :mod:`reconguard.attacks.insertion`.
        max_batch: Most inputs (slices x candidates) per model call, to bound memory (chunks;
            the result does not depend on it). ``None``: one call, fastest on an idle 2-core CPU
            (``benchmarks/bench_fnaf_batching.py``).
        seed: Seeds the feature draws.

    References:
        Cheng et al., MIDL 2020 (PMLR 121:121-135); Calivá et al., arXiv:2011.00070.
    """

    def __init__(
        self,
        *,
        size: int = 10,
        region: Region = PAPER_REGION,
        intensity_range: tuple[float, float] = (0.0, 1.0),
        num_candidates: int = 11,
        search: Literal["random", "finite_difference"] = "random",
        step: int = 10,
        iterations: int = 2,
        criterion: Criterion = "linear",
        paper_pixels: int | None = PAPER_PIXELS,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float | None = None,
        info_threshold: float = 1e-4,
        dilation: int = 5,
        insertion: Literal["complex", "magnitude"] = "complex",
        max_batch: int | None = None,
        seed: int = 0,
    ):
        sides = (region,) if isinstance(region, (int, float)) else tuple(region)
        fraction = isinstance(region, float)
        checks = {
            "size/region": size >= 1 and len(sides) in (1, 2)
            and all(0 < s <= 1 if fraction else s >= size for s in sides),
            "intensity_range": 0 <= intensity_range[0] <= intensity_range[1],
            "num_candidates": num_candidates >= 1,
            "search": search in ("random", "finite_difference"),
            "step/iterations": step >= 1 and iterations >= 0,
            "criterion/paper_pixels": criterion in CRITERIA and (paper_pixels is None or paper_pixels >= 1),
            "alpha/beta": min(alpha, beta) >= 0 and max(alpha, beta) > 0,
            "gamma/info_threshold/dilation": min(GAMMAS.get(criterion, 0.0) if gamma is None else gamma,
                                                 info_threshold, dilation) >= 0,
            "insertion": insertion in ("complex", "magnitude"),
            "max_batch": max_batch is None or (isinstance(max_batch, int) and max_batch >= 1),
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid FNAF {name}; see the FNAF docstring for the allowed values")
        self.size, self.region, self.intensity_range = int(size), region, tuple(intensity_range)
        self.num_candidates, self.search, self.step, self.iterations = num_candidates, search, step, iterations
        self.criterion, self.paper_pixels = criterion, paper_pixels
        self.alpha, self.beta = alpha, beta
        self.gamma = GAMMAS[criterion] if gamma is None else gamma
        self.info_threshold, self.dilation, self.insertion = info_threshold, dilation, insertion
        self.max_batch, self.seed = max_batch, seed

    def _attack(self, model: Reconstructor, inputs: AttackInputs) -> FNAFResult:
        """Find the worst feature of every slice of one batch.

        Features go into the scanned object, so FNAF needs the *fully sampled* ``kspace`` of
        :meth:`~reconguard.attacks.base.Attack.__call__` (``Sample.kspace``) and re-acquires it with
        ``mask`` (the measurement ``masked_kspace`` is not needed); ``target`` and ``region`` are not
        used (the features' region is :attr:`region`); ``max_value`` scales the features
        (default: the fully sampled image maximum); multi-coil k-space needs ``coil_maps``.
        """
        kspace, mask, coil_maps, max_value = inputs.kspace, inputs.mask, inputs.coil_maps, inputs.max_value
        if kspace is None:
            raise ConfigError("FNAF inserts features into the scanned object: pass the fully sampled k-space "
                              "as kspace= (Sample.kspace)")
        validate_kspace(kspace, mask, name="FNAF input")
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(self.seed)
        with frozen(model), torch.no_grad():
            scene = Scene.build(kspace, mask, coil_maps, max_value, self.insertion)
            measured = scene.kspace * scene.mask
            clean = model(measured, scene.mask, coil_maps=scene.coil_maps)
            linear = zero_filled(measured, scene.coil_maps).abs()
            run = _Run(model, scene, clean, input_std(measured, scene.coil_maps), linear)
            features = make_features(
                kspace.shape[0], tuple(kspace.shape[-2:]), num=self.num_candidates, size=self.size,
                region=self.region, intensity_range=self.intensity_range, generator=generator,
            )
            features = features.to(kspace.device)
            best, scores = self._best(features, self._evaluate(run, features))
            if self.search == "finite_difference":
                best, scores = self._finite_difference(run, best, scores)
            return self._result(run, best, scores, start)

    def _evaluate(self, run: _Run, features: Features) -> _Scores:
        """Scores of every candidate, all through the model as one batch (``B K`` slice-major)."""
        scene, (batch, num) = run.scene, features.intensity.shape
        kspace, feature_kspace, target, masks = scene.insert(features)
        measured, maps, scale = (scene.repeat(t, num) for t in (scene.mask, scene.coil_maps, scene.scale))
        adv = kspace * measured
        recon = self._reconstruct(run.model, adv, measured, maps)
        clean, base = scene.repeat(run.clean.abs(), num), scene.repeat(scene.magnitude, num)
        region = dilate(masks, self.dilation)
        feature = target - base
        shown = zero_filled(adv, maps).abs() - scene.repeat(run.linear, num)  # what zero-filling shows of it
        linear_loss, usable = linear_score(recon.abs() - clean, shown, feature, region)
        loss, feature_loss, paper_loss, region_loss = self._losses(
            recon.abs() - target, region, scale, input_std(adv, maps), base - clean, linear_loss
        )
        # By linearity, zero-filled(with) - zero-filled(without) is the feature's own zero-filled image.
        information = region_mean(zero_filled(feature_kspace * measured, maps), region) / scale.square()
        usable = (information >= self.info_threshold) & (usable | (self.criterion != "linear"))
        per_slice = lambda t: t.reshape(batch, num, *t.shape[1:])  # noqa: E731
        scores = _Scores(*map(per_slice, (loss, feature_loss, paper_loss, linear_loss, information, usable,
                                          region_loss, adv, recon, target, masks, region)))
        run.evaluations += 1
        run.candidates += num
        run.rejected = run.rejected + (~scores.usable).sum(dim=1)
        return scores

    def _reconstruct(self, model: Reconstructor, kspace: torch.Tensor, mask: torch.Tensor,
                     maps: torch.Tensor | None) -> torch.Tensor:
        """``model`` on ``kspace`` in chunks of at most :attr:`max_batch` inputs (one call if ``None``)."""
        total = kspace.shape[0]
        size = total if self.max_batch is None else self.max_batch
        chunk = lambda t, i: t if t is None or t.shape[0] != total else t[i:i + size]  # noqa: E731
        parts = [model(kspace[i:i + size], chunk(mask, i), coil_maps=chunk(maps, i)) for i in range(0, total, size)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _losses(self, error, region, scale, std, offset, linear_loss) -> tuple[torch.Tensor, ...]:
        """Search loss, missing-feature MSE, paper score and raw region MSE of magnitude errors.

        ``error`` is ``|recon| - target`` and ``offset`` is ``base - |clean recon|`` (target and
        reconstruction without the feature), so ``error + offset`` is what the model made of the
        feature minus the feature.
        """
        col = lambda t: t.reshape(-1, 1, 1, 1)  # noqa: E731
        by_max, by_std = error / col(scale), error / col(std)
        feature_loss = region_mean((error + offset) / col(scale), region)
        paper_energy = region_energy(by_std, region)
        if self.criterion == "paper":
            whole, term = by_std.square().flatten(1).mean(dim=1), paper_energy / error[0].numel()
        else:
            whole = by_max.square().flatten(1).mean(dim=1)
            term = feature_loss if self.criterion == "missing" else linear_loss
        loss = self.alpha * whole + self.beta * term
        return loss, feature_loss, paper_energy / self._pixels(error), region_mean(by_max, region)

    def _pixels(self, image: torch.Tensor) -> int:
        return image[0].numel() if self.paper_pixels is None else self.paper_pixels

    def _best(self, features: Features, scores: _Scores) -> tuple[Features, _Scores]:
        """Per slice, the highest-loss accepted candidate (the highest-loss one if none is)."""
        accepted = scores.usable
        best_accepted = torch.where(accepted, scores.loss, -math.inf).argmax(dim=1)
        index = torch.where(accepted.any(dim=1), best_accepted, scores.loss.argmax(dim=1))
        return select_candidates(features, index), select_candidates(scores, index)

    def _finite_difference(self, run: _Run, best: Features, scores: _Scores) -> tuple[Features, _Scores]:
        """Move the feature along the signed finite-difference gradient of the loss; keep the best seen."""
        half = (self.step + 1) // 2
        probe = torch.tensor([[-half, 0], [half, 0], [0, -half], [0, half]], device=best.position.device)
        current = best
        for _ in range(self.iterations):
            probes = current.moved(probe.expand(current.position.shape[0], -1, -1))
            probe_scores = self._evaluate(run, probes)
            rise = probe_scores.loss[:, 1::2] - probe_scores.loss[:, 0::2]  # (B, 2): along rows, columns
            # Clamping at the region's edge can shorten (or cancel) a probe's displacement.
            span = (probes.position[:, 1::2] - probes.position[:, 0::2]).diagonal(dim1=1, dim2=2)
            slope = torch.where(span > 0, rise / span.clamp_min(1), torch.zeros_like(rise))
            current = current.moved((self.step * torch.sign(slope)).long()[:, None])
            moved_scores = self._evaluate(run, current)
            seen = concat_candidates([best, probes, current])
            best, scores = self._best(seen, concat_candidates([scores, probe_scores, moved_scores]))
        return best, scores

    def _result(self, run: _Run, best: Features, scores: _Scores, start: float) -> FNAFResult:
        """The chosen candidates (``(B, 1, ...)``); the controls are the clean reconstruction in the same ``T``."""
        adv, recon, target, masks, region = (t[:, 0] for t in (scores.adv_kspace, scores.recon, scores.target,
                                                               scores.feature_mask, scores.loss_mask))
        accepted = scores.usable[:, 0]
        error = run.clean.abs() - run.scene.magnitude
        control = region_mean(error / run.scene.scale.reshape(-1, 1, 1, 1), region)
        control_paper = region_energy(error / run.clean_std.reshape(-1, 1, 1, 1), region) / self._pixels(error)
        score = {"linear": scores.linear_loss, "missing": scores.feature_loss, "paper": scores.paper_loss}
        score = score[self.criterion][:, 0]
        return FNAFResult(
            adv_kspace=adv, recon=recon, clean_recon=run.clean, target=target, feature_mask=masks, loss_mask=region,
            intensity=best.intensity[:, 0] * run.scene.scale, position=best.position[:, 0], score=score,
            gamma=torch.full_like(score, self.gamma),
            loss=scores.loss[:, 0], linear_loss=scores.linear_loss[:, 0], feature_loss=scores.feature_loss[:, 0],
            paper_loss=scores.paper_loss[:, 0], information=scores.information[:, 0], accepted=accepted,
            hit=accepted & (score > self.gamma),
            region_loss=scores.region_loss[:, 0], control_region_loss=control, control_paper_loss=control_paper,
            rejected=run.rejected, candidates=run.candidates, evaluations=run.evaluations,
            seconds=time.perf_counter() - start,
        )

