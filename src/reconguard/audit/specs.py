"""The sections of a checked audit config, as frozen dataclasses (:class:`~reconguard.audit.config.AuditConfig`).

:mod:`reconguard.audit.config` builds them from the YAML file after checking every key; the rest
of the audit reads their fields, never string keys. :meth:`as_dict` is the plain data recorded in
the database and hashed into cell ids (fields that do not apply are left out, so an id does not
change when a field is added here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class _Spec:
    def as_dict(self) -> dict[str, Any]:
        """The fields that apply (not ``None``), as plain data."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class DataSpec(_Spec):
    """``data:``: a built-in data set (``builtin``, ``size``) or a directory (``path``), and the split."""

    split: str = "test"
    builtin: str | None = None
    size: int | None = None
    path: str | None = None
    max_slices: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "max_slices": self.max_slices}


@dataclass(frozen=True)
class SamplingSpec(_Spec):
    """``sampling:``: the mask kind, the accelerations audited and the centre fraction (``None``: the mask's)."""

    mask: str = "random"
    accelerations: tuple[float, ...] = (4.0,)
    center_fraction: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "center_fraction": self.center_fraction}


@dataclass(frozen=True)
class ModelSpec(_Spec):
    """One entry of ``models:``, by ``kind``.

    Attributes:
        kind: ``checkpoint`` (also a shipped ``pretrained`` model), ``fastmri``, ``name`` or ``train``.
        checkpoint: The checkpoint stem (``checkpoint``).
        fastmri: The fastMRI state-dict file (``fastmri``).
        model: The registered model (``fastmri``, ``name``).
        config: Its hyper-parameters (``fastmri``, ``name``).
        train: The checked training recipe (``train``; keys of ``models.<key>.train``).
    """

    kind: str
    checkpoint: str | None = None
    fastmri: str | None = None
    model: str | None = None
    config: dict[str, Any] | None = None
    train: dict[str, Any] | None = None


@dataclass(frozen=True)
class AttackSpec(_Spec):
    """One entry of ``attacks:``: the preset, its options, the models it runs on and its budgets
    (``(None,)`` for feature attacks)."""

    attack: str
    options: dict[str, Any]
    models: tuple[str, ...]
    eps: tuple[float | None, ...]


@dataclass(frozen=True)
class DefenseSpec(_Spec):
    """One entry of ``defenses:``: the defense, its settings, the split its detector is calibrated
    on (``None``: not calibrated), the models and attacks it is evaluated with, for a trained
    defense (``defense: trained``) the robustly trained weights that replace the model, and the
    slices its cells are limited to (``None``: the data's)."""

    defense: str
    settings: dict[str, Any]
    calibrate: str | None
    models: tuple[str, ...]
    attacks: tuple[str, ...]
    weights: ModelSpec | None = None
    max_slices: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {**super().as_dict(), "calibrate": self.calibrate}
        if self.weights is not None:
            out["weights"] = self.weights.as_dict()
        return out


@dataclass(frozen=True)
class TransferSpec(_Spec):
    """One entry of ``transfer:``: the surrogate, the targets, the attacks crafted on it and the
    budgets transferred (``None``: every budget of each attack)."""

    source: str
    targets: tuple[str, ...]
    attacks: tuple[str, ...]
    eps: tuple[float, ...] | None = None
