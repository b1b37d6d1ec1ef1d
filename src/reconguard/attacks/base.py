"""What every attack is: one call on one batch, one result type.

:class:`Attack` is the interface: ``attack(model, masked_kspace, mask, target=..., coil_maps=...,
max_value=..., kspace=...)`` returns an :class:`AttackResult`. Perturbation attacks (PGD, FGSM,
sparse spikes; :class:`~reconguard.attacks.perturbation.PerturbationAttack`) fill its threat,
perturbation and noise-baseline fields; feature attacks (FNAF) leave those ``None`` and add their
own fields in a subclass (:class:`~reconguard.attacks.fnaf.FNAFResult`). Whoever evaluates an
attack (:mod:`reconguard.experiment`) reads the common fields and :meth:`AttackResult.measures`,
and never asks which kind of attack it ran.
"""

from __future__ import annotations

import abc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch

from reconguard.attacks.threat import ThreatModel
from reconguard.errors import ConfigError
from reconguard.models.base import Reconstructor, validate_input_delta


@contextmanager
def frozen(model: Reconstructor) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on every parameter, restored on exit."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@dataclass(frozen=True)
class Baseline:
    """A random perturbation an attack is compared with, and what it did.

    Attributes:
        condition: Its condition in the records (``noise``: the matched baseline of
            :func:`~reconguard.attacks.noise.matched_noise`; ``gaussian_noise``: the optional
            Gaussian of :func:`~reconguard.attacks.noise.gaussian_noise`).
        delta: The perturbation (in the threat's domain).
        recon: The model's reconstruction under it.
        loss: The attack's loss of ``recon``.
    """

    condition: str
    delta: torch.Tensor
    recon: torch.Tensor
    loss: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class AttackResult:
    """Outcome of an attack on one batch.

    Attributes:
        adv_kspace: Attacked measured k-space (what the model saw; the unchanged ``y`` for
            ``network_input`` threats, whose ``delta`` is the model's ``input_delta``).
        recon: Reconstruction of ``adv_kspace``.
        clean_recon: Reconstruction of the unperturbed measurement.
        loss: Final attack loss per slice (larger = more damage).
        evaluations: Number of model evaluations used (EOT draws count once per batch call).
        seconds: Wall-clock time of the attack.
        clean_loss: The same loss without perturbation (``None`` when the attack has no such loss).

    Perturbation attacks only (``None`` otherwise):
        threat: The budget the perturbation lives in.
        delta: The perturbation (in the threat's domain).
        baselines: The random perturbations ``delta`` is compared with, the matched ``noise``
            first (:attr:`noise`, :attr:`noise_recon`, :attr:`noise_loss` read it).
        norm: Size of ``delta`` in the threat's norm, per slice.
        budget: The absolute budget per slice (per coil for per-coil threats).
        relative_norm: ``norm`` in units of the budget of ``eps = 1`` (relative to the measured
            data, ``max|A^H y|``, ... whatever the threat refers to); for l0, of the acquired samples.
        history: Mean loss over the batch after each iteration.

    Shapes:
        delta, noise: ``(B, C, H, W)`` (k-space) or ``(B, 1, H, W)`` (image); adv_kspace ``(B, C, H, W)``;
        recon, clean_recon, noise_recon ``(B, 1, H, W)``; loss, norm, relative_norm ``(B,)``
    """

    #: The condition :meth:`measures` are recorded under (:mod:`reconguard.experiment`).
    MEASURED_AS: ClassVar[str] = "attacked"

    adv_kspace: torch.Tensor
    recon: torch.Tensor
    clean_recon: torch.Tensor
    loss: torch.Tensor
    evaluations: int
    seconds: float
    clean_loss: torch.Tensor | None = None
    threat: ThreatModel | None = None
    delta: torch.Tensor | None = None
    baselines: tuple[Baseline, ...] = ()
    norm: torch.Tensor | None = None
    budget: torch.Tensor | None = None
    relative_norm: torch.Tensor | None = None
    history: tuple[float, ...] = ()

    @property
    def noise(self) -> torch.Tensor | None:
        """The matched noise baseline (``None`` for attacks without one)."""
        return self.baselines[0].delta if self.baselines else None

    @property
    def noise_recon(self) -> torch.Tensor | None:
        """The reconstruction under :attr:`noise`."""
        return self.baselines[0].recon if self.baselines else None

    @property
    def noise_loss(self) -> torch.Tensor | None:
        """The attack's loss under :attr:`noise`."""
        return self.baselines[0].loss if self.baselines else None

    @property
    def input_delta(self) -> torch.Tensor | None:
        """The network-input perturbation (``network_input`` threats), else ``None``."""
        return self.delta if self.threat is not None and self.threat.support == "network_input" else None

    def truth(self, target: torch.Tensor) -> torch.Tensor:
        """The image :attr:`recon` should be compared to: ``target`` unless the attack changed the truth."""
        return target

    def measures(self) -> dict[str, torch.Tensor]:
        """Per-slice numbers of the attack itself (recorded under :attr:`MEASURED_AS`)."""
        budget = None if self.budget is None else self.budget.flatten(1)[:, 0]
        values = {"norm": self.norm, "budget": budget, "relative_norm": self.relative_norm}
        return {name: value for name, value in values.items() if value is not None}

    def replay(self, model: Reconstructor, mask: torch.Tensor, *,
               coil_maps: torch.Tensor | None = None) -> torch.Tensor:
        """``model`` on exactly what the attacked model saw (a transfer, or a defense after a
        non-adaptive attack): ``adv_kspace`` and, for ``network_input`` threats, ``input_delta``."""
        return call_model(model, self.adv_kspace, mask, coil_maps, self.input_delta)

    def replay_baselines(self, model: Reconstructor, masked_kspace: torch.Tensor, mask: torch.Tensor, *,
                         coil_maps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``model`` under each noise baseline, by condition (empty for attacks without one)."""
        if self.threat is None:
            return {}
        return {b.condition: reconstruct_under(model, self.threat, masked_kspace, mask, b.delta, coil_maps)
                for b in self.baselines}

    def input_change(self, delta: torch.Tensor, mask: torch.Tensor,
                     coil_maps: torch.Tensor | None = None) -> torch.Tensor:
        """Per slice, the l2 norm of what ``delta`` (the attack's or a baseline's) changes in the
        network's input image (the zero-filled image, or the network input itself for
        ``network_input`` threats): the denominator of a noise gain.

        Shapes:
            delta: like :attr:`delta` -> ``(B,)``
        """
        if self.threat is None:
            raise ConfigError("only perturbation attacks change the input by a perturbation")
        return self.threat.input_change(delta, mask, coil_maps).flatten(1).norm(dim=1)


@dataclass(frozen=True)
class AttackInputs:
    """One batch as every attack receives it: the arguments of :meth:`Attack.__call__`."""

    masked_kspace: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor | None = None
    coil_maps: torch.Tensor | None = None
    region: torch.Tensor | None = None
    max_value: torch.Tensor | None = None
    kspace: torch.Tensor | None = None


class Attack(abc.ABC):
    """The interface of every attack: called on one batch, returns an :class:`AttackResult`.

    Subclasses implement :meth:`_attack` (``model, inputs -> result``).

    Attributes:
        threat: The budget (``None`` for attacks that are not norm-bounded, such as FNAF).
        seed: Seeds every random choice of the attack.
    """

    threat: ThreatModel | None = None
    seed: int = 0

    def __call__(
        self,
        model: Reconstructor,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
        coil_maps: torch.Tensor | None = None,
        region: torch.Tensor | None = None,
        max_value: torch.Tensor | None = None,
        kspace: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack ``model`` on one batch (in eval mode, weights frozen; both restored afterwards).

        Args:
            model: Any reconstructor (a defended one too).
            masked_kspace: Measured under-sampled k-space.
            mask: Sampling mask.
            target: Ground-truth magnitude (supervised losses, fully-sampled image threats; for a
                targeted loss, the image to pull the reconstruction to).
            coil_maps: Coil sensitivities (image-domain threats on multi-coil data, FNAF).
            region: Image-space mask: restricts the loss (and image-domain perturbations).
            max_value: Per-slice data range (fastMRI ``max``).
            kspace: The fully sampled k-space (``Sample.kspace``): attacks that change the
                scanned object (FNAF) need it; perturbation attacks ignore it.

        Shapes:
            masked_kspace, kspace ``(B, C, H, W)``; target, region ``(B, 1, h, w)``; max_value ``(B,)``
        """
        return self._attack(model, AttackInputs(masked_kspace, mask, target, coil_maps, region, max_value, kspace))

    @abc.abstractmethod
    def _attack(self, model: Reconstructor, inputs: AttackInputs) -> AttackResult:
        """The attack itself (:meth:`__call__`'s arguments bundled in ``inputs``)."""

    def objective(self, recon: torch.Tensor, clean: torch.Tensor, target: torch.Tensor,
                  data_range: torch.Tensor | None) -> torch.Tensor | None:
        """The attack's loss of any reconstruction ``recon`` (``clean``: the same model's clean
        reconstruction), per slice -- how a transferred attack is scored on another model; ``None``
        for attacks whose loss depends on what they searched (FNAF)."""
        return None


def call_model(model: Reconstructor, masked_kspace: torch.Tensor, mask: torch.Tensor,
               coil_maps: torch.Tensor | None, input_delta: torch.Tensor | None) -> torch.Tensor:
    """``model(masked_kspace, mask, coil_maps=...)``, with ``input_delta=`` only when one is given (so
    reconstructors without network-input support keep their plain signature)."""
    if input_delta is None:
        return model(masked_kspace, mask, coil_maps=coil_maps)
    validate_input_delta(model, masked_kspace, input_delta)
    return model(masked_kspace, mask, coil_maps=coil_maps, input_delta=input_delta)


def reconstruct_under(model: Reconstructor, threat: ThreatModel, masked_kspace: torch.Tensor, mask: torch.Tensor,
                      delta: torch.Tensor, coil_maps: torch.Tensor | None) -> torch.Tensor:
    """``model``'s reconstruction when ``delta`` (in ``threat``'s domain) perturbs its input."""
    kspace, input_delta = threat.model_input(masked_kspace, mask, delta, coil_maps)
    return call_model(model, kspace, mask, coil_maps, input_delta)


