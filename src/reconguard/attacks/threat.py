"""Threat models: where a perturbation lives, how it is measured, and how large it may be.

The MRI robustness literature uses incompatible budget conventions -- image-domain linf on the
max-normalised zero-filled image (Saberi et al.), l2 relative to the measured k-space, globally or
per coil (Darestani et al., Genzel et al.), absolute linf on raw k-space -- so their numbers cannot
be compared. A :class:`ThreatModel` makes the convention explicit data; every attack in
:mod:`reconguard.attacks` runs through the same :meth:`ThreatModel.project`.

Domains and supports (``y`` = measured under-sampled k-space, ``A = M F S`` the forward operator):

- ``kspace`` / ``acquired``: ``y_adv = y + M delta``, ``delta`` zero off the acquired samples;
- ``kspace`` / ``full``: ``delta`` lives on the full k-space grid before masking (its unacquired
  part never reaches the model but counts in the norm);
- ``image`` / ``zero_filled``: ``delta`` is an image whose measured part is added to the data,
  ``y_adv = y + A delta``, so the zero-filled image moves by ``A^H A delta`` (only the part of
  ``delta`` on the acquired k-space survives); relative budgets refer to ``max |A^H y|``;
- ``image`` / ``fully_sampled``: ``delta`` perturbs the fully sampled image before
  under-sampling, relative budgets refer to the target's maximum; ``y_adv = y + A delta``.
- ``image`` / ``network_input``: ``delta`` is added to the *network's input image* ``A^H y``
  itself and is not projected onto the measurements (Saberi et al.'s threat): ``y`` is unchanged
  and the model gets ``input_delta=delta``, so the part of ``delta`` outside the acquired k-space
  reaches the network too (a change of ``y`` can only move ``A^H y`` by ``A^H A delta``).
  Relative budgets refer to ``max |A^H y|`` as for ``zero_filled``. Only reconstructors with
  ``accepts_input_delta`` take it (:data:`reconguard.models.base.INPUT_DELTA_MODELS`: the image
  networks add it to their zero-filled input, MoDL to ``A^H y`` in its first denoiser and every
  data-consistency step); :meth:`ThreatModel.model_input` says what to pass.

The ``zero_filled`` and ``network_input`` image threats differ most on physics-based networks: an
attacker who can touch only the measured data is in the first, one who can touch the image the
network is given (a compromised pre-processing step) in the second.

References:
    Antun et al., "On instabilities of deep learning in image reconstruction", arXiv:1902.05300;
    Darestani, Chaudhari, Heckel, "Measuring robustness in deep learning based compressive
    sensing", arXiv:2102.06103; Genzel, Macdonald, Maerz, "Solving inverse problems with deep
    neural networks -- robustness included?", arXiv:2011.04268; Saberi, Zhang, Akcakaya,
    arXiv:2501.01908.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from reconguard.errors import ConfigError
from reconguard.models.zero_filled import zero_filled
from reconguard.physics.operators import sens_expand

Domain = Literal["kspace", "image"]
Norm = Literal["l2", "linf", "l0"]
_SUPPORTS = {"kspace": ("acquired", "full"), "image": ("zero_filled", "fully_sampled", "network_input")}
_TINY = 1e-12
#: Largest l2/linf budget (relative or absolute): beyond it float32 norms of the perturbation overflow
#: and an attack would silently do nothing. l0 budgets (sample counts) stop at ``MAX_L0``.
MAX_EPS = 1e6
MAX_L0 = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class ThreatModel:
    """An explicit perturbation budget.

    Attributes:
        domain: ``"kspace"`` or ``"image"``.
        norm: ``"l2"``, ``"linf"`` or ``"l0"``.
        eps: Radius for l2/linf (relative or absolute); for l0 the number of samples ``k``.
        relative: l2: relative to the per-slice l2 norm of the measured k-space (or of the
            reference image); linf: relative to its maximum modulus. Absolute when ``False``.
        per_coil: l2 in k-space: the budget holds for every coil separately (relative to that
            coil's measured norm) instead of for the whole slice.
        linf_mode: ``"complex"`` bounds the modulus of each complex entry; ``"real_imag"`` bounds
            real and imaginary parts separately (both conventions exist in the literature).
        support: See the module docstring; default ``"acquired"`` (k-space) /
            ``"zero_filled"`` (image).
        amplitude: l0 only: the modulus bound of each of the ``k`` entries (relative to the
            maximum modulus of the measured k-space when ``relative``).
    """

    domain: Domain
    norm: Norm
    eps: float
    relative: bool = True
    per_coil: bool = False
    linf_mode: Literal["complex", "real_imag"] = "complex"
    support: str | None = None
    amplitude: float = 1.0

    def __post_init__(self) -> None:
        if self.domain not in _SUPPORTS:
            raise ConfigError(f"threat domain must be 'kspace' or 'image', got {self.domain!r}")
        if self.norm not in ("l2", "linf", "l0"):
            raise ConfigError(f"threat norm must be 'l2', 'linf' or 'l0', got {self.norm!r}")
        if isinstance(self.eps, bool) or not (
            isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps >= 0
        ):
            raise ConfigError(f"eps must be a finite number >= 0, got {self.eps!r}")
        if self.norm == "l0" and (self.eps != int(self.eps) or self.domain != "kspace" or self.eps > MAX_L0):
            raise ConfigError(
                f"an l0 threat counts k-space samples: eps must be an integer <= {MAX_L0}, got {self.eps}"
            )
        if self.norm != "l0" and self.eps > MAX_EPS:
            raise ConfigError(
                f"eps {self.eps:g} is above the largest supported budget {MAX_EPS:g}: float32 arithmetic on "
                "such a perturbation overflows and the attack would silently do nothing"
            )
        if self.linf_mode not in ("complex", "real_imag"):
            raise ConfigError(f"linf_mode must be 'complex' or 'real_imag', got {self.linf_mode!r}")
        if self.per_coil and (self.domain, self.norm) != ("kspace", "l2"):
            raise ConfigError("per_coil budgets exist only for k-space l2 threats")
        if not (math.isfinite(self.amplitude) and self.amplitude > 0):
            raise ConfigError(f"amplitude must be a positive number, got {self.amplitude}")
        if self.support is None:
            object.__setattr__(self, "support", _SUPPORTS[self.domain][0])
        if self.support not in _SUPPORTS[self.domain]:
            raise ConfigError(
                f"support {self.support!r} does not exist for the {self.domain} domain; "
                f"choose one of {list(_SUPPORTS[self.domain])}"
            )

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``kspace-l2(rel)=0.02``."""
        kind = "rel" if self.relative else "abs"
        return f"{self.domain}-{self.norm}({kind})={self.eps:g}"

    def delta_shape(self, masked_kspace: torch.Tensor) -> tuple[int, ...]:
        """Shape of ``delta``: like k-space, or ``(B, 1, H, W)`` for image-domain threats."""
        batch, coils, height, width = masked_kspace.shape
        return (batch, coils, height, width) if self.domain == "kspace" else (batch, 1, height, width)

    def support_mask(self, mask: torch.Tensor, masked_kspace: torch.Tensor) -> torch.Tensor:
        """Boolean mask of where ``delta`` may be non-zero (broadcastable to ``delta``)."""
        if self.domain == "kspace" and self.support == "acquired":
            return mask.to(torch.bool)
        return torch.ones((1,) * masked_kspace.ndim, dtype=torch.bool, device=masked_kspace.device)

    def budget(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        *,
        coil_maps: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Absolute radius per slice (``(B, 1, 1, 1)``) or per coil (``(B, C, 1, 1)``).

        For l0 this is the amplitude bound of each entry; the count ``k`` is :attr:`eps`.
        """
        batch = masked_kspace.shape[0]
        if self.norm == "l0":
            scale = masked_kspace.abs().flatten(1).amax(dim=1) if self.relative else None
            radius = self.amplitude
        else:
            scale = self._scale(masked_kspace, coil_maps, target) if self.relative else None
            radius = self.eps
        if scale is None:
            return torch.full((batch, 1, 1, 1), float(radius), device=masked_kspace.device)
        return (radius * scale).reshape(batch, -1, 1, 1).to(masked_kspace.real.dtype)

    def _scale(self, masked_kspace, coil_maps, target) -> torch.Tensor:
        if self.domain == "kspace":
            flat = masked_kspace.flatten(2) if self.per_coil else masked_kspace.flatten(1)
            return flat.norm(dim=-1) if self.norm == "l2" else flat.abs().amax(dim=-1)
        if self.support == "fully_sampled":
            if target is None:
                raise ConfigError("a relative fully_sampled image threat needs the target image")
            reference = target
        else:
            reference = zero_filled(masked_kspace, coil_maps)
        flat = reference.flatten(1)
        return flat.norm(dim=-1) if self.norm == "l2" else flat.abs().amax(dim=-1)

    def project(self, delta: torch.Tensor, budget: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Exact projection onto the threat set (zero off ``support``, norm within ``budget``).

        Args:
            delta: Complex perturbation.
            budget: Output of :meth:`budget`.
            support: Output of :meth:`support_mask`.

        Returns:
            The closest admissible perturbation (for l0: the ``k`` largest entries, each clipped
            to the amplitude bound -- the exact projection onto that non-convex set).

        Shapes:
            delta: :meth:`delta_shape`; budget: ``(B, 1 or C, 1, 1)``
        """
        delta = delta * support
        if self.norm == "l2":
            dims = (-2, -1) if self.per_coil else (1, 2, 3)
            norm = torch.linalg.vector_norm(delta, dim=dims, keepdim=True)
            return delta * torch.clamp(budget / norm.clamp_min(_TINY), max=1.0)
        if self.norm == "linf" and self.linf_mode == "real_imag":
            return torch.complex(
                torch.maximum(torch.minimum(delta.real, budget), -budget),
                torch.maximum(torch.minimum(delta.imag, budget), -budget),
            )
        delta = delta * torch.clamp(budget / delta.abs().clamp_min(_TINY), max=1.0)
        if self.norm == "l0":
            delta = keep_largest(delta, int(self.eps))
        return delta

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent direction of unit size in this threat's norm (a PGD step's direction):
        the sign of the real and imaginary parts (``linf``, ``real_imag``), the complex sign (``linf``),
        or the gradient over its l2 norm per slice (per coil for per-coil threats)."""
        if self.norm == "linf":
            if self.linf_mode == "real_imag":
                return torch.complex(grad.real.sign(), grad.imag.sign())
            return grad / grad.abs().clamp_min(_TINY)
        dims = (-2, -1) if self.per_coil else (1, 2, 3)
        return grad / torch.linalg.vector_norm(grad, dim=dims, keepdim=True).clamp_min(_TINY)

    def measure(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-slice size of ``delta`` in this threat's norm (``(B,)``; per coil: the max ratio
        is not meaningful, so the whole-slice l2 norm is reported)."""
        flat = delta.flatten(1)
        if self.norm == "l2":
            return flat.norm(dim=1)
        if self.norm == "l0":
            return (flat != 0).sum(dim=1).to(delta.real.dtype)
        if self.linf_mode == "real_imag":
            return torch.maximum(flat.real.abs().amax(dim=1), flat.imag.abs().amax(dim=1))
        return flat.abs().amax(dim=1)

    def model_input(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        delta: torch.Tensor,
        coil_maps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the model is given under ``delta``: ``(k-space, input_delta)``.

        ``(y, delta)`` for ``network_input`` threats, ``(apply(...), None)`` for all others; call
        the model as ``model(kspace, mask, coil_maps=..., input_delta=input_delta)``.

        Shapes:
            masked_kspace: ``(B, C, H, W)``; delta: :meth:`delta_shape`
        """
        if self.support == "network_input":
            return masked_kspace, delta
        return self.apply(masked_kspace, mask, delta, coil_maps), None

    def input_change(self, delta: torch.Tensor, mask: torch.Tensor,
                     coil_maps: torch.Tensor | None = None) -> torch.Tensor:
        """How ``delta`` changes the network's input image: ``delta`` itself for ``network_input``
        threats, else the zero-filled image of what it adds to the measurement, ``A^H M (...)``
        (linear in ``delta``; zero-filling's output change, so its noise gain is exactly 1).

        Shapes:
            delta: :meth:`delta_shape` -> ``(B, 1, H, W)``
        """
        if self.support == "network_input":
            return delta
        if self.domain == "image":
            delta = sens_expand(delta, coil_maps)
        return zero_filled(delta * mask, coil_maps)

    def apply(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        delta: torch.Tensor,
        coil_maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The perturbed measurement ``y + M delta`` (k-space) or ``y + A delta`` (image).

        Not defined for ``network_input`` threats, which leave ``y`` unchanged (use
        :meth:`model_input`).

        Shapes:
            masked_kspace: ``(B, C, H, W)``; delta: :meth:`delta_shape` -> ``(B, C, H, W)``
        """
        if self.support == "network_input":
            raise ConfigError("a network_input threat does not change the measurement; use model_input()")
        if self.domain == "image":
            if masked_kspace.shape[1] > 1 and coil_maps is None:
                raise ConfigError("an image-domain threat on multi-coil data needs coil maps")
            delta = sens_expand(delta, coil_maps)
        return masked_kspace + delta * mask


def keep_largest(delta: torch.Tensor, k: int) -> torch.Tensor:
    """Zero all but the ``k`` largest-modulus entries of each slice.

    Shapes:
        delta: ``(B, ...)`` -> same
    """
    flat = delta.flatten(1)
    if k >= flat.shape[1]:
        return delta
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        keep.scatter_(1, flat.abs().topk(k, dim=1).indices, True)
    return (flat * keep).reshape(delta.shape)
