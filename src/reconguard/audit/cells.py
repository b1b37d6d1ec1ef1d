"""The audit matrix: cells (model x defense x attack x eps x seed x acceleration) and their ids.

A cell's id hashes everything that determines its numbers: the model's identity (weights hash,
or its training recipe), the defense and attack specs, eps, seed, acceleration, sampling, data and
batch size (work units are fixed batches of slices). Anything else — max_slices (of the data or
of a defense), device, panels,
the order of the config — does not change the id, so growing a config adds cells or units and
never invalidates what is already in the database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconguard.attacks import presets
from reconguard.audit.config import AuditConfig
from reconguard.audit.specs import AttackSpec, ModelSpec
from reconguard.errors import ConfigError


@dataclass(frozen=True)
class Cell:
    """One cell of the audit matrix.

    Attributes:
        cell_id: Hash of :attr:`spec`.
        model: The audited (target) model's config key.
        defense: ``"none"`` or a defense's config key.
        attack: The attack's config key.
        source: The model the perturbation is crafted on (``model`` itself unless a transfer cell).
        eps: The budget (``None`` for feature attacks).
        seed: Seeds the attack.
        acceleration: Under-sampling factor.
        spec: Everything the numbers depend on (hashed into ``cell_id``).
    """

    cell_id: str
    model: str
    defense: str
    attack: str
    source: str
    eps: float | None
    seed: int
    acceleration: float
    spec: dict[str, Any]

    def row(self) -> dict[str, Any]:
        """The ``cells`` table row."""
        return {k: getattr(self, k) for k in ("cell_id", "model", "defense", "attack", "source", "eps", "seed",
                                                "acceleration", "spec")}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (model weights), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(config: AuditConfig, key: str) -> dict[str, Any]:
    """What defines a model's outputs: its weights' hash, or its recipe for models the audit trains."""
    return spec_identity(config, config.models[key])


def spec_identity(config: AuditConfig, spec: ModelSpec) -> dict[str, Any]:
    """:func:`model_identity` of a model spec (also a trained defense's weights)."""
    if spec.kind == "checkpoint":
        return {"weights": file_digest(spec.checkpoint + ".safetensors")}
    if spec.kind == "fastmri":
        return {"fastmri": file_digest(spec.fastmri), "model": spec.model, "config": spec.config}
    if spec.kind == "name":
        return {"model": spec.model, "config": spec.config}
    train = dict(spec.train)
    if "init" in train:
        train["init"] = model_identity(config, train["init"])
    return {"train": train, "data": config.data.as_dict(), "sampling": config.sampling.as_dict()}


def expand(config: AuditConfig) -> list[Cell]:
    """Every cell of the config, in a stable order (models, then defenses, attacks, eps, seeds)."""
    identities = {key: model_identity(config, key) for key in config.models}
    common = {"data": {k: v for k, v in config.data.as_dict().items() if k != "max_slices"},
              "mask": config.sampling.mask, "center_fraction": config.sampling.center_fraction,
              "batch_size": config.batch_size}
    cells: list[Cell] = []

    def add(model: str, defense: str, attack: str, source: str, eps: float | None, seed: int, acc: float) -> None:
        attack_spec = config.attacks[attack].as_dict()
        defense_spec = None if defense == "none" else config.defenses[defense].as_dict()
        if defense_spec is not None and config.defenses[defense].weights is not None:
            defense_spec["weights"] = spec_identity(config, config.defenses[defense].weights)
        spec = {**common, "model": identities[model], "source": identities[source],
                "attack": {k: v for k, v in attack_spec.items() if k not in ("models", "eps")},
                "defense": None if defense_spec is None else
                {k: v for k, v in defense_spec.items() if k not in ("models", "attacks", "max_slices")},
                "eps": eps, "seed": seed, "acceleration": acc}
        cell_id = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        cells.append(Cell(cell_id, model, defense, attack, source, eps, seed, acc, spec))

    for acc in config.sampling.accelerations:
        for seed in config.seeds:
            for model in config.models:
                defenses = ["none"] + [d for d, s in config.defenses.items() if model in s.models]
                for defense in defenses:
                    chosen = config.attacks if defense == "none" else config.defenses[defense].attacks
                    for attack in chosen:
                        if model in config.attacks[attack].models:
                            for eps in config.attacks[attack].eps:
                                add(model, defense, attack, model, eps, seed, acc)
            for link in config.transfer:
                for target in link.targets:
                    for attack in link.attacks:
                        for eps in link.eps or config.attacks[attack].eps:
                            add(target, "none", attack, link.source, eps, seed, acc)
    unique: dict[str, Cell] = {}
    for cell in cells:  # a transfer link may repeat a cell; two model keys must not share one
        other = unique.setdefault(cell.cell_id, cell)
        if (other.model, other.source) != (cell.model, cell.source):
            names = sorted({other.model, cell.model, other.source, cell.source})
            raise ConfigError(f"models {names} are the same model (identical weights or spec); list it once")
    return list(unique.values())


def build_attack(entry: AttackSpec, *, eps: float | None, seed: int) -> Any:
    """The attack of an ``attacks`` config entry at budget ``eps`` (:func:`reconguard.attacks.presets.build_attack`).

    Raises:
        ConfigError: An option the attack does not take, or an impossible value.
    """
    return presets.build_attack(entry.attack, **{**entry.options, "eps": eps, "seed": seed})
