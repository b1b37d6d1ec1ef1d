"""Projected gradient descent (and FGSM as its one-step case) on any threat model."""

from __future__ import annotations

import torch

from reconguard.attacks.losses import AttackLoss
from reconguard.attacks.noise import scaled_noise
from reconguard.attacks.perturbation import AttackContext, PerturbationAttack, keep_best
from reconguard.attacks.threat import ThreatModel
from reconguard.errors import ConfigError


class PGD(PerturbationAttack):
    """Projected gradient ascent on the attack loss, inside the threat set.

    Steps follow the geometry of the norm: the (complex) sign of the gradient for linf,
    the per-slice normalised gradient for l2. The best iterate of every slice (highest loss)
    over all steps and restarts is kept, not the last one.

    Args:
        threat: Budget; l2 or linf (use :class:`~reconguard.attacks.sparse.SparseKSpace` for l0).
        loss: Objective (default: supervised MSE).
        steps: Gradient steps per restart (``steps=1, random_start=False, step_size=1`` is FGSM).
        step_size: Step as a fraction of the budget; default ``1/5`` for linf (the
            cyclic-consistency paper's eps/5) and ``2.5/steps`` for l2 (Madry et al.).
        random_start: Start each restart from a random point of the threat set (uniform radius).
        restarts: Independent restarts; the best result per slice is kept.
        patience: Stop a restart early when the mean loss has not improved by ``1e-4``
            (relative) for this many steps; ``None`` runs every step.
        eot_samples: Draws of a stochastic model averaged per step (see :class:`Attack`).
        gaussian_noise: Also record the Gaussian baseline (see :class:`PerturbationAttack`).
        seed: Seeds random starts and the noise baselines.

    References:
        Madry et al., "Towards deep learning models resistant to adversarial attacks",
        arXiv:1706.06083; Goodfellow et al. (FGSM), arXiv:1412.6572; Athalye et al. (EOT),
        arXiv:1707.07397.
    """

    def __init__(
        self,
        threat: ThreatModel,
        loss: AttackLoss | None = None,
        *,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        patience: int | None = None,
        eot_samples: int | None = None,
        gaussian_noise: bool = False,
        seed: int = 0,
    ):
        super().__init__(threat, loss, eot_samples=eot_samples, gaussian_noise=gaussian_noise, seed=seed)
        if threat.norm not in ("l2", "linf"):
            raise ConfigError(f"PGD supports l2 and linf threats, got {threat.norm}; use SparseKSpace for l0")
        if steps < 1 or restarts < 1 or (patience is not None and patience < 1):
            raise ConfigError(f"steps, restarts and patience must be >= 1, got {steps}, {restarts}, {patience}")
        default = 0.2 if threat.norm == "linf" else 2.5 / steps
        self.step_size = default if step_size is None else step_size
        if not self.step_size > 0:
            raise ConfigError(f"step_size must be positive, got {step_size}")
        self.steps, self.random_start, self.restarts = steps, random_start, restarts
        self.patience = patience

    def _run(self, ctx: AttackContext) -> tuple[torch.Tensor, list[float]]:
        shape = ctx.delta_shape
        best = torch.zeros(shape, dtype=ctx.masked_kspace.dtype, device=ctx.masked_kspace.device)
        best_loss = torch.full((shape[0],), -torch.inf, device=best.device)
        history: list[float] = []
        for _ in range(self.restarts):
            delta = self._start(ctx, best)
            stale, reference = 0, -torch.inf
            for _ in range(self.steps):
                loss, grad = ctx.loss_and_gradient(delta)
                best, best_loss = keep_best(best, best_loss, delta, loss)
                history.append(float(loss.mean()))
                delta = ctx.project(delta + self._step(grad, ctx.budget))
                stale = 0 if history[-1] > reference + 1e-4 * abs(reference) else stale + 1
                reference = max(reference, history[-1])
                if self.patience is not None and stale >= self.patience:
                    break
            with torch.no_grad():
                loss = ctx.loss(delta)
            best, best_loss = keep_best(best, best_loss, delta, loss)
            history.append(float(loss.mean()))
        return best, history

    def _start(self, ctx: AttackContext, like: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return torch.zeros_like(like)
        radius = torch.rand(ctx.budget.shape, generator=ctx.generator, device=like.device, dtype=ctx.budget.dtype)
        noise = scaled_noise(ctx.threat, ctx.delta_shape, ctx.support, radius * ctx.budget, ctx.generator, like=like)
        return ctx.project(noise)

    def _step(self, grad: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        return self.step_size * budget * self.threat.ascent(grad)


def fgsm(threat: ThreatModel, loss: AttackLoss | None = None, *, gaussian_noise: bool = False, seed: int = 0) -> PGD:
    """The fast gradient sign method: one full-budget step from the origin.

    References:
        Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial examples",
        arXiv:1412.6572.
    """
    return PGD(threat, loss, steps=1, step_size=1.0, random_start=False, gaussian_noise=gaussian_noise, seed=seed)
