"""What an attack maximises: the damage done to a reconstruction.

All losses are per slice (``(B,)``), computed on the magnitude of the reconstruction centre-
cropped to the reference size, and larger means worse for the model.

- ``reference="target"`` (supervised): distance to the ground truth -- needs labels;
- ``reference="clean"`` (unsupervised): distance to the model's own clean reconstruction -- no
  label needed, the usual choice when auditing a deployed model on unlabelled data;
- ``region``: the error is averaged only inside an image-space mask (e.g. a lesion);
- ``targeted=True``: the attack pulls the reconstruction *towards* ``reference`` (a chosen image),
  so the loss is the negative distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from reconguard.errors import ConfigError
from reconguard.metrics import ssim
from reconguard.physics.operators import center_crop


@dataclass(frozen=True, kw_only=True)
class AttackLoss:
    """An attack objective.

    Attributes:
        kind: ``"mse"``, ``"l1"`` or ``"ssim"`` (``1 - SSIM``; not with a region).
        reference: ``"target"`` (supervised) or ``"clean"`` (unsupervised).
        targeted: Minimise the distance to ``reference`` instead of maximising it.
    """

    kind: Literal["mse", "l1", "ssim"] = "mse"
    reference: Literal["target", "clean"] = "target"
    targeted: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("mse", "l1", "ssim"):
            raise ConfigError(f"attack loss kind must be 'mse', 'l1' or 'ssim', got {self.kind!r}")
        if self.reference not in ("target", "clean"):
            raise ConfigError(f"attack loss reference must be 'target' or 'clean', got {self.reference!r}")

    def __call__(
        self,
        recon: torch.Tensor,
        reference: torch.Tensor,
        *,
        region: torch.Tensor | None = None,
        data_range: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-slice loss to maximise.

        Args:
            recon: Reconstruction (complex or magnitude), cropped to ``reference``'s size here.
            reference: Magnitude reference image.
            region: Optional boolean mask; the error is averaged over it only.
            data_range: Per-slice data range for SSIM (default: the reference maximum).

        Shapes:
            recon: ``(B, 1, H, W)``; reference, region: ``(B, 1, h, w)``; output ``(B,)``
        """
        value = reconstruction_error(
            recon, reference, kind=self.kind, region=region, data_range=data_range
        )
        return -value if self.targeted else value


def reconstruction_error(
    recon: torch.Tensor,
    reference: torch.Tensor,
    *,
    kind: str = "mse",
    region: torch.Tensor | None = None,
    data_range: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-slice error between a reconstruction's magnitude and a reference (``(B,)``)."""
    image = center_crop(recon.abs() if recon.is_complex() else recon, reference.shape[-2:])
    if kind == "ssim":
        if region is not None:
            raise ConfigError("the ssim attack loss cannot be restricted to a region")
        peak = reference.flatten(1).amax(dim=1) if data_range is None else data_range
        return 1 - ssim(reference, image, data_range=peak, reduction="none")
    error = (image - reference).abs()
    error = error.square() if kind == "mse" else error
    if region is None:
        return error.flatten(1).mean(dim=1)
    weight = region.to(error.dtype).expand_as(error).flatten(1)
    return (error.flatten(1) * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
