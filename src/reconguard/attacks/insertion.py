"""Insert small features into fully sampled data and re-simulate the acquisition (FNAF).

Shared by the FNAF attack (:mod:`reconguard.attacks.fnaf`) and FNAF-robust training
(:mod:`reconguard.defenses.training`), which both default to complex insertion
(``x' = x + f exp(i angle x)``, through the coil maps): the feature takes the local phase of the
image and the measured data and their noise stay untouched elsewhere, so a model sees the input
distribution of its clean data. ``insertion="magnitude"`` is the paper's single-coil model
(``x' = |x| + f``, re-acquired with zero phase), which also drops the phase of the whole input.

References:
    Cheng, Calivá, Shah, Han, Majumdar, Pedoia, "Addressing the false negative problem of deep
    learning MRI reconstruction models by adversarial attacks and robust training", MIDL 2020,
    PMLR 121:121-135.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from reconguard.attacks.features import Features
from reconguard.errors import ConfigError, DataError
from reconguard.models.zero_filled import zero_filled
from reconguard.physics.operators import sens_expand, validate_kspace


@dataclass(frozen=True)
class Scene:
    """One batch prepared for insertion; ``kspace`` is the fully sampled k-space of the base image."""

    kspace: torch.Tensor  # (B, C, H, W)
    magnitude: torch.Tensor  # (B, 1, H, W) |base image|
    phase: torch.Tensor  # (B, 1, H, W) unit complex: the phase a feature takes on
    scale: torch.Tensor  # (B,)
    mask: torch.Tensor  # (B, ...) bool
    coil_maps: torch.Tensor | None

    @staticmethod
    def build(kspace, mask, coil_maps, max_value, insertion: str) -> "Scene":
        batch, coils = kspace.shape[:2]
        if coils > 1 and coil_maps is None:
            raise ConfigError("FNAF on multi-coil k-space needs coil_maps to re-simulate the acquisition")
        if coil_maps is not None and coil_maps.shape != kspace.shape:
            raise DataError(f"coil_maps shape {tuple(coil_maps.shape)} differs from k-space {tuple(kspace.shape)}")
        image = zero_filled(kspace, coil_maps)
        magnitude = image.abs()
        if insertion == "magnitude":
            # The paper's single-coil model: the magnitude image, re-acquired with zero phase.
            image = magnitude.to(kspace.dtype)
            kspace = sens_expand(image, coil_maps)
        phase = torch.where(magnitude > 0, image / magnitude.clamp_min(1e-30), torch.ones_like(image))
        scale = magnitude.flatten(1).amax(dim=1) if max_value is None else max_value.to(magnitude)
        if scale.shape != (batch,) or not bool((torch.isfinite(scale) & (scale > 0)).all()):
            raise DataError(f"max_value must be positive and finite with shape ({batch},), got {tuple(scale.shape)}")
        return Scene(kspace, magnitude, phase, scale, mask.to(torch.bool).expand(batch, *mask.shape[1:]), coil_maps)

    def repeat(self, tensor: torch.Tensor | None, num: int) -> torch.Tensor | None:
        """A per-slice tensor repeated for ``num`` candidates per slice (slice-major)."""
        return None if tensor is None else tensor.repeat_interleave(num, dim=0)

    def insert(self, features: Features) -> tuple[torch.Tensor, ...]:
        """Fully sampled k-space with each feature, the feature's own k-space, target and mask.

        ``k' = k + F S (f exp(i phase))``: exact re-simulation for data consistent with the maps,
        and it keeps measured data (noise included) untouched elsewhere.

        Shapes:
            ``(B, K)`` flattened to ``BK``: k-spaces ``(BK, C, H, W)``, target and mask ``(BK, 1, H, W)``
        """
        num = features.intensity.shape[1]
        masks = features.mask(tuple(self.magnitude.shape[-2:])).flatten(0, 1)
        bump = masks * (features.intensity * self.scale[:, None]).reshape(-1, 1, 1, 1)
        delta, maps = bump * self.repeat(self.phase, num), self.repeat(self.coil_maps, num)
        feature_kspace = sens_expand(delta, maps)
        target = self.repeat(self.magnitude, num) + bump
        return self.repeat(self.kspace, num) + feature_kspace, feature_kspace, target, masks


@dataclass(frozen=True)
class Insertion:
    """Features inserted into fully sampled k-space and re-acquired (no model involved).

    Attributes:
        adv_kspace: Under-sampled k-space of the image with the feature.
        target: Fully sampled magnitude image with the feature (``|base| + feature``).
        feature_mask, loss_mask: The feature's pixels, and them dilated by ``dilation`` pixels.
        intensity: Absolute feature amplitude.

    Shapes:
        ``(B, K)`` candidates flattened slice-major to ``BK``: adv_kspace ``(BK, C, H, W)``;
        target, feature_mask, loss_mask ``(BK, 1, H, W)``; intensity ``(BK,)``
    """

    adv_kspace: torch.Tensor
    target: torch.Tensor
    feature_mask: torch.Tensor
    loss_mask: torch.Tensor
    intensity: torch.Tensor


def insert_features(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    features: Features,
    *,
    coil_maps: torch.Tensor | None = None,
    max_value: torch.Tensor | None = None,
    insertion: Literal["complex", "magnitude"] = "complex",
    dilation: int = 5,
) -> Insertion:
    """Insert given features exactly as :class:`FNAF` does (see its ``insertion`` and ``dilation``).

    Shapes:
        kspace, coil_maps ``(B, C, H, W)`` fully sampled; mask broadcastable; max_value ``(B,)``;
        features from :func:`make_features` with ``B`` slices

    References:
        Cheng et al., MIDL 2020 (PMLR 121:121-135).
    """
    validate_kspace(kspace, mask, name="feature insertion input")
    if insertion not in ("complex", "magnitude") or dilation < 0:
        raise ConfigError(f"invalid insertion {insertion!r} or dilation {dilation}; see FNAF's docstring")
    scene = Scene.build(kspace, mask, coil_maps, max_value, insertion)
    full, _, target, masks = scene.insert(features.to(kspace.device))
    measured = scene.repeat(scene.mask, features.intensity.shape[1])
    intensity = (features.intensity.to(kspace.device) * scene.scale[:, None]).flatten()
    return Insertion(full * measured, target, masks, dilate(masks, dilation), intensity)


def dilate(masks: torch.Tensor, dilation: int) -> torch.Tensor:
    """Boolean masks ``(N, 1, H, W)`` dilated by a ``(2 dilation + 1)``-pixel square."""
    return F.max_pool2d(masks.float(), 2 * dilation + 1, stride=1, padding=dilation) > 0


def region_mean(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per-slice mean of ``|values|^2`` over a boolean region ``(N, 1, H, W)``."""
    weight = region.to(values.real.dtype).flatten(1)
    return (values.abs().square().flatten(1) * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)


