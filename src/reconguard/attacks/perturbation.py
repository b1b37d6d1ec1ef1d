"""The machinery every perturbation attack (PGD, FGSM, sparse spikes) shares.

:class:`PerturbationAttack` puts the model in eval mode with frozen weights (no weight gradient is
ever computed; the mode and ``requires_grad`` flags are restored afterwards, even on error), builds
an :class:`AttackContext` (budget, support, reference image, seeded generator), calls the one
method a subclass overrides, :meth:`PerturbationAttack._run`, projects its answer once more, and
returns an :class:`~reconguard.attacks.base.AttackResult` with the matched noise baseline
(:func:`~reconguard.attacks.noise.matched_noise`) alongside.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from reconguard.attacks.base import (
    Attack,
    AttackInputs,
    AttackResult,
    Baseline,
    call_model,
    frozen,
    reconstruct_under,
)
from reconguard.attacks.losses import AttackLoss
from reconguard.attacks.noise import gaussian_noise, matched_noise
from reconguard.attacks.threat import ThreatModel
from reconguard.errors import ConfigError
from reconguard.models.base import Reconstructor
from reconguard.physics.operators import validate_kspace


@dataclass
class AttackContext:
    """Everything an attack needs about one batch; built by :class:`Attack`.

    Shapes:
        masked_kspace: ``(B, C, H, W)``; clean_recon ``(B, 1, H, W)``; reference, region: ``(B, 1, h, w)``;
        budget: ``(B, 1 or C, 1, 1)``; support: broadcastable to the delta shape
    """

    model: Reconstructor
    threat: ThreatModel
    loss_fn: AttackLoss
    clean_recon: torch.Tensor
    masked_kspace: torch.Tensor
    mask: torch.Tensor
    coil_maps: torch.Tensor | None
    reference: torch.Tensor
    region: torch.Tensor | None
    data_range: torch.Tensor | None
    budget: torch.Tensor
    support: torch.Tensor
    generator: torch.Generator
    eot_samples: int = 1
    evaluations: int = field(default=1)  # the clean reconstruction
    penalty: Callable[[torch.Tensor], torch.Tensor] | None = None  # delta -> (B,), subtracted from the loss
    # The last (delta, reconstruction) of a deterministic model: the final evaluation of an attack
    # whose best iterate is its last one (the usual case) costs no model call.
    _last: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def delta_shape(self) -> tuple[int, ...]:
        """Shape of the perturbation."""
        return self.threat.delta_shape(self.masked_kspace)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """Project onto this batch's threat set."""
        return self.threat.project(delta, self.budget, self.support)

    def reconstruct(self, delta: torch.Tensor) -> torch.Tensor:
        """The model's reconstruction under ``delta`` (perturbed measurement or network input)."""
        graph = torch.is_grad_enabled() and delta.requires_grad
        last = self._last
        if not graph and last is not None and last[0].shape == delta.shape and torch.equal(last[0], delta):
            return last[1]
        self.evaluations += 1
        recon = reconstruct_under(self.model, self.threat, self.masked_kspace, self.mask, delta, self.coil_maps)
        if self.eot_samples == 1 and not getattr(self.model, "stochastic", False):
            self._last = (delta.detach().clone(), recon.detach())
        return recon

    def loss_and_gradient(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-slice loss of ``delta`` (detached) and the gradient of its sum w.r.t. ``delta``.

        Only the input gradient is computed: the model's weights are frozen by :class:`Attack`.
        """
        delta = delta.detach().requires_grad_(True)
        loss = self.loss(delta)
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        return loss.detach(), grad

    def loss(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-slice loss of ``delta``, averaged over ``eot_samples`` draws of a random model, minus
        the :attr:`penalty` of ``delta`` when the attack sets one.

        The draws run as one batch (inputs repeated along the batch dimension).
        """
        value = self._damage(delta)
        return value if self.penalty is None else value - self.penalty(delta)

    def _damage(self, delta: torch.Tensor) -> torch.Tensor:
        if self.eot_samples == 1:
            recon = self.reconstruct(delta)
            return self.loss_fn(recon, self.reference, region=self.region, data_range=self.data_range)
        n, batch = self.eot_samples, delta.shape[0]
        kspace, input_delta = self.threat.model_input(self.masked_kspace, self.mask, delta, self.coil_maps)
        rep = lambda t: None if t is None else t.repeat(n, *([1] * (t.ndim - 1)))  # noqa: E731
        mask = rep(self.mask) if self.mask.shape[0] == batch else self.mask
        self.evaluations += 1
        recon = call_model(self.model, rep(kspace), mask, rep(self.coil_maps), rep(input_delta))
        data_range = self.data_range.repeat(n) if self.data_range is not None else None
        losses = self.loss_fn(recon, rep(self.reference), region=rep(self.region), data_range=data_range)
        return losses.reshape(n, batch).mean(dim=0)


class PerturbationAttack(Attack):
    """Base class of norm-bounded attacks: subclasses implement :meth:`_run` (``ctx -> delta``) and nothing else.

    Args:
        threat: The perturbation budget.
        loss: The objective (default: MSE to the ground truth).
        eot_samples: Draws of a stochastic model averaged per loss evaluation (expectation over
            transformation, batched); ``None`` uses 8 for models with ``stochastic = True`` and 1
            otherwise.
        gaussian_noise: Also record the Gaussian baseline of
            :func:`~reconguard.attacks.noise.gaussian_noise` (condition ``gaussian_noise``): for an
            l-inf threat, Gaussian noise whose largest entry equals the attack's, far below its
            energy. Never the verdict's baseline; for comparison with older results.
        seed: Seeds every random choice (random starts, noise baselines).

    References:
        Athalye, Engstrom, Ilyas, Kwok, "Synthesizing robust adversarial examples" (EOT),
        arXiv:1707.07397.
    """

    def __init__(
        self,
        threat: ThreatModel,
        loss: AttackLoss | None = None,
        *,
        eot_samples: int | None = None,
        gaussian_noise: bool = False,
        seed: int = 0,
    ):
        if not isinstance(threat, ThreatModel):
            raise ConfigError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        if eot_samples is not None and eot_samples < 1:
            raise ConfigError(f"eot_samples must be >= 1, got {eot_samples}")
        self.threat = threat
        self.loss = loss if loss is not None else AttackLoss()
        self.eot_samples = eot_samples
        self.gaussian_noise = bool(gaussian_noise)
        self.seed = seed

    def _attack(self, model: Reconstructor, inputs: AttackInputs) -> AttackResult:
        masked_kspace, mask, target, coil_maps = inputs.masked_kspace, inputs.mask, inputs.target, inputs.coil_maps
        region, max_value = inputs.region, inputs.max_value
        validate_kspace(masked_kspace, mask, name="attack input")
        start = time.perf_counter()
        with frozen(model), torch.enable_grad():
            ctx = self._context(
                model, masked_kspace.detach(), mask.to(torch.bool), target, coil_maps, region, max_value
            )
            delta, history = self._run(ctx)
            delta = ctx.project(delta.detach())
            noises = {"noise": matched_noise(self.threat, delta, ctx.support, ctx.generator)}
            if self.gaussian_noise:
                noises["gaussian_noise"] = gaussian_noise(self.threat, delta, ctx.support, ctx.generator)
            with torch.no_grad():
                recons = [ctx.reconstruct(delta), ctx.clean_recon, *map(ctx.reconstruct, noises.values())]
                losses = [self._final_loss(ctx, r) for r in recons]
        seconds = time.perf_counter() - start
        norm = self.threat.measure(delta)
        baselines = tuple(Baseline(condition, noise, recon, loss)
                          for (condition, noise), recon, loss in zip(noises.items(), recons[2:], losses[2:]))
        return AttackResult(
            threat=self.threat,
            delta=delta,
            baselines=baselines,
            adv_kspace=self.threat.model_input(masked_kspace, mask, delta, coil_maps)[0].detach(),
            recon=recons[0],
            clean_recon=recons[1],
            loss=losses[0],
            clean_loss=losses[1],
            norm=norm,
            budget=ctx.budget,
            relative_norm=norm / self._unit(masked_kspace, mask, coil_maps, target).to(norm.dtype),
            history=tuple(history),
            evaluations=ctx.evaluations,
            seconds=seconds,
        )

    def objective(self, recon: torch.Tensor, clean: torch.Tensor, target: torch.Tensor,
                  data_range: torch.Tensor | None) -> torch.Tensor:
        """:attr:`loss` of ``recon`` against its reference (the target, or ``clean`` for unsupervised losses)."""
        return self.loss(recon, self.loss.reference_image(clean, target), data_range=data_range)

    def _unit(self, masked_kspace, mask, coil_maps, target) -> torch.Tensor:
        """Per slice, the size :attr:`AttackResult.relative_norm` is measured in: the acquired
        samples for l0 (a count), else the budget of ``eps = 1`` relative to the data."""
        if self.threat.norm == "l0":
            return mask.expand_as(masked_kspace).flatten(1).sum(dim=1)
        unit = replace(self.threat, eps=1.0, relative=True)
        return unit.budget(masked_kspace, mask, coil_maps=coil_maps, target=target).flatten(1)[:, 0]

    def _final_loss(self, ctx: AttackContext, recon: torch.Tensor) -> torch.Tensor:
        return ctx.loss_fn(recon, ctx.reference, region=ctx.region, data_range=ctx.data_range)

    def _context(self, model, masked_kspace, mask, target, coil_maps, region, max_value) -> AttackContext:
        if self.loss.reference == "target" or self.threat.support == "fully_sampled":
            if target is None:
                raise ConfigError(f"{type(self).__name__} with this loss/threat needs the target image")
        with torch.no_grad():
            clean = model(masked_kspace, mask, coil_maps=coil_maps)
        reference = self.loss.reference_image(clean, target)
        if region is not None and region.shape[-2:] != reference.shape[-2:]:
            region = _pad_to(region, reference.shape[-2:])
        support = self.threat.support_mask(mask, masked_kspace)
        if region is not None and self.threat.domain == "image":
            support = support & _pad_to(region.to(torch.bool), masked_kspace.shape[-2:])
        generator = torch.Generator(device=masked_kspace.device).manual_seed(self.seed)
        return AttackContext(
            model=model,
            threat=self.threat,
            loss_fn=self.loss,
            clean_recon=clean,
            masked_kspace=masked_kspace,
            mask=mask,
            coil_maps=coil_maps,
            reference=reference.detach(),
            region=region,
            data_range=max_value,
            budget=self.threat.budget(masked_kspace, mask, coil_maps=coil_maps, target=target),
            support=support,
            generator=generator,
            eot_samples=self._eot_samples(model),
        )

    def _eot_samples(self, model: Reconstructor) -> int:
        if self.eot_samples is not None:
            return self.eot_samples
        return 8 if getattr(model, "stochastic", False) else 1

    def _run(self, ctx: AttackContext) -> tuple[torch.Tensor, list[float]]:  # pragma: no cover
        raise NotImplementedError


def keep_best(
    best: torch.Tensor, best_loss: torch.Tensor, delta: torch.Tensor, loss: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per slice, keep ``delta`` where its ``loss`` beats ``best_loss`` (the worst-case iterate).

    Shapes:
        best, delta: ``(B, ...)``; best_loss, loss: ``(B,)``
    """
    better = loss > best_loss
    view = better.reshape(-1, *([1] * (delta.ndim - 1)))
    return torch.where(view, delta, best), torch.where(better, loss, best_loss)


def _pad_to(region: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zero-pad a (cropped) image-space region to the full image size, centred."""
    height, width = int(shape[0]), int(shape[1])
    dh, dw = height - region.shape[-2], width - region.shape[-1]
    if dh == 0 and dw == 0:
        return region
    top, left = dh // 2, dw // 2
    return torch.nn.functional.pad(region, (left, dw - left, top, dh - top))
