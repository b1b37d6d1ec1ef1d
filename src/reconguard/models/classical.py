"""Classical model-based reconstruction: total-variation compressed sensing.

Also home of :func:`instance_scale`, which every model-based reconstructor uses to make its
weights independent of the arbitrary scale of k-space (the forward operator comes from
:func:`reconguard.physics.resolve_operator`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from reconguard.errors import require
from reconguard.models.base import ReconstructorModule
from reconguard.physics.coils import resolve_operator
from reconguard.physics.operators import MRIOperator


def instance_scale(image: torch.Tensor) -> torch.Tensor:
    """Per-instance maximum magnitude, floored so an all-zero input does not divide by zero.

    Model-based reconstructors divide the data by this scale, reconstruct, and multiply back, so
    their regularisation weights mean the same thing for fastMRI k-space (~1e-4) and for images
    scaled to a maximum of 1.

    Shapes:
        image: ``(B, 1, H, W)`` complex -> ``(B, 1, 1, 1)`` real
    """
    peak = image.abs().amax(dim=(1, 2, 3), keepdim=True)
    return peak.clamp_min(torch.finfo(peak.dtype).tiny)


def gradient(image: torch.Tensor) -> torch.Tensor:
    """Forward finite differences with a zero last difference (Neumann boundary).

    Shapes:
        image: ``(B, 1, H, W)`` -> ``(B, 2, H, W)`` (vertical, horizontal)
    """
    vertical = F.pad(torch.diff(image[:, 0], dim=-2), (0, 0, 0, 1))
    horizontal = F.pad(torch.diff(image[:, 0], dim=-1), (0, 1))
    return torch.stack([vertical, horizontal], dim=1)


def gradient_adjoint(grad: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`gradient` (minus the divergence).

    Shapes:
        grad: ``(B, 2, H, W)`` -> ``(B, 1, H, W)``
    """
    vertical = F.pad(grad[:, 0, :-1], (0, 0, 1, 1))
    horizontal = F.pad(grad[:, 1, :, :-1], (1, 1))
    adjoint = (vertical[:, :-1] - vertical[:, 1:]) + (horizontal[..., :-1] - horizontal[..., 1:])
    return adjoint.unsqueeze(1)


def scaled_problem(masked_kspace: torch.Tensor, mask: torch.Tensor,
                   coil_maps: torch.Tensor | None) -> tuple[MRIOperator, torch.Tensor, torch.Tensor]:
    """What a model-based reconstructor starts from: the forward operator, the adjoint image
    ``A^H y`` and its :func:`instance_scale` (divide the data by it, multiply the result back).

    Shapes:
        masked_kspace: ``(B, C, H, W)`` -> adjoint ``(B, 1, H, W)``, scale ``(B, 1, 1, 1)``
    """
    operator = resolve_operator(masked_kspace, mask, coil_maps)
    adjoint = operator.adjoint(masked_kspace)
    return operator, adjoint, instance_scale(adjoint)


class CSTV(ReconstructorModule):
    """Compressed sensing with isotropic total variation, by unrolled Chambolle-Pock.

    Solves ``min_x 0.5 ||A x - y||^2 + lam * s * TV(x)`` with ``TV(x) = sum_pixels
    sqrt(|D_v x|^2 + |D_h x|^2)`` on the complex image and ``s`` the maximum magnitude of the
    zero-filled image (so ``lam`` is relative: it equals the absolute weight for images scaled to
    a maximum of 1). The primal-dual iterations are plain differentiable tensor operations, so
    white-box attacks can backpropagate through all of them. There are no trainable parameters.

    Args:
        lam: Relative TV weight.
        iterations: Number of primal-dual iterations.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64

    References:
        Chambolle, Pock, "A first-order primal-dual algorithm for convex problems with
        applications to imaging", J. Math. Imaging Vis. 2011 (HAL hal-00490826);
        Lustig, Donoho, Pauly, "Sparse MRI", MRM 2007.
    """

    name = "cs_tv"

    def __init__(self, *, lam: float = 0.005, iterations: int = 50):
        require(float(lam) >= 0, f"cs_tv lam must be >= 0, got {lam}")
        require(int(iterations) >= 1, f"cs_tv iterations must be >= 1, got {iterations}")
        super().__init__(lam=float(lam), iterations=int(iterations))

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:
        operator, _, scale = scaled_problem(masked_kspace, mask, coil_maps)
        return scale * self._solve(operator, masked_kspace / scale)

    def _solve(self, operator: MRIOperator, kspace: torch.Tensor) -> torch.Tensor:
        lam = self.config["lam"]
        # ||K||^2 <= ||A||^2 + ||D||^2 <= max_pixel sum_c |S_c|^2 + 8; CP needs tau*sigma*||K||^2 < 1.
        maps = operator.coil_maps
        coil_norm = 1.0 if maps is None else float(maps.detach().abs().square().sum(1).max())
        step = 0.99 / (coil_norm + 8.0) ** 0.5
        # The TV dual lives on the scale of lam, the image on the scale of 1: a primal step larger than
        # the dual one by 0.1 / lam (tuned on phantoms) converges ~10x faster than tau == sigma.
        ratio = min(max(0.1 / lam, 1.0), 100.0) if lam > 0 else 100.0
        tau, sigma = step * ratio, step / ratio
        x = operator.adjoint(kspace)
        x_bar = x
        dual_k = torch.zeros_like(kspace)
        dual_g = torch.zeros_like(gradient(x))
        for _ in range(self.config["iterations"]):
            dual_k = (dual_k + sigma * (operator(x_bar) - kspace)) / (1 + sigma)
            dual_g = dual_g + sigma * gradient(x_bar)
            # Pixelwise projection onto the lam-ball; the tiny floor keeps sqrt differentiable at 0.
            norm = (dual_g.real.square() + dual_g.imag.square()).sum(1, keepdim=True)
            norm = norm.add(1e-24).sqrt()
            dual_g = dual_g / (norm / lam).clamp_min(1.0) if lam > 0 else torch.zeros_like(dual_g)
            x_new = x - tau * (operator.adjoint(dual_k) + gradient_adjoint(dual_g))
            x_bar = 2 * x_new - x
            x = x_new
        return x
