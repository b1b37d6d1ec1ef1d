"""Black-box transfer: craft an attack on a surrogate model, replay it on other models.

A deployed reconstructor is rarely open to gradients; the realistic adversary attacks a model it
owns (the surrogate) and feeds the result to the target. :func:`transfer` crafts one attack on a
surrogate and evaluates it on any number of targets (:func:`evaluate_transfer` evaluates an attack
already crafted; :mod:`reconguard.experiment` uses it for the transfer cells of an audit and for
``reconguard transfer``).

Every target sees exactly what the surrogate saw (:meth:`AttackResult.replay`: the attacked
k-space and, for network-input threats, the input perturbation), its clean input, and the
surrogate's noise baselines (one draw shared by all targets, so the rows are comparable and a
target that *is* the surrogate gets the white-box numbers). Targets run under
``torch.no_grad`` in eval mode.

References:
    Papernot, McDaniel, Goodfellow, "Transferability in machine learning: from phenomena to
    black-box attacks using adversarial samples", arXiv:1605.07277.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from reconguard.attacks.base import Attack, AttackResult, frozen
from reconguard.errors import ConfigError
from reconguard.models.base import Reconstructor


@dataclass(frozen=True)
class TransferOutcome:
    """A surrogate's attack evaluated on one target model.

    Attributes:
        source: The attack on the surrogate (its perturbation, white-box loss, timing).
        recon: Target reconstruction of the attacked measurement.
        clean_recon: Target reconstruction of the clean measurement.
        loss, clean_loss: The attack's objective on the target (reference: the ground truth, or
            the target's own clean reconstruction for unsupervised losses), per slice (``None``
            for attacks whose loss depends on their search, such as FNAF).
        baseline_recons, baseline_losses: The target under each of the surrogate's noise
            baselines, by condition (empty for attacks without one).

    Shapes:
        recon, clean_recon, baseline recons ``(B, 1, H, W)``; losses ``(B,)``
    """

    source: AttackResult
    recon: torch.Tensor
    clean_recon: torch.Tensor
    loss: torch.Tensor | None
    clean_loss: torch.Tensor | None
    baseline_recons: dict[str, torch.Tensor]
    baseline_losses: dict[str, torch.Tensor | None]

    @property
    def noise_recon(self) -> torch.Tensor | None:
        """The target under the surrogate's matched noise (``None`` without a baseline)."""
        return self.baseline_recons.get("noise")

    @property
    def noise_loss(self) -> torch.Tensor | None:
        """The attack's loss of :attr:`noise_recon`."""
        return self.baseline_losses.get("noise")


def transfer(
    attack: Attack,
    surrogate: Reconstructor,
    targets: Mapping[str, Reconstructor],
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    *,
    target: torch.Tensor,
    coil_maps: torch.Tensor | None = None,
    max_value: torch.Tensor | None = None,
    kspace: torch.Tensor | None = None,
) -> dict[str, TransferOutcome]:
    """Attack ``surrogate`` once and evaluate the attack on every model in ``targets``.

    Args:
        attack: Any attack (its threat, loss and seed are used throughout).
        surrogate: The model the attack is crafted on (white-box).
        targets: Models to evaluate, by name; may contain ``surrogate`` itself (white-box entry).
        masked_kspace: Measured under-sampled k-space.
        mask: Sampling mask.
        target: Ground-truth magnitude image.
        coil_maps: Coil sensitivities (needed by image-domain threats on multi-coil data).
        max_value: Per-slice data range of the losses.
        kspace: Fully sampled k-space (attacks that need it; :meth:`Attack.__call__`).

    Returns:
        A :class:`TransferOutcome` per target name.

    Shapes:
        masked_kspace ``(B, C, H, W)``; target ``(B, 1, h, w)``; max_value ``(B,)``
    """
    if not isinstance(targets, Mapping) or not targets:
        raise ConfigError("transfer needs a non-empty mapping of target models by name")
    source = attack(surrogate, masked_kspace, mask, target=target, coil_maps=coil_maps, max_value=max_value,
                    kspace=kspace)
    return {name: evaluate_transfer(attack, source, model, masked_kspace, mask, target=target, coil_maps=coil_maps,
                                    max_value=max_value)
            for name, model in targets.items()}


def evaluate_transfer(
    attack: Attack,
    source: AttackResult,
    model: Reconstructor,
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    *,
    target: torch.Tensor,
    coil_maps: torch.Tensor | None = None,
    max_value: torch.Tensor | None = None,
) -> TransferOutcome:
    """``source`` (``attack``'s result on some surrogate) replayed on ``model``; arguments as :func:`transfer`."""
    with frozen(model), torch.no_grad():
        clean = model(masked_kspace, mask, coil_maps=coil_maps)
        recon = source.replay(model, mask, coil_maps=coil_maps)
        baselines = source.replay_baselines(model, masked_kspace, mask, coil_maps=coil_maps)
        losses = {k: attack.objective(r, clean, target, max_value)
                  for k, r in {"attacked": recon, "clean": clean, **baselines}.items()}
    return TransferOutcome(source=source, recon=recon, clean_recon=clean, loss=losses.pop("attacked"),
                           clean_loss=losses.pop("clean"), baseline_recons=baselines, baseline_losses=losses)