def region_energy(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per-slice sum of ``|values|^2`` over a boolean region ``(N, 1, H, W)``."""
    return (values.abs().square() * region.to(values.real.dtype)).flatten(1).sum(dim=1)


def input_std(masked_kspace: torch.Tensor, coil_maps: torch.Tensor | None) -> torch.Tensor:
    """Standard deviation of each zero-filled magnitude image (fastMRI's ``normalize_instance``).

    Shapes:
        masked_kspace ``(N, C, H, W)`` -> ``(N,)``
    """
    std = zero_filled(masked_kspace, coil_maps).abs().flatten(1).std(dim=1)
    return std.clamp_min(torch.finfo(std.dtype).tiny)


def linear_score(shown_net: torch.Tensor, shown_linear: torch.Tensor, feature: torch.Tensor,
                 region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FNAF's ``linear`` score (:mod:`reconguard.attacks.fnaf`): ``(E(d_net) - E(d_lin)) / (E(0) -
    E(d_lin))`` with ``E(d) = sum_T (d - f)^2``, the share of what a linear reconstruction shows of
    the feature ``f`` that the model loses; and whether the linear reconstruction shows it at all
    (``E(d_lin) < E(0)``; elsewhere the score is set to 0).

    Shapes:
        shown_net, shown_linear, feature: ``(N, 1, H, W)`` magnitude changes; region bool -> ``(N,)`` each
    """
    zero = torch.zeros_like(feature)
    net, lin, absent = (region_energy(d - feature, region) for d in (shown_net, shown_linear, zero))
    carried = absent - lin
    usable = carried > 1e-6 * absent
    return torch.where(usable, (net - lin) / torch.where(usable, carried, torch.ones_like(carried)), 0.0), usable
