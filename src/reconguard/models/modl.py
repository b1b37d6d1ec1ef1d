"""MoDL: unrolled alternation of a shared CNN denoiser and conjugate-gradient data consistency.

References:
    Aggarwal, Mani, Jacob, "MoDL: Model-Based Deep Learning Architecture for Inverse Problems",
    arXiv:1712.02862.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from reconguard.errors import require, require_at_least
from reconguard.models.base import ReconstructorModule
from reconguard.models.classical import scaled_problem

_CG_RELATIVE_TOLERANCE = 1e-5  # ||residual|| / ||rhs|| below which CG stops (float32 resolution)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of the per-instance inner product ``<a, b>``, shape ``(B, 1, ..., 1)``."""
    dims = tuple(range(1, a.ndim))
    return (a.conj() * b).real.sum(dim=dims, keepdim=True)


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    *,
    lam: torch.Tensor | float,
    iterations: int,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Solve ``(A^H A + lam I) x = rhs`` for every instance of a batch by conjugate gradient.

    A fixed number of iterations of plain tensor operations, so the solve is differentiable by
    autograd (gradients flow to ``rhs``, ``lam`` and anything ``normal`` depends on).

    Args:
        normal: Applies the Hermitian positive semi-definite ``A^H A``.
        rhs: Right-hand side.
        lam: Positive Tikhonov weight (scalar or broadcastable tensor).
        iterations: Number of CG iterations.
        x0: Initial guess (zeros when ``None``).

    Returns:
        The approximate solution.

    Shapes:
        rhs, x0, output: ``(B, ...)``; each ``B`` index is an independent system

    References:
        Hestenes, Stiefel, "Methods of conjugate gradients for solving linear systems", 1952;
        used as in Aggarwal et al., arXiv:1712.02862.
    """
    if x0 is None:
        x, residual = torch.zeros_like(rhs), rhs
    else:
        x, residual = x0, rhs - (normal(x0) + lam * x0)
    direction = residual
    rs_old = _inner(residual, residual)
    # An instance whose residual fell below a relative tolerance stops moving: its step sizes are
    # zeroed *before* the divisions (the double-where idiom), so neither the value nor the
    # gradient sees 0/0. Without it a system that CG solves exactly in a few iterations (single
    # coil: A^H A has two eigenvalues) gets NaN gradients from the ratios of vanishing residuals.
    floor = _CG_RELATIVE_TOLERANCE**2 * _inner(rhs, rhs).detach()
    for _ in range(iterations):
        a_dir = normal(direction) + lam * direction
        active = rs_old.detach() > floor
        curvature = _inner(direction, a_dir)
        alpha = torch.where(active, rs_old / torch.where(active, curvature, torch.ones_like(curvature)), 0.0)
        x = x + alpha * direction
        residual = residual - alpha * a_dir
        rs_new = _inner(residual, residual)
        beta = torch.where(active, rs_new / torch.where(active, rs_old, torch.ones_like(rs_old)), 0.0)
        direction = residual + beta * direction
        rs_old = torch.where(active, rs_new, rs_old)
    return x


class ResidualDenoiser(nn.Module):
    """``x + CNN(x)`` on the real/imaginary channels of a complex image.

    Hidden layers are 3x3 conv -> GroupNorm(1 group) -> ReLU; the last layer is a plain 3x3 conv
    back to 2 channels. One-group GroupNorm normalises each instance over all its features:
    unlike MoDL's original BatchNorm it computes the same function in train and eval mode (an
    attack in eval mode targets the network that was trained) and never mixes the slices of a
    batch (one slice's perturbation cannot change another's reconstruction).

    Shapes:
        image: ``(B, 1, H, W)`` complex -> ``(B, 1, H, W)`` complex
    """

    def __init__(self, *, chans: int, num_layers: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_chans = 2
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(in_chans, chans, 3, padding=1), nn.GroupNorm(1, chans), nn.ReLU()]
            in_chans = chans
        layers.append(nn.Conv2d(in_chans, 2, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        residual = self.layers(torch.cat([image.real, image.imag], dim=1))
        return image + torch.complex(residual[:, :1], residual[:, 1:])


class MoDL(ReconstructorModule):
    """Model-based deep learning: ``x_{k+1} = (A^H A + lam I)^{-1} (A^H y + lam D(x_k))``.

    Starts from ``x_0 = A^H y``; the denoiser ``D`` is shared by all unrolls; each data-consistency
    step is solved by conjugate gradient, warm-started at ``D(x_k)``. ``lam`` is learned,
    parametrised by a softplus so it stays positive. The data are divided by the per-instance
    maximum of ``|A^H y|`` before and multiplied back after, so the network sees images of
    maximum ~1 whatever the scale of k-space. Without ``coil_maps`` multi-coil data get ESPIRiT
    maps (see :func:`~reconguard.physics.resolve_operator`).

    A network-input perturbation ``input_delta`` is added to ``A^H y`` (after the scale is taken
    from the unperturbed ``A^H y``), and so enters the first denoiser *and* every
    data-consistency right-hand side, as in Saberi et al.'s code, where the network's input image
    ``zf`` is both. Its component outside the measured k-space leaves each data-consistency step
    multiplied by ``1 / lam`` (``(A^H A + lam I)`` is ``lam`` there): a small learned ``lam``
    makes MoDL fragile to such inputs.

    Args:
        num_unrolls: Number of denoiser / data-consistency alternations ``K``.
        cg_iterations: Conjugate-gradient iterations per data-consistency step.
        chans: Hidden channels of the denoiser.
        num_layers: Convolution layers of the denoiser (>= 2).
        lam: Initial data-consistency weight (> 0).
        learn_lam: Train ``lam`` (Aggarwal et al.) or keep it fixed.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64

    References:
        Aggarwal, Mani, Jacob, "MoDL: Model-Based Deep Learning Architecture for Inverse
        Problems", arXiv:1712.02862.
    """

    name = "modl"
    accepts_input_delta = True

    def __init__(
        self,
        *,
        num_unrolls: int = 5,
        cg_iterations: int = 10,
        chans: int = 64,
        num_layers: int = 5,
        lam: float = 0.05,
        learn_lam: bool = True,
    ):
        require_at_least("modl", 1, num_unrolls=num_unrolls, cg_iterations=cg_iterations, chans=chans)
        require_at_least("modl", 2, num_layers=num_layers)
        require(math.isfinite(lam) and lam > 0, f"modl lam must be a positive number, got {lam}")
        require(isinstance(learn_lam, bool), f"modl learn_lam must be true or false, got {learn_lam!r}")
        super().__init__(
            num_unrolls=num_unrolls, cg_iterations=cg_iterations, chans=chans, num_layers=num_layers, lam=lam,
            learn_lam=learn_lam,
        )
        self.denoiser = ResidualDenoiser(chans=chans, num_layers=num_layers)
        # softplus^{-1}(lam) = log(exp(lam) - 1), so softplus(raw_lam) starts at lam.
        raw = torch.tensor([math.log(math.expm1(lam))])
        if learn_lam:
            self.raw_lam = nn.Parameter(raw)
        else:
            self.register_buffer("raw_lam", raw)

    @property
    def lam(self) -> torch.Tensor:
        """The current (positive) data-consistency weight."""
        return F.softplus(self.raw_lam)

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None,
        input_delta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        operator, adjoint, scale = scaled_problem(masked_kspace, mask, coil_maps)
        if input_delta is not None:
            adjoint = adjoint + input_delta
        adjoint = adjoint / scale
        lam = self.lam
        image = adjoint
        for _ in range(self.config["num_unrolls"]):
            denoised = self.denoiser(image)
            image = conjugate_gradient(
                operator.normal, adjoint + lam * denoised, lam=lam,
                iterations=self.config["cg_iterations"], x0=denoised,
            )
        return image * scale
