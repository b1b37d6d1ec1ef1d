"""Black-box transfer: craft a perturbation on a surrogate model, measure it on other models.

A deployed reconstructor is rarely open to gradients; the realistic adversary attacks a model it
owns (the surrogate) and feeds the result to the target. :func:`transfer` crafts one perturbation
on a surrogate and evaluates it on any number of targets; :func:`transfer_matrix` does this for
every surrogate x target pair over a stream of batches and returns tidy records, so the matrix
(diagonal = white-box) is one pivot away.

Every target sees the surrogate's ``delta`` applied with :meth:`ThreatModel.apply` (k-space and
image-domain threats alike), its clean input, and Gaussian noise of exactly ``delta``'s size in
the threat's norm (the surrogate attack's own baseline draw, shared by all targets, so rows are
comparable and the diagonal equals the white-box result). Targets run under ``torch.no_grad`` in eval mode.

References:
    Papernot, McDaniel, Goodfellow, "Transferability in machine learning: from phenomena to
    black-box attacks using adversarial samples", arXiv:1605.07277.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from reconguard.attacks.base import Attack, AttackResult, frozen, reconstruct_under
from reconguard.errors import ConfigError
from reconguard.metrics import slice_metrics
from reconguard.models.base import Reconstructor
from reconguard.physics.masks import MaskGenerator
from reconguard.physics.operators import center_crop

CONDITIONS = ("clean", "attack", "noise")
METRICS = ("psnr", "ssim", "nmse", "loss")
RECORD_KEYS = (
    "sample", "surrogate", "target", "white_box", "attack", "threat", "eps",
    "metric", "condition", "value", "seconds",
)  # fmt: skip


@dataclass(frozen=True)
class TransferOutcome:
    """A surrogate's perturbation evaluated on one target model.

    Attributes:
        source: The attack on the surrogate (its ``delta``, white-box loss, timing).
        noise: The same-norm Gaussian noise the target was also evaluated under.
        recon: Target reconstruction of the attacked measurement.
        clean_recon: Target reconstruction of the clean measurement.
        noise_recon: Target reconstruction of the noisy measurement.
        loss: The attack loss on the target (reference: the ground truth, or the target's own
            clean reconstruction for unsupervised losses), per slice; likewise ``clean_loss``
            and ``noise_loss``.
        metrics: ``metrics[metric][condition]`` per slice, for ``metric`` in psnr/ssim/nmse
            (magnitude, centre-cropped to the ground truth, data range ``max_value``) and
            ``condition`` in clean/attack/noise.

    Shapes:
        noise: like ``source.delta``; recon, clean_recon, noise_recon ``(B, 1, H, W)``;
        loss, clean_loss, noise_loss and every metric ``(B,)``
    """

    source: AttackResult
    noise: torch.Tensor
    recon: torch.Tensor
    clean_recon: torch.Tensor
    noise_recon: torch.Tensor
    loss: torch.Tensor
    clean_loss: torch.Tensor
    noise_loss: torch.Tensor
    metrics: dict[str, dict[str, torch.Tensor]]


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
) -> dict[str, TransferOutcome]:
    """Attack ``surrogate`` once and evaluate the perturbation on every model in ``targets``.

    Args:
        attack: Any attack (its threat, loss and seed are used throughout).
        surrogate: The model the perturbation is crafted on (white-box).
        targets: Models to evaluate, by name; may contain ``surrogate`` itself (white-box entry).
        masked_kspace: Measured under-sampled k-space.
        mask: Sampling mask.
        target: Ground-truth magnitude image.
        coil_maps: Coil sensitivities (needed by image-domain threats on multi-coil data).
        max_value: Per-slice data range for PSNR/SSIM; default: the ground truth's maximum.

    Returns:
        A :class:`TransferOutcome` per target name.

    Shapes:
        masked_kspace ``(B, C, H, W)``; target ``(B, 1, h, w)``; max_value ``(B,)``
    """
    if not isinstance(targets, Mapping) or not targets:
        raise ConfigError("transfer needs a non-empty mapping of target models by name")
    source = attack(surrogate, masked_kspace, mask, target=target, coil_maps=coil_maps, max_value=max_value)
    noise = source.noise  # the surrogate's same-norm baseline, applied to every target
    inputs = dict(masked_kspace=masked_kspace, mask=mask, target=target, coil_maps=coil_maps, max_value=max_value)
    return {name: _evaluate(attack, source, noise, model, **inputs) for name, model in targets.items()}


def _evaluate(
    attack: Attack,
    source: AttackResult,
    noise: torch.Tensor,
    model: Reconstructor,
    **inputs: torch.Tensor | None,
) -> TransferOutcome:
    masked_kspace, mask, target = inputs["masked_kspace"], inputs["mask"], inputs["target"]
    coil_maps, max_value = inputs["coil_maps"], inputs["max_value"]
    threat = attack.threat
    with frozen(model), torch.no_grad():
        clean = model(masked_kspace, mask, coil_maps=coil_maps)
        recon, noise_recon = (
            reconstruct_under(model, threat, masked_kspace, mask, d, coil_maps) for d in (source.delta, noise)
        )
        reference = attack.loss.reference_image(clean, target)
        losses = [attack.loss(r, reference, data_range=max_value) for r in (clean, recon, noise_recon)]
        peak = target.flatten(1).amax(dim=1) if max_value is None else max_value
        metrics = _metrics(target, dict(zip(CONDITIONS, (clean, recon, noise_recon))), peak)
    return TransferOutcome(
        source=source,
        noise=noise,
        recon=recon,
        clean_recon=clean,
        noise_recon=noise_recon,
        loss=losses[1],
        clean_loss=losses[0],
        noise_loss=losses[2],
        metrics=metrics,
    )


def _metrics(target: torch.Tensor, recons: dict[str, torch.Tensor], peak) -> dict[str, dict[str, torch.Tensor]]:
    scores = {
        c: slice_metrics(target, center_crop(r.abs(), target.shape[-2:]).to(target.dtype), data_range=peak)
        for c, r in recons.items()
    }
    return {metric: {c: scores[c][metric] for c in scores} for metric in ("psnr", "ssim", "nmse")}


def transfer_matrix(
    attack: Attack,
    surrogates: Mapping[str, Reconstructor],
    targets: Mapping[str, Reconstructor],
    batches: Iterable[Any],
    *,
    mask_fn: MaskGenerator | None = None,
) -> list[dict[str, Any]]:
    """The surrogate x target transfer matrix as tidy records (diagonal = white-box).

    Each batch is attacked once per surrogate; the perturbation is evaluated on every target.

    Args:
        attack: Any attack.
        surrogates: Models to craft perturbations on, by name.
        targets: Models to evaluate them on, by name (pass the same models to get the diagonal).
        batches: Items of one of three kinds: a tuple ``(masked_kspace, mask, target, coil_maps,
            max_value)``; a mapping with those keys (``coil_maps``/``max_value`` optional); or a
            :class:`~reconguard.data.Sample` (fully sampled; under-sampled with ``mask_fn`` unless
            it carries its own mask).
        mask_fn: Mask generator for :class:`~reconguard.data.Sample` batches.

    Returns:
        One record per slice, surrogate, target, metric and condition, with keys
        :data:`RECORD_KEYS`: ``sample`` (``"fname:slice"`` for samples with file names, else
        ``"batch:slice"``), ``surrogate``, ``target``, ``white_box`` (the two are the same
        object), ``attack`` (class name), ``threat`` (label), ``eps``, ``metric`` (psnr, ssim,
        nmse, loss), ``condition`` (clean, attack, noise), ``value`` (float), ``seconds`` (time
        to craft the batch's perturbation on the surrogate).
    """
    if not isinstance(surrogates, Mapping) or not surrogates:
        raise ConfigError("transfer_matrix needs a non-empty mapping of surrogate models by name")
    records: list[dict[str, Any]] = []
    for index, item in enumerate(batches):
        names, (masked_kspace, mask, target, coil_maps, max_value) = _unpack(item, index, mask_fn)
        for surrogate_name, surrogate in surrogates.items():
            outcomes = transfer(attack, surrogate, targets, masked_kspace, mask, target=target,
                                coil_maps=coil_maps, max_value=max_value)  # fmt: skip
            for target_name, outcome in outcomes.items():
                common = dict(surrogate=surrogate_name, target=target_name,
                              white_box=surrogate is targets[target_name], attack=type(attack).__name__,
                              threat=attack.threat.label, eps=float(attack.threat.eps),
                              seconds=outcome.source.seconds)  # fmt: skip
                records.extend(_rows(names, outcome, common))
    return records


def _rows(names: list[str], outcome: TransferOutcome, common: dict[str, Any]) -> list[dict[str, Any]]:
    values = dict(outcome.metrics)
    values["loss"] = dict(zip(CONDITIONS, (outcome.clean_loss, outcome.loss, outcome.noise_loss)))
    rows = []
    for i, sample in enumerate(names):
        for metric in METRICS:
            for condition in CONDITIONS:
                value = float(values[metric][condition][i])
                rows.append({**common, "sample": sample, "metric": metric, "condition": condition, "value": value})
    return [{key: row[key] for key in RECORD_KEYS} for row in rows]


def _unpack(item: Any, index: int, mask_fn: MaskGenerator | None) -> tuple[list[str], tuple]:
    """``(sample names, (masked_kspace, mask, target, coil_maps, max_value))`` of one batch."""
    if hasattr(item, "undersample") and hasattr(item, "kspace"):
        if item.mask is None and mask_fn is None:
            raise ConfigError("transfer_matrix: Sample batches without a stored mask need mask_fn")
        masked_kspace, mask = item.undersample(mask_fn)
        fields = (masked_kspace, mask, item.target, item.coil_maps, item.max_value)
        if item.fname:
            return [f"{f}:{s}" for f, s in zip(item.fname, item.slice_idx)], fields
    elif isinstance(item, Mapping):
        missing = {"masked_kspace", "mask", "target"} - set(item)
        if missing:
            raise ConfigError(f"transfer_matrix: batch {index} lacks {sorted(missing)}")
        fields = tuple(item.get(k) for k in ("masked_kspace", "mask", "target", "coil_maps", "max_value"))
    elif isinstance(item, (tuple, list)) and len(item) == 5:
        fields = tuple(item)
    else:
        raise ConfigError(
            f"transfer_matrix: batch {index} must be a Sample, a mapping or a tuple "
            "(masked_kspace, mask, target, coil_maps, max_value)"
        )
    return [f"{index}:{i}" for i in range(fields[0].shape[0])], fields
