"""Training-free cyclic measurement-consistency mitigation (and detector) of adversarial inputs.

An attack changes the reconstruction most on the k-space samples the network *infers* (the
unacquired ones). Re-undersampling the reconstruction with other masks ``Delta_k`` and
reconstructing again exposes this as a cyclic inconsistency on the acquired samples ``Omega``::

    x1 = f(z);  x2 = f(P_Delta (A x1 + j), Delta);  L(z) = ||y(z) - P_Omega A x2|| / ||P_Omega A x2||

(``z`` the network's input, ``y(z)`` the measurements it holds, ``A`` the full-grid forward
operator, ``j`` a fixed jitter, ``L`` averaged over the ``Delta_k``). The mitigation minimises ``L``
over a perturbation ``v`` of the given input inside a linf ball of radius ``eps * max |A^H y|``
(the attacks' convention) by projected complex-sign gradient descent with a linearly decaying
step, keeping per slice the ``x1`` of the iterate of lowest ``L`` (no label needed). ``L`` of the
input itself is the detector score: with a ``threshold``, slices below it get the plain
reconstruction back, at the cost of one extra batched pass (over ``detector_masks`` of the masks).

What ``v`` may change (``variable``):

- ``"input"`` (the paper's): the whole network-input image, ``z = A^H y + d + v`` -- the model gets
  ``input_delta = d + v`` (``d``: a network-input perturbation given with the input, see
  :mod:`reconguard.attacks.threat`) and ``y(z) = y + A (d + v)``. Needs a model with
  ``accepts_input_delta``.
- ``"measured"``: only the measurements, ``y + A v`` (what a scanner's data can be), for models that
  take k-space only; the part of ``v`` outside ``Omega`` is lost.

How this reads the reference where it leaves room (stages, jitter, masks, ball, the sign step) is
in docs/defenses.md, "Readings of the reference".

:meth:`CyclicMitigation.paper` is the reference's configuration (input variable, no detector,
100 iterations without early stopping, step 0.005 decaying linearly, box 0.01, jitter 6 with equal
parts, 3 masks); the constructor's defaults are a cheaper gated variant for measured-data threats.
The score is only as informative as the model: it needs complex outputs (a magnitude-only U-Net
has no phase to be consistent with), a floor -- the model's own error on ``Omega \\ Delta`` --
below the change an attack causes, and (``variable="input"``) a model whose ``L`` is lowest near
the clean input: a physics-based network whose data-consistency weight amplifies input components
outside ``Omega`` lets the optimiser lower ``L`` by moving there.

References:
    Saberi, Zhang, Akcakaya, "Training-free mitigation of adversarial attacks on deep
    learning-based MRI reconstruction", arXiv:2501.01908.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from reconguard.attacks.base import call_model, frozen
from reconguard.attacks.threat import ThreatModel
from reconguard.defenses.base import Defense
from reconguard.defenses.cyclic_batch import CyclicBatch, CyclicResult, tile
from reconguard.defenses.cyclic_masks import delta_masks
from reconguard.errors import ConfigError, DataError, require
from reconguard.models.base import validate_input_delta
from reconguard.physics.masks import MaskGenerator
from reconguard.physics.operators import MRIOperator, validate_kspace

_TINY = 1e-12
# The paper's configuration (arXiv:2501.01908 and its code, Config.yaml): what it computes ...
_PAPER = dict(num_masks=3, eps=0.01, step_size=0.005, steps=100, stages=2, jitter_scale=6.0, patience=None,
              threshold=None, variable="input", ball="real_imag", jitter_phase="equal")
# ... and how its code computes it (masks one after another, x1 recomputed for every mask).
_REFERENCE = dict(_PAPER, batched_masks=False, share_first_stage=False)
VARIABLES = ("measured", "input")
BALLS = ("complex", "real_imag")
JITTER_PHASES = ("circular", "equal")


class CyclicMitigation(Defense):
    """Cyclic measurement-consistency mitigation of a reconstructor, with a built-in detector.

    ``forward`` returns :attr:`CyclicResult.recon` of :meth:`mitigate`. Deterministic given
    ``seed`` (masks and jitter are drawn from it at every call), hence ``stochastic = False``.
    Not differentiable: the inner loop takes sign gradients and an argmin over iterates, so
    gradients through it say nothing; attack it adaptively with
    :class:`~reconguard.attacks.BPDA` (e.g. ``BPDA(defense, defense.model)``). It takes an
    ``input_delta`` (a network-input perturbation) when its model does.

    Args:
        model: Any reconstructor (single- or multi-coil; multi-coil needs ``coil_maps``).
        num_masks: Number ``K`` of ``Delta`` masks (evaluated as one batch of ``K * B``).
        eps: Ball radius relative to ``max |A^H y|`` (image-domain linf, as the attacks).
        step_size: First sign-gradient step, same units as ``eps``; decays linearly to 0.
        steps: Maximum number of iterations.
        stages: Reconstructions per chain (see the module docstring; 2 = the reference).
        jitter_scale: Jitter level in units of the RMS measured residual (0 disables it).
        jitter_phase: ``"circular"`` or ``"equal"`` (equal real and imaginary parts).
        variable: ``"measured"`` or ``"input"`` (see the module docstring).
        ball: ``"complex"`` (modulus) or ``"real_imag"`` (box) linf ball.
        mask_generator: Draws the ``Delta`` masks; ``None`` infers a ``RandomMask`` from
            ``Omega`` (Cartesian line masks only).
        threshold: Detector threshold (see :meth:`calibrated`); ``None`` mitigates every slice.
        detector_masks: How many of the ``K`` masks the detector score uses (the first ones);
            ``None``: all. A clean slice that passes the gate costs ``x1`` plus a batch of this
            many second-stage reconstructions, so ``1`` makes it two reconstructions.
        patience: Stop when no slice's best loss improved by ``tolerance`` (relative) for this
            many iterations; ``None`` runs all ``steps``.
        tolerance: Relative improvement that resets ``patience``.
        batched_masks: Run the ``K`` masks as one batch (``False``: one after another).
        share_first_stage: Compute ``x1`` once for all masks (``False``: once per mask).
        seed: Seeds the masks and the jitter.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64; mask: bool ``(B or 1, 1, 1 or H, W)``;
        coil_maps: ``(B, C, H, W)`` (needed when ``C > 1``); input_delta ``(B, 1, H, W)``;
        output: ``(B, 1, H, W)`` complex64

    References:
        Saberi, Zhang, Akcakaya, arXiv:2501.01908.
    """

    name = "cyclic"
    differentiable = False
    stochastic = False

    def __init__(self, model, *, num_masks: int = 3, eps: float = 0.01, step_size: float = 0.005,
                 steps: int = 100, stages: int = 2, jitter_scale: float = 1.0, jitter_phase: str = "circular",
                 variable: str = "measured", ball: str = "complex", mask_generator: MaskGenerator | None = None,
                 threshold: float | None = None, detector_masks: int | None = None, patience: int | None = 10,
                 tolerance: float = 1e-3, batched_masks: bool = True, share_first_stage: bool = True,
                 seed: int = 0):
        super().__init__(model)
        for label, value, low in (("num_masks", num_masks, 1), ("steps", steps, 1), ("stages", stages, 2)):
            require(isinstance(value, int) and value >= low, f"{label} must be an integer >= {low}, got {value!r}")
        for label, value in (("eps", eps), ("step_size", step_size), ("jitter_scale", jitter_scale),
                             ("tolerance", tolerance)):
            ok = isinstance(value, (int, float)) and np.isfinite(value) and value >= 0
            require(ok, f"{label} must be a finite number >= 0, got {value!r}")
        for label, value, choices in (("variable", variable, VARIABLES), ("ball", ball, BALLS),
                                      ("jitter_phase", jitter_phase, JITTER_PHASES)):
            require(value in choices, f"{label} must be one of {list(choices)}, got {value!r}")
        require(variable == "measured" or getattr(model, "accepts_input_delta", False),
                f"variable='input' needs a model that takes a network-input perturbation (input_delta); "
                f"{getattr(model, 'name', type(model).__name__)} does not")
        ok = detector_masks is None or (isinstance(detector_masks, int) and 1 <= detector_masks <= num_masks)
        require(ok, f"detector_masks must be None or an integer in [1, num_masks={num_masks}], got {detector_masks!r}")
        require(patience is None or (isinstance(patience, int) and patience >= 1),
                f"patience must be None or an integer >= 1, got {patience!r}")
        require(mask_generator is None or isinstance(mask_generator, MaskGenerator),
                f"mask_generator must be a MaskGenerator, got {type(mask_generator).__name__}")
        require(threshold is None or (isinstance(threshold, (int, float)) and np.isfinite(threshold)),
                f"threshold must be a finite number or None, got {threshold!r}")
        support = "network_input" if variable == "input" else "zero_filled"
        self.threat = ThreatModel(domain="image", norm="linf", eps=float(eps), linf_mode=ball, support=support)
        self.num_masks, self.step_size, self.steps, self.stages = num_masks, float(step_size), steps, stages
        self.jitter_scale, self.jitter_phase, self.variable = float(jitter_scale), jitter_phase, variable
        self.mask_generator, self.detector_masks = mask_generator, detector_masks
        self.patience, self.tolerance, self.seed = patience, float(tolerance), seed
        self.batched_masks, self.share_first_stage = bool(batched_masks), bool(share_first_stage)
        self.threshold = None if threshold is None else float(threshold)
        self.accepts_input_delta = bool(getattr(model, "accepts_input_delta", False))
        self.evaluations = 0

    @classmethod
    def paper(cls, model, **overrides: Any) -> "CyclicMitigation":
        """The paper's configuration (see the module docstring), computed efficiently.

        Every input is mitigated (no detector), over the whole network-input image, in a 0.01 box,
        100 sign-gradient steps from 0.005 decaying linearly, jitter 6x the residual with equal
        real and imaginary parts, 3 fixed masks. Needs a model with ``accepts_input_delta``.
        """
        return cls._configured(model, _PAPER, overrides)

    @classmethod
    def reference(cls, model, **overrides: Any) -> "CyclicMitigation":
        """:meth:`paper` *at the reference code's cost*, for side-by-side timing: masks evaluated
        one after another and ``x1`` recomputed for every mask. Setting ``batched_masks`` and
        ``share_first_stage`` back to ``True`` changes the cost only, not the result (up to float
        round-off)."""
        return cls._configured(model, _REFERENCE, overrides)

    @classmethod
    def _configured(cls, model, preset: dict[str, Any], overrides: dict[str, Any]) -> "CyclicMitigation":
        accepted = set(preset) | {"tolerance", "mask_generator", "seed", "batched_masks", "share_first_stage"}
        unknown = sorted(set(overrides) - accepted)
        require(not unknown, f"unknown option(s) {unknown} for CyclicMitigation; it accepts {sorted(accepted)}")
        return cls(model, **{**preset, **overrides})

    # -- public API ------------------------------------------------------------------------

    def mitigate(self, masked_kspace: torch.Tensor, mask: torch.Tensor, *, coil_maps: torch.Tensor | None = None,
                 input_delta: torch.Tensor | None = None) -> CyclicResult:
        """Detect, then mitigate the slices whose score exceeds :attr:`threshold` (all if ``None``).

        Returns:
            The :class:`CyclicResult`; clean slices cost ``x1`` plus one batched pass.

        Shapes:
            masked_kspace: ``(B, C, H, W)``; mask: broadcastable; coil_maps: ``(B, C, H, W)``;
            input_delta: ``(B, 1, H, W)``
        """
        validate_kspace(masked_kspace, mask, name="cyclic input")
        if input_delta is not None:
            validate_input_delta(self, masked_kspace, input_delta)
        start, calls = time.perf_counter(), self.evaluations
        with frozen(self.model):
            batch = self._prepare(masked_kspace, mask.to(torch.bool), coil_maps, input_delta)
            if self.threshold is None:
                delta, loss, recon, score, history = self._optimise(batch)
                flagged = torch.ones_like(score, dtype=torch.bool)
            else:
                with torch.no_grad():
                    score, recon = self._loss(batch, batch.y, batch.given, masks=self.detector_masks,
                                              plain=batch.given is None)
                flagged = score > self.threshold
                delta, loss, history = torch.zeros_like(recon), score.clone(), []
                if bool(flagged.any()):
                    index = flagged.nonzero().flatten()
                    best_delta, best_loss, best_recon, _, history = self._optimise(batch.select(index))
                    recon = recon.clone()
                    delta[index], loss[index], recon[index] = best_delta, best_loss, best_recon
        return CyclicResult(recon=recon, delta=delta, score=score, loss=loss, mitigated=flagged,
                            budget=batch.budget, history=history, evaluations=self.evaluations - calls,
                            seconds=time.perf_counter() - start)

    @torch.no_grad()
    def score(self, masked_kspace: torch.Tensor, mask: torch.Tensor, *, coil_maps: torch.Tensor | None = None,
              input_delta: torch.Tensor | None = None) -> torch.Tensor:
        """Cyclic-inconsistency score of each slice (the detector statistic; larger = suspect).

        Costs ``x1`` plus one batched pass over ``detector_masks`` of the masks.

        Shapes:
            masked_kspace: ``(B, C, H, W)`` -> ``(B,)``
        """
        validate_kspace(masked_kspace, mask, name="cyclic input")
        with frozen(self.model):
            batch = self._prepare(masked_kspace, mask.to(torch.bool), coil_maps, input_delta)
            return self._loss(batch, batch.y, batch.given, masks=self.detector_masks, plain=batch.given is None)[0]

    def cyclic_loss(self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None = None,
                    input_delta: torch.Tensor | None = None) -> torch.Tensor:
        """The cyclic loss of an input over all masks, differentiable w.r.t. k-space and
        ``input_delta`` (what an attacker who knows the defense keeps low, see
        :class:`~reconguard.attacks.PenalizedPGD`). The jitter is set from the detached input.

        Shapes:
            masked_kspace: ``(B, C, H, W)`` -> ``(B,)``
        """
        with frozen(self.model):
            given = None if input_delta is None else input_delta.detach()
            batch = self._prepare(masked_kspace.detach(), mask.to(torch.bool), coil_maps, given)
            with torch.no_grad():
                batch.jitter = self._jitter(batch, None)
            return self._loss(batch, masked_kspace, input_delta)[0]

    def calibrated(self, data: torch.Tensor | Iterable[Any], *, quantile: float = 0.95) -> "CyclicMitigation":
        """This defense with :attr:`threshold` at a quantile of the scores of *clean* inputs (a copy
        sharing the model; ``self`` is unchanged).

        Args:
            data: A tensor of scores, or an iterable of score tensors, of mappings with keys
                ``masked_kspace``, ``mask`` (and ``coil_maps``), or of tuples
                ``(masked_kspace, mask[, coil_maps])``.
            quantile: In ``[0, 1]``; the expected false-alarm rate on clean data is ``1 - quantile``.
        """
        require(0 <= quantile <= 1, f"quantile must be in [0, 1], got {quantile}")
        chunks = [data] if isinstance(data, torch.Tensor) else [self._scores_of(item) for item in data]
        scores = torch.cat([c.detach().flatten().float().cpu() for c in chunks]) if chunks else torch.empty(0)
        require(scores.numel() > 0 and bool(torch.isfinite(scores).all()),
                "calibrated needs at least one finite clean score", DataError)
        gated = copy.copy(self)  # shallow: the same protected model
        gated.threshold = float(torch.quantile(scores.double(), quantile))
        return gated

    def _scores_of(self, item: Any) -> torch.Tensor:
        if isinstance(item, torch.Tensor):
            return item
        if isinstance(item, Mapping):
            return self.score(item["masked_kspace"], item["mask"], coil_maps=item.get("coil_maps"))
        if isinstance(item, (tuple, list)) and len(item) in (2, 3):
            return self.score(item[0], item[1], coil_maps=item[2] if len(item) == 3 else None)
        raise ConfigError(f"calibrated expects scores or clean batches, got {type(item).__name__}")

    def _reconstruct(self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None,
                     input_delta: torch.Tensor | None = None) -> torch.Tensor:
        return self.mitigate(masked_kspace, mask, coil_maps=coil_maps, input_delta=input_delta).recon

    # -- the cyclic loss -------------------------------------------------------------------

    def _prepare(self, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None,
                 given: torch.Tensor | None) -> CyclicBatch:
        batch, coils, height, width = y.shape
        require(mask.shape[1] == 1, f"cyclic mitigation needs one mask for all coils, got {tuple(mask.shape)}",
                DataError)
        require(coils == 1 or maps is not None, "cyclic mitigation on multi-coil data needs coil_maps (e.g. "
                "reconguard.physics.estimate_coil_maps) to map images back to k-space")
        if maps is not None:
            try:
                maps = maps.detach().expand(y.shape)
            except RuntimeError:
                raise DataError(f"coil_maps {tuple(maps.shape)} do not fit k-space {tuple(y.shape)}") from None
        y = y.detach()
        omega = mask.expand(batch, *mask.shape[1:])
        deltas = delta_masks(omega, (height, width), num_masks=self.num_masks, generator=self.mask_generator,
                             seed=self.seed).to(y.device)
        # One unit-RMS noise pattern shared by all slices: a slice's score does not depend on its batch.
        gen, shape = torch.Generator(device=y.device).manual_seed(self.seed), (1, *y.shape[1:])
        real = torch.randn(shape, generator=gen, device=y.device)
        imag = real if self.jitter_phase == "equal" else torch.randn(shape, generator=gen, device=y.device)
        noise = torch.complex(real, imag).expand(y.shape) * 0.5**0.5
        step = ThreatModel(domain="image", norm="linf", eps=self.step_size).budget(y, omega, coil_maps=maps)
        budget = self.threat.budget(y, omega, coil_maps=maps)
        return CyclicBatch(y, omega, maps, deltas, noise, budget, step, None if given is None else given.detach())

    def _jitter(self, batch: CyclicBatch, x1: torch.Tensor | None) -> torch.Tensor:
        """The fixed jitter, scaled by the residual of ``x1 = f(y)`` (computed when ``None``)."""
        if x1 is None:
            x1 = self._model(batch.y, batch.omega, batch.maps, None)
        residual = batch.y - MRIOperator(batch.omega, batch.maps)(x1.detach())
        count = batch.omega.broadcast_to(residual.shape).sum(dim=(-2, -1), keepdim=True).clamp_min(1)
        sigma = (residual.abs().pow(2).sum(dim=(-2, -1), keepdim=True) / count).sqrt()
        return self.jitter_scale * sigma * batch.noise

    def _model(self, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None,
               input_delta: torch.Tensor | None) -> torch.Tensor:
        """One call of the protected model (counted in :attr:`evaluations`)."""
        self.evaluations += 1
        return call_model(self.model, y, mask, maps, input_delta)

    def _loss(self, batch: CyclicBatch, y: torch.Tensor, input_delta: torch.Tensor | None, *,
              masks: int | None = None, plain: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Cyclic loss per slice of the input ``(y, input_delta)`` over the first ``masks`` masks
        (all if ``None``), and ``x1``; the jitter is fixed on the first call, from this ``x1``
        when ``plain`` (the input is the measurement alone), else from an extra ``f(y)``.

        Shapes:
            y: ``(B, C, H, W)``; input_delta ``(B, 1, H, W)`` -> loss ``(B,)``, x1 ``(B, 1, H, W)``
        """
        num = self.num_masks if masks is None else masks
        groups = [list(range(num))] if self.batched_masks else [[k] for k in range(num)]
        measured = y if input_delta is None else y + MRIOperator(batch.omega, batch.maps)(input_delta)
        shared = self._model(y, batch.omega, batch.maps, input_delta) if self.share_first_stage else None
        x1, losses = shared, []
        for group in groups:
            n = len(group)
            if shared is not None:
                x = tile(shared, n)
            else:
                x = self._model(tile(y, n), tile(batch.omega, n), tile(batch.maps, n),
                                tile(input_delta, n))
                x1 = x[: len(y)] if x1 is None else x1
            if batch.jitter is None:
                with torch.no_grad():
                    batch.jitter = self._jitter(batch, x1 if plain else None)
            losses.append(self._cycles(batch, measured, x, group).reshape(n, -1))
        return torch.cat(losses).mean(dim=0), x1

    def _cycles(self, batch: CyclicBatch, measured: torch.Tensor, x: torch.Tensor, group: list[int]) -> torch.Tensor:
        """Loss of the ``len(group) * B`` chains started from ``x`` (stage-1 images, repeated)."""
        n, num = len(group), self.num_masks
        maps, omega = tile(batch.maps, n), tile(batch.omega, n)
        target, noise = tile(measured, n), tile(batch.jitter, n)
        total = 0.0
        for stage in range(1, self.stages):
            other = batch.deltas[[(k + stage - 1) % num for k in group]].flatten(0, 1)
            x = self._model(MRIOperator(other, maps)(x) + other * noise, other, maps, None)
            predicted = MRIOperator(omega, maps)(x)
            error = (predicted - target).flatten(1).norm(dim=1)
            total = total + error / predicted.flatten(1).norm(dim=1).clamp_min(_TINY)
        return total / (self.stages - 1)

    # -- the mitigation --------------------------------------------------------------------

    def _input(self, batch: CyclicBatch, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model input ``(y, input_delta)`` when the mitigation variable is ``delta``."""
        y, own = self.threat.model_input(batch.y, batch.omega, delta, batch.maps)
        if batch.given is None:
            return y, own
        return y, batch.given if own is None else batch.given + own

    def _optimise(self, batch: CyclicBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                     list[float]]:
        """Projected sign-gradient descent on the cyclic loss; the best iterate per slice.

        Returns ``(delta, loss, recon, loss at delta = 0, history)``.
        """
        support = self.threat.support_mask(batch.omega, batch.y)
        delta = torch.zeros_like(batch.y[:, :1])
        best_delta, best_loss, best_recon = delta, None, None
        history: list[float] = []
        stale, reference = 0, None
        for t in range(self.steps):
            delta = delta.detach().requires_grad_(True)
            with torch.enable_grad():
                # At t = 0 (delta = 0) without a given input perturbation, x1 is f(y) itself.
                loss, x1 = self._loss(batch, *self._input(batch, delta), plain=t == 0 and batch.given is None)
                (grad,) = torch.autograd.grad(loss.sum(), delta)
            loss, x1 = loss.detach(), x1.detach()
            if best_loss is None:
                first, best_loss, best_recon, reference = loss, loss, x1, loss
            better = loss < best_loss
            view = better.reshape(-1, 1, 1, 1)
            best_delta = torch.where(view, delta.detach(), best_delta)
            best_recon, best_loss = torch.where(view, x1, best_recon), torch.where(better, loss, best_loss)
            history.append(float(loss.mean()))
            alpha = batch.step * (1 - t / self.steps)
            delta = self.threat.project(delta.detach() - alpha * grad / grad.abs().clamp_min(_TINY),
                                        batch.budget, support)
            improved = best_loss < reference * (1 - self.tolerance)
            reference = torch.where(improved, best_loss, reference)
            stale = 0 if bool(improved.any()) else stale + 1
            if self.patience is not None and stale >= self.patience:
                break
        return best_delta, best_loss, best_recon, first, history
