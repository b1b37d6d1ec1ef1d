"""The whole audit matrix, built once before any work: every model, every model/defense pairing,
every attack on every model it targets, every ``train:`` recipe.

Models are constructed on PyTorch's ``meta`` device (shapes only: no memory, no weights read, a
fraction of a second even for large networks); defenses are wrapped around them exactly as the
runner will; the attacks themselves are built by :mod:`reconguard.audit.config`. What fails here
would otherwise fail at the first work unit -- after the data was built and the ``train:`` models
trained. Registered models used by name with trainable weights get an
:class:`~reconguard.models.registry.UntrainedModelWarning` naming the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from reconguard.attacks.presets import build_attack
from reconguard.defenses import build_defense
from reconguard.errors import ConfigError
from reconguard.models.base import INPUT_DELTA_MODELS
from reconguard.models.registry import build, warn_if_untrained
from reconguard.training.config import TrainConfig
from reconguard.training.presets import CPU_PRESETS

Fail = Callable[[tuple, str], ConfigError]


def check_matrix(config: Any, fail: Fail) -> None:
    """Raise ``fail(path, message)`` for the first pairing of ``config`` that cannot be built.

    Args:
        config: The :class:`~reconguard.audit.config.AuditConfig` (fields already checked).
        fail: Makes the error naming the YAML line of a key path.
    """
    architectures: dict[str, tuple[str, dict[str, Any]]] = {}
    for key in config.models:
        architectures[key] = _architecture(config, key, architectures, fail)
    built = {}
    with torch.device("meta"):
        for key, (name, model_config) in architectures.items():
            try:
                built[key] = build(name, **model_config)
            except ConfigError as exc:
                raise fail(("models", key), str(exc)) from None
        defended = {(model, name): _defense(config, name, model, built[model], architectures[model], fail)
                    for name, spec in config.defenses.items() for model in spec.models}
    for key, model in built.items():
        if config.models[key].kind == "name":
            warn_if_untrained(model, where=str(fail(("models", key), "")))
    for key in architectures:
        if config.models[key].kind == "train":
            _train_recipe(config, key, architectures[key], fail)
    _attack_pairings(config, built, defended, fail)


def _architecture(config: Any, key: str, known: dict, fail: Fail) -> tuple[str, dict[str, Any]]:
    """``(registered name, hyper-parameters)`` of a model, read without loading any weights."""
    spec = config.models[key]
    if spec.kind != "train":
        return _file_architecture(spec, ("models", key), fail)
    train = spec.train
    init = train.get("init")
    if init is not None and init not in known:
        known[init] = _architecture(config, init, known, fail)
    name = train.get("model") or known[init][0]
    base = known[init][1] if init is not None and known[init][0] == name else CPU_PRESETS.get(name, {})
    return name, {**base, **train.get("set", {})}


def _file_architecture(spec: Any, path: tuple, fail: Fail) -> tuple[str, dict[str, Any]]:
    """The architecture of a model given by name, a fastMRI file or a checkpoint (its JSON)."""
    if spec.kind in ("name", "fastmri"):
        return spec.model, spec.config
    where = Path(spec.checkpoint + ".json")
    try:
        meta = json.loads(where.read_text())
        return str(meta["name"]), dict(meta["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail((*path, "checkpoint"), f"{where}: not a readable reconguard model config ({exc})") from None


def _defense(config: Any, name: str, model_key: str, model: Any, architecture: tuple[str, dict[str, Any]],
             fail: Fail) -> Any:
    spec = config.defenses[name]
    path = ("defenses", name)
    if spec.weights is not None:
        kind, settings = _file_architecture(spec.weights, (*path, "weights"), fail)
        if kind != architecture[0]:
            raise fail((*path, "weights"), f"cannot protect {model_key}: the weights are a {kind}, {model_key} is a "
                       f"{architecture[0]} (a trained defense is the same architecture, robustly trained)")
        try:
            weights = build(kind, **settings)
        except ConfigError as exc:
            raise fail((*path, "weights"), str(exc)) from None
        return build_defense(spec.defense, model, weights=weights)
    if spec.defense == "cyclic" and config.sampling.mask not in ("random", "equispaced"):
        raise fail((*path, "defense"), f"cyclic draws its masks like the sampling mask, which must be Cartesian "
                   f"lines (random or equispaced), not {config.sampling.mask!r}")
    calibrate, data = spec.calibrate, config.data
    if calibrate is not None and data.path is not None and not (Path(data.path) / calibrate).is_dir():
        raise fail((*path, "calibrate"), f"{Path(data.path) / calibrate} is not a directory")
    if calibrate is not None and data.builtin is not None and calibrate not in ("train", "val", "test"):
        raise fail((*path, "calibrate"), f"built-in data has the splits train, val and test, not {calibrate!r}")
    try:
        return build_defense(spec.defense, model, **spec.settings)
    except (ConfigError, TypeError, ValueError) as exc:
        raise fail((*path, "settings"), f"cannot protect {model_key}: {exc}") from None


def _train_recipe(config: Any, key: str, architecture: tuple[str, dict[str, Any]], fail: Fail) -> None:
    """The :class:`~reconguard.training.TrainConfig` of a ``train:`` model (its budget, loss, robust mode)."""
    name, model_config = architecture
    try:
        TrainConfig(model=name, model_config=model_config, data=".", out=".",
                    acceleration=config.sampling.accelerations[0], mask=config.sampling.mask,
                    center_fraction=config.sampling.center_fraction, **train_options(config.models[key].train))
    except (ConfigError, TypeError, ValueError) as exc:
        raise fail(("models", key, "train"), str(exc)) from None


def _attack_pairings(config: Any, built: dict[str, Any], defended: dict[tuple[str, str], Any], fail: Fail) -> None:
    """A network-input attack needs every reconstructor it targets to take a network-input perturbation."""
    for name, entry in config.attacks.items():
        attack = build_attack(entry.attack, **{**entry.options, "eps": entry.eps[0], "seed": 0})
        if getattr(getattr(attack, "threat", None), "support", None) != "network_input":
            continue
        targets = [(m, built[m]) for m in entry.models]
        targets += [(f"{m} with {d}", obj) for (m, d), obj in defended.items()
                    if name in config.defenses[d].attacks and m in entry.models]
        targets += [(m, built[m]) for link in config.transfer if name in link.attacks
                    for m in (link.source, *link.targets)]
        for label, target in targets:
            if not getattr(target, "accepts_input_delta", False):
                raise fail(("attacks", name), f"{entry.attack} perturbs the network's input image, which {label} "
                           f"does not take (models that do: {', '.join(INPUT_DELTA_MODELS)})")


def train_options(train: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~reconguard.training.TrainConfig` keywords of a checked ``train:`` spec, other than
    ``model``, ``model_config``, ``init`` and the paths: ``steps`` becomes ``max_steps`` (and, without
    ``epochs``, the whole budget)."""
    options = {k: v for k, v in train.items() if k not in ("model", "set", "init", "robust_set", "steps")}
    if "steps" in train:
        options["max_steps"] = train["steps"]
        options.setdefault("epochs", None)
    options["robust_config"] = dict(train.get("robust_set") or {})
    return options
