"""What an attack maximises: the damage done to a reconstruction.

All losses are per slice (``(B,)``), computed on the magnitude of the reconstruction centre-
cropped to the reference size (or on the complex images, ``complex_valued=True``), and larger
means worse for the model.

- ``kind``: ``mse``, ``l1``, ``ssim`` (``1 - SSIM``) or ``relative_l2``
  (``||recon - reference||_2 / ||reference||_2``; with ``reference="clean"`` and
  ``complex_valued=True`` this is Saberi et al.'s unsupervised attack loss
  ``||f(x + d) - f(x)|| / ||f(x)||``);

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

LOSS_KINDS = ("mse", "l1", "ssim", "relative_l2")


@dataclass(frozen=True, kw_only=True)
class AttackLoss:
    """An attack objective.

    Attributes:
        kind: ``"mse"``, ``"l1"``, ``"ssim"`` (``1 - SSIM``; not with a region) or
            ``"relative_l2"``.
        reference: ``"target"`` (supervised) or ``"clean"`` (unsupervised).
        targeted: Minimise the distance to ``reference`` instead of maximising it.
        complex_valued: Compare complex images (the clean reconstruction itself, not its
            magnitude); needs ``reference="clean"`` (targets are magnitudes) and not ``ssim``.
    """

    kind: Literal["mse", "l1", "ssim", "relative_l2"] = "mse"
    reference: Literal["target", "clean"] = "target"
    targeted: bool = False
    complex_valued: bool = False

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ConfigError(f"attack loss kind must be one of {list(LOSS_KINDS)}, got {self.kind!r}")
        if self.reference not in ("target", "clean"):
            raise ConfigError(f"attack loss reference must be 'target' or 'clean', got {self.reference!r}")
        if self.complex_valued and (self.reference != "clean" or self.kind == "ssim"):
            raise ConfigError("a complex_valued attack loss needs reference='clean' and a kind other than 'ssim'")

    def reference_image(self, clean: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """What the loss compares with: the target, or the clean reconstruction (its magnitude
        unless ``complex_valued``)."""
        if self.reference == "target":
            return target
        return clean if self.complex_valued else clean.abs()

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
    """Per-slice error between a reconstruction and a reference (``(B,)``): between magnitudes,
    or between complex images when ``reference`` is complex."""
    keep_phase = reference.is_complex()
    image = center_crop(recon.abs() if recon.is_complex() and not keep_phase else recon, reference.shape[-2:])
    if kind == "ssim":
        if keep_phase:
            raise ConfigError("the ssim attack loss compares magnitudes, not complex images")
        if region is not None:
            raise ConfigError("the ssim attack loss cannot be restricted to a region")
        peak = reference.flatten(1).amax(dim=1) if data_range is None else data_range
        return 1 - ssim(reference, image, data_range=peak, reduction="none")
    error = (image - reference).abs()
    if kind == "relative_l2":
        weight = torch.ones_like(error) if region is None else region.to(error.dtype).expand_as(error)
        numerator = (error.square() * weight).flatten(1).sum(dim=1).sqrt()
        return numerator / (reference.abs().square() * weight).flatten(1).sum(dim=1).sqrt().clamp_min(1e-12)
    error = error.square() if kind == "mse" else error
    if region is None:
        return error.flatten(1).mean(dim=1)
    weight = region.to(error.dtype).expand_as(error).flatten(1)
    return (error.flatten(1) * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
