"""False-negative adversarial features (FNAF): small true features a reconstruction erases.

A FNAF is a tiny feature (``size`` 4-connected pixels) inserted into the *fully sampled* image and
re-acquired, so it is in the ground truth and measured by the scanner, yet missing from the
network's reconstruction: a false negative a radiologist would not see. The attack is a black-box
search: random candidates (evaluated as one batch), optionally refined by finite differences on the
feature's position. Candidates whose measured part barely changes the zero-filled image are
rejected (information preservation): missing what the scanner did not record is not the network's
fault.

Losses use magnitudes divided by a per-slice scale (``max_value``, default the maximum of the fully
sampled image), so ``gamma`` and ``info_threshold`` are in units of the squared image maximum (the
paper normalised images by their mean and standard deviation instead).

**What counts as a hit.** The paper calls a feature a hit when the reconstruction error inside the
dilated feature region exceeds ``gamma``. That raw error also contains the error the model makes
there *without* any feature: a model with a global RMSE of 4 % of the maximum (PSNR 28 dB) exceeds
``gamma = 1e-3`` everywhere, feature or not, so the raw rule measures image quality, not false
negatives. reconguard therefore scores the *missing feature*: ``feature_loss`` is the mean squared
difference, inside the dilated region, between what the feature added to the reconstruction
(``|recon_with| - |recon_without|``) and what it added to the truth (the feature itself). A model
that reconstructs the feature perfectly scores 0 whatever its baseline error. The paper's raw
region error is still reported (``region_loss``), next to the same error on the clean input
(``control_region_loss``, the control run without the feature).

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
from typing import Iterable, Literal

import torch

from reconguard.attacks.base import frozen
from reconguard.attacks.features import (
    PAPER_REGION,
    Features,
    Region,
    concat_candidates,
    make_features,
    select_candidates,
)
from reconguard.attacks.insertion import Scene, dilate, region_mean
from reconguard.errors import ConfigError
from reconguard.models.base import Reconstructor
from reconguard.models.zero_filled import zero_filled
from reconguard.physics.operators import validate_kspace


@dataclass(frozen=True)
class _Scores:
    """Per-candidate scores ``(B, K)`` and what was evaluated ``(B, K, ...)``.

    The evaluated tensors travel with the scores so that choosing a candidate
    (:func:`~reconguard.attacks.features.select_candidates`) also chooses its reconstruction:
    the result needs no second pass through the model.
    """

    loss: torch.Tensor
    feature_loss: torch.Tensor
    information: torch.Tensor
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
    evaluations: int = 1
    candidates: int = 0
    rejected: torch.Tensor | int = 0


@dataclass(frozen=True)
class FNAFResult:
    """The worst feature found for each slice.

    Attributes:
        adv_kspace: Under-sampled k-space of the image with the feature (what the model saw).
        recon: The model's reconstruction of ``adv_kspace``.
        clean_recon: Its reconstruction of the same slice without a feature (the control run).
        target: Fully sampled magnitude image with the feature.
        feature_mask, loss_mask: The feature's pixels, and them dilated by ``dilation`` pixels.
        intensity, position: Absolute feature amplitude; bounding-box corner ``(row, col)``.
        loss: ``alpha * MSE(image) + beta * feature_loss`` on scale-normalised magnitudes.
        feature_loss: MSE inside ``loss_mask`` between the feature's effect on the reconstruction
            and the feature itself (see the module docstring): how much of it went missing.
        information: MSE inside ``loss_mask`` of the feature's zero-filled image (its measured part).
        accepted: Passed the information check (False only when every candidate failed).
        hit: ``accepted`` and ``feature_loss > gamma``: a false negative.
        region_loss: The paper's raw MSE inside ``loss_mask`` (reconstruction vs target).
        control_region_loss: The same MSE on the clean input and target (no feature).
        rejected: Candidates that failed the information check, of ``candidates`` evaluated.
        evaluations, seconds: Model calls (each a batch) and wall-clock time.

    Shapes:
        adv_kspace ``(B, C, H, W)``; recon, clean_recon, target, feature_mask, loss_mask ``(B, 1, H, W)``;
        position ``(B, 2)``; every other tensor ``(B,)``
    """

    adv_kspace: torch.Tensor
    recon: torch.Tensor
    clean_recon: torch.Tensor
    target: torch.Tensor
    feature_mask: torch.Tensor
    loss_mask: torch.Tensor
    intensity: torch.Tensor
    position: torch.Tensor
    loss: torch.Tensor
    feature_loss: torch.Tensor
    information: torch.Tensor
    accepted: torch.Tensor
    hit: torch.Tensor
    region_loss: torch.Tensor
    control_region_loss: torch.Tensor
    rejected: torch.Tensor
    candidates: int
    evaluations: int
    seconds: float


class FNAF:
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
        alpha, beta: Weights of the whole-image and the feature-region MSE.
        gamma: A feature is a hit when its ``feature_loss`` (the missing part) exceeds this.
        info_threshold: Candidates whose measured part changes the zero-filled image by less than
            this (MSE inside the dilated feature) are rejected.
        dilation: Pixels by which the feature is dilated (square) for the feature-region loss.
        insertion: ``"magnitude"`` (``x' = |x| + f``, re-acquired; the paper, single-coil),
            ``"complex"`` (``x' = x + f exp(i angle x)``, through the coil maps), or ``"auto"``
            (magnitude for single-coil, complex for multi-coil k-space).
        max_batch: Most inputs (slices x candidates) per model call, to bound memory; larger sets
            are evaluated in chunks of this size. ``None`` (default): all in one call, which
            measured fastest on an idle 2-core CPU (``benchmarks/bench_fnaf_batching.py``). The
            result does not depend on it.
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
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1e-3,
        info_threshold: float = 1e-4,
        dilation: int = 5,
        insertion: Literal["auto", "magnitude", "complex"] = "auto",
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
            "alpha/beta": min(alpha, beta) >= 0 and max(alpha, beta) > 0,
            "gamma/info_threshold/dilation": min(gamma, info_threshold, dilation) >= 0,
            "insertion": insertion in ("auto", "magnitude", "complex"),
            "max_batch": max_batch is None or (isinstance(max_batch, int) and max_batch >= 1),
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid FNAF {name}; see the FNAF docstring for the allowed values")
        self.size, self.region, self.intensity_range = int(size), region, tuple(intensity_range)
        self.num_candidates, self.search, self.step, self.iterations = num_candidates, search, step, iterations
        self.alpha, self.beta, self.gamma, self.info_threshold = alpha, beta, gamma, info_threshold
        self.dilation, self.insertion, self.max_batch, self.seed = dilation, insertion, max_batch, seed

    def __call__(
        self,
        model: Reconstructor,
        kspace: torch.Tensor,
        mask: torch.Tensor,
        *,
        coil_maps: torch.Tensor | None = None,
        max_value: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> FNAFResult:
        """Find the worst feature of every slice of one batch (model in eval mode, weights frozen).

        Args:
            model: Any reconstructor.
            kspace: *Fully sampled* k-space (``Sample.kspace``); ``mask`` is applied here.
            coil_maps: Coil sensitivities (required for multi-coil k-space).
            max_value: Per-slice scale (fastMRI ``max``); default: the fully sampled image maximum.
            generator: CPU generator for the feature draws; default: a new one seeded with ``seed``.

        Shapes:
            kspace, coil_maps ``(B, C, H, W)``; mask broadcastable to kspace; max_value ``(B,)``
        """
        validate_kspace(kspace, mask, name="FNAF input")
        start = time.perf_counter()
        generator = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        with frozen(model), torch.no_grad():
            scene = Scene.build(kspace, mask, coil_maps, max_value, self.insertion)
            clean = model(scene.kspace * scene.mask, scene.mask, coil_maps=scene.coil_maps)
            run = _Run(model, scene, clean)
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
        recon = self._reconstruct(run.model, kspace * measured, measured, maps)
        clean, base = scene.repeat(run.clean.abs(), num), scene.repeat(scene.magnitude, num)
        loss, feature_loss, region_loss, region = self._losses(recon, target, masks, scale, clean, base)
        # By linearity, zero-filled(with) - zero-filled(without) is the feature's own zero-filled image.
        information = region_mean(zero_filled(feature_kspace * measured, maps), region) / scale.square()
        per_slice = lambda t: t.reshape(batch, num, *t.shape[1:])  # noqa: E731
        scores = _Scores(*map(per_slice, (loss, feature_loss, information, region_loss, kspace * measured,
                                          recon, target, masks, region)))
        run.evaluations += 1
        run.candidates += num
        run.rejected = run.rejected + (scores.information < self.info_threshold).sum(dim=1)
        return scores

    def _reconstruct(self, model: Reconstructor, kspace: torch.Tensor, mask: torch.Tensor,
                     maps: torch.Tensor | None) -> torch.Tensor:
        """``model`` on ``kspace`` in chunks of at most :attr:`max_batch` inputs (one call if ``None``)."""
        total = kspace.shape[0]
        size = total if self.max_batch is None else self.max_batch
        chunk = lambda t, i: t if t is None or t.shape[0] != total else t[i:i + size]  # noqa: E731
        parts = [model(kspace[i:i + size], chunk(mask, i), coil_maps=chunk(maps, i)) for i in range(0, total, size)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _losses(self, recon, target, masks, scale, clean, base) -> tuple[torch.Tensor, ...]:
        """Combined loss, missing-feature MSE, raw region MSE (on ``magnitude / scale``), region.

        ``clean`` is the reconstruction without the feature and ``base`` the target without it,
        so ``target - base`` is the feature and ``|recon| - clean`` what the model made of it.
        """
        region = dilate(masks, self.dilation)
        norm = scale.reshape(-1, 1, 1, 1)
        error = (recon.abs() - target) / norm
        feature_loss = region_mean((recon.abs() - clean - (target - base)) / norm, region)
        loss = self.alpha * error.square().flatten(1).mean(dim=1) + self.beta * feature_loss
        return loss, feature_loss, region_mean(error, region), region

    def _best(self, features: Features, scores: _Scores) -> tuple[Features, _Scores]:
        """Per slice, the highest-loss accepted candidate (the highest-loss one if none is)."""
        accepted = scores.information >= self.info_threshold
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
        """The chosen candidates (``(B, 1, ...)``); the control is the clean reconstruction in the same region."""
        adv, recon, target, masks, region = (t[:, 0] for t in (scores.adv_kspace, scores.recon, scores.target,
                                                               scores.feature_mask, scores.loss_mask))
        accepted = scores.information[:, 0] >= self.info_threshold
        scale = run.scene.scale.reshape(-1, 1, 1, 1)
        control = region_mean((run.clean.abs() - run.scene.magnitude) / scale, region)
        return FNAFResult(
            adv_kspace=adv, recon=recon, clean_recon=run.clean, target=target, feature_mask=masks, loss_mask=region,
            intensity=best.intensity[:, 0] * run.scene.scale, position=best.position[:, 0],
            loss=scores.loss[:, 0], feature_loss=scores.feature_loss[:, 0], information=scores.information[:, 0],
            accepted=accepted, hit=accepted & (scores.feature_loss[:, 0] > self.gamma),
            region_loss=scores.region_loss[:, 0], control_region_loss=control, rejected=run.rejected,
            candidates=run.candidates, evaluations=run.evaluations, seconds=time.perf_counter() - start,
        )


@dataclass(frozen=True)
class HitRate:
    """FNAF statistics over many slices.

    Attributes:
        rate: Fraction of evaluated slices with a hit (``nan`` when none was evaluated).
        hits, slices: Slices with a hit; slices evaluated (some candidate passed the information check).
        excluded: Slices skipped because every candidate failed the information check.
        mean_feature_loss: Mean missing-feature MSE of the worst features on evaluated slices.
        mean_region_loss: Mean raw region MSE (the paper's feature loss) with the feature.
        mean_control_region_loss: The same region MSE on the clean inputs (what the model misses anyway).
    """

    rate: float
    hits: int
    slices: int
    excluded: int
    mean_feature_loss: float
    mean_region_loss: float
    mean_control_region_loss: float


class HitCounter:
    """Streams FNAF results into a :class:`HitRate` without keeping their images."""

    _MEANS = ("feature_loss", "region_loss", "control_region_loss")

    def __init__(self) -> None:
        self.hits = self.slices = self.excluded = 0
        self.sums = dict.fromkeys(self._MEANS, 0.0)

    def add(self, result: FNAFResult) -> None:
        """Count one batch: slices where every candidate was rejected are excluded."""
        keep = result.accepted
        self.slices += int(keep.sum())
        self.excluded += int((~keep).sum())
        self.hits += int(result.hit.sum())
        for name in self._MEANS:
            self.sums[name] += float(getattr(result, name)[keep].double().sum())

    def summary(self) -> HitRate:
        """The hit rate and mean losses so far (``nan`` before any evaluated slice)."""
        mean = {k: v / self.slices if self.slices else math.nan for k, v in self.sums.items()}
        return HitRate(
            rate=self.hits / self.slices if self.slices else math.nan, hits=self.hits, slices=self.slices,
            excluded=self.excluded, mean_feature_loss=mean["feature_loss"], mean_region_loss=mean["region_loss"],
            mean_control_region_loss=mean["control_region_loss"],
        )


def summarize_hits(results: Iterable[FNAFResult]) -> HitRate:
    """The FNAF hit rate (the paper's false-negative rate) over the slices of many results.

    Slices where every candidate failed the information check are excluded (and counted).

    References:
        Cheng et al., MIDL 2020 (PMLR 121:121-135).
    """
    counter = HitCounter()
    for result in results:
        counter.add(result)
    return counter.summary()
