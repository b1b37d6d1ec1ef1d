"""DDIM sampling with k-space data consistency: projection (Song et al.) or DPS guidance.

Every step of the sampler predicts the clean image ``x0`` from the current noisy one, enforces the
measurements on that prediction, and moves to the next (less noisy) timestep with DDIM:

- ``guidance="projection"``: ``x0`` is replaced by :func:`project` ``(x0)`` (acquired k-space
  samples replaced by the measured ones) and the noise estimate is re-derived from it, so the
  next iterate is built around a data-consistent image (Song et al. 2022 project the noisy
  iterate instead; Chung & Ye alternate predictor-corrector steps with the same projection).
- ``guidance="dps"``: the DDIM update of the unprojected ``x0`` is followed by the step
  ``x -= zeta * grad_{x_t} sum_b ||y_b - A x0_b(x_t)||_2`` (per-slice residual norms, DPS).

Both end with the projection of the last ``x0``: that is the output. For single-coil data
(``A = M F``) the projection is exact: ``M F x_out == y`` to float32 round-off. For multi-coil
data (``A = M F S``) each coil image ``S_c x0`` has its acquired samples replaced and the coils
are recombined by the SENSE adjoint, ``x' = sum_c conj(S_c) F^H ((1 - M) F S_c x0 + M y_c)``,
which for maps with ``sum_c |S_c|^2 = 1`` equals ``x0 + A^H (y - A x0)``: one unit gradient step
on ``0.5 ||A x - y||^2``. One image cannot in general match ``C`` noisy coil measurements, so
``A x' == y`` is not attainable; what holds is that the coil k-space *before* recombination
matches ``y`` exactly, that a fully sampled acquisition gives ``x' = A^H y`` whatever ``x0``
was, that an already consistent ``x0`` is left unchanged, and that (``||A|| <= 1``) the data
residual never grows: ``||A x' - y|| <= ||A x0 - y||``.

Images travel through the sampler as real ``(B, 2, H, W)`` tensors (real, imaginary part), the
network's layout; :func:`project` and :func:`residual_norm` take the complex ``(B, 1, H, W)``
image of the public convention.

References:
    Song, Shen, Xing, Ermon, "Solving inverse problems in medical imaging with score-based
    generative models", arXiv:2111.08005; Chung, Ye, "Score-based diffusion models for
    accelerated MRI", arXiv:2110.05243; Song, Meng, Ermon, "Denoising diffusion implicit
    models", arXiv:2010.02502; Chung, Kim, Mccann, Klasky, Ye, "Diffusion posterior sampling
    for general noisy inverse problems", arXiv:2209.14687.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from reconguard.models.diffusion.schedule import NoiseSchedule, ddim_timesteps
from reconguard.physics.operators import sens_expand, sens_reduce

GUIDANCES = ("projection", "dps")


def to_channels(image: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, 1, H, W)`` -> real ``(B, 2, H, W)`` (real, imaginary)."""
    return torch.cat([image.real, image.imag], dim=1)


def to_complex(channels: torch.Tensor) -> torch.Tensor:
    """Real ``(B, 2, H, W)`` -> complex ``(B, 1, H, W)``."""
    return torch.complex(channels[:, :1], channels[:, 1:])


def project(
    image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
) -> torch.Tensor:
    """Replace the acquired k-space samples of ``image`` (each coil's) by the measured ones.

    Single-coil: the orthogonal projection onto ``{x : M F x = y}``. Multi-coil: the per-coil
    replacement recombined with ``sum_c conj(S_c) (.)`` (see the module docstring for what that
    guarantees).

    Shapes:
        image: ``(B, 1, H, W)`` complex; kspace: ``(B, C, H, W)``; mask: broadcastable bool;
        coil_maps: ``(B, C, H, W)`` or ``None`` (single-coil) -> ``(B, 1, H, W)``
    """
    return sens_reduce(torch.where(mask, kspace, sens_expand(image, coil_maps)), coil_maps)


def residual_norm(
    image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
) -> torch.Tensor:
    """``||y - M F S x||_2`` per slice (DPS's guidance objective).

    Shapes:
        image: ``(B, 1, H, W)`` complex -> ``(B,)`` real
    """
    residual = (sens_expand(image, coil_maps) - kspace) * mask
    power = torch.view_as_real(residual).square().flatten(1).sum(1)
    # The floor keeps sqrt's gradient finite for an exactly consistent image.
    return power.clamp_min(torch.finfo(power.dtype).tiny).sqrt()


def clip_magnitude(channels: torch.Tensor, limit: float) -> torch.Tensor:
    """Scale down pixels whose complex magnitude exceeds ``limit`` (the phase is kept).

    Shapes:
        channels: ``(B, 2, H, W)`` real (real, imaginary) -> ``(B, 2, H, W)``
    """
    magnitude = channels.square().sum(dim=1, keepdim=True).add(1e-12).sqrt()
    return channels * (limit / magnitude).clamp(max=1.0)


@dataclass(frozen=True)
class DDIMSampler:
    """DDIM over ``steps`` of the trained timesteps, with data consistency at every step.

    Attributes:
        steps: Sampler steps (timesteps from ``T - 1`` to 0, evenly spread).
        prediction: What the network predicts, ``"eps"`` or ``"v"`` (as it was trained).
        eta: DDIM stochasticity (0: deterministic given the start noise; 1: DDPM-like).
        guidance: ``"projection"`` or ``"dps"`` (see the module docstring).
        zeta: DPS step size (ignored by projection).
        clip: Largest magnitude of the predicted clean image (``None``: no limit). Early steps
            divide the network's error by ``sqrt(abar_t)`` (~0.006 at ``t = T - 1``); bounding
            ``x0`` to the data range, as DDPM/DDIM samplers clip to ``[-1, 1]``, keeps those
            errors from dominating the next iterate (and the unacquired k-space of the output).
        checkpointing: Recompute each step in the backward pass (``torch.utils.checkpoint``):
            memory for a gradient through the sampler is one step's activations plus the
            ``steps`` iterates, instead of every step's activations. Same values and gradients.

    Shapes:
        kspace: ``(B, C, H, W)`` complex (normalised measurements) -> ``(B, 1, H, W)`` complex
    """

    steps: int = 20
    prediction: str = "eps"
    eta: float = 1.0
    guidance: str = "projection"
    zeta: float = 1.0
    clip: float | None = 1.5
    checkpointing: bool = False

    def __call__(
        self,
        network: nn.Module,
        schedule: NoiseSchedule,
        kspace: torch.Tensor,
        mask: torch.Tensor,
        coil_maps: torch.Tensor | None,
        *,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Sample an image consistent with ``kspace``, all randomness drawn from ``generator``."""
        shape = (kspace.shape[0], 2, *kspace.shape[-2:])

        def draw() -> torch.Tensor:
            noise = torch.randn(shape, generator=generator, device=generator.device, dtype=kspace.real.dtype)
            return noise.to(kspace.device)

        x = draw()
        times = ddim_timesteps(schedule.timesteps, self.steps)
        use_checkpoint = self.checkpointing and torch.is_grad_enabled()
        for t, t_prev in zip(times, [*times[1:], -1]):
            # Noise is drawn here, outside the checkpointed step, so its recomputation sees the same.
            noise = draw() if self.eta > 0 and t_prev >= 0 else None
            args = (network, schedule, x, t, t_prev, noise, kspace, mask, coil_maps)
            x = checkpoint(self._step, *args, use_reentrant=False) if use_checkpoint else self._step(*args)
        return to_complex(x)

    def _step(
        self,
        network: nn.Module,
        schedule: NoiseSchedule,
        x: torch.Tensor,
        t: int,
        t_prev: int,
        noise: torch.Tensor | None,
        kspace: torch.Tensor,
        mask: torch.Tensor,
        coil_maps: torch.Tensor | None,
    ) -> torch.Tensor:
        """One DDIM step ``x_t -> x_{t_prev}``; the last one (``t_prev < 0``) returns ``project(x0)``."""
        abar, abar_prev = schedule.abar(t), schedule.abar(t_prev)
        guide = self.guidance == "dps" and t_prev >= 0 and self.zeta > 0
        differentiate = torch.is_grad_enabled()
        with torch.enable_grad() if guide else contextlib.nullcontext():
            if guide and not x.requires_grad:
                x = x.detach().requires_grad_(True)
            output = network(x, torch.full((x.shape[0],), t, device=x.device))
            x0 = schedule.predict_x0(output, x, t, self.prediction)
            if self.clip is not None:
                x0 = clip_magnitude(x0, self.clip)
            if guide:
                objective = residual_norm(to_complex(x0), kspace, mask, coil_maps).sum()
                (grad,) = torch.autograd.grad(objective, x, create_graph=differentiate)
        if guide and not differentiate:
            x, x0 = x.detach(), x0.detach()
        if self.guidance == "projection" or t_prev < 0:
            x0 = to_channels(project(to_complex(x0), kspace, mask, coil_maps))
            if t_prev < 0:
                return x0
        # The noise estimate that goes with the clipped / projected x0 (as DDIM does after clipping).
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        sigma = self.eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
        x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp_min(0).sqrt() * eps
        if noise is not None:
            x_prev = x_prev + sigma * noise
        return x_prev - self.zeta * grad if guide else x_prev
