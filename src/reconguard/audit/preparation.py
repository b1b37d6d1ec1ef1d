"""Before the matrix runs: the built-in data, and the config's ``train:`` models.

Both are idempotent (a finished build and a finished training run are reused) and happen on the
writing process only (rank 0 under torchrun), under the output directory's lock
(:func:`reconguard.audit.claims.preparation_lock`) when several audit processes share it. Training
budgets are epochs and/or steps; ``max_minutes`` is only a cap, and how each model was trained --
including whether the cap cut it short -- is returned for the database
(:meth:`reconguard.audit.store.Store.trainings`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconguard.audit.config import AuditConfig
from reconguard.audit.matrix import train_options
from reconguard.data import build_dataset, list_volumes
from reconguard.errors import ConfigError, DataError
from reconguard.models import load, load_fastmri
from reconguard.training.config import TrainConfig
from reconguard.training.presets import CPU_PRESETS
from reconguard.training.trainer import train


def data_directory(config: AuditConfig) -> Path:
    """Where the audited data lives: ``OUTPUT/data`` for built-in data, else the config's path."""
    return config.output / "data" if config.data.builtin is not None else Path(config.data.path)


def check_inputs(config: AuditConfig) -> None:
    """Read what the config points to before anything is written: the structure of every data file
    of the split (and of the defenses' calibration splits), and every checkpoint and fastMRI file
    (weights loaded on the CPU and dropped: a corrupt or foreign file fails here, not at a unit).

    Raises:
        DataError: Naming the file.
    """
    if config.data.path is not None:
        splits = {config.data.split} | {d.calibrate for d in config.defenses.values() if d.calibrate}
        for split in sorted(splits):
            list_volumes(data_directory(config) / split)
    weights = [d.weights for d in config.defenses.values() if d.weights is not None]
    for spec in [*config.models.values(), *weights]:
        if spec.kind in ("checkpoint", "fastmri"):
            load_spec(spec)


def load_spec(spec: Any) -> Any:
    """The model of a checkpoint or fastMRI spec, loaded on the CPU."""
    if spec.kind == "checkpoint":
        return load(Path(spec.checkpoint))
    return load_fastmri(spec.fastmri, spec.model, **spec.config)


def build_data(config: AuditConfig, *, progress: bool) -> None:
    """Build the built-in data set of the config (nothing for data given by path)."""
    if config.data.builtin is not None:
        build_dataset(data_directory(config), source=config.data.builtin, size=config.data.size, progress=progress)


def model_paths(config: AuditConfig) -> dict[str, Any]:
    """The weights of every model: the checkpoint / fastMRI file, ``OUTPUT/models/KEY/best`` for
    trained ones, ``None`` for registered models built by name."""
    paths: dict[str, Any] = {}
    for key, spec in config.models.items():
        paths[key] = {"checkpoint": spec.checkpoint, "fastmri": spec.fastmri}.get(spec.kind)
    for key in training_order(config):
        paths[key] = config.output / "models" / key / "best"
    return paths


def training_order(config: AuditConfig) -> list[str]:
    """Models to train, each after the model it starts from."""
    order: list[str] = []

    def visit(key: str) -> None:
        spec = config.models[key]
        if spec.kind != "train" or key in order:
            return
        if "init" in spec.train:
            visit(spec.train["init"])
        order.append(key)

    for key in config.models:
        visit(key)
    return order


def train_models(config: AuditConfig, device: str, *, progress: bool) -> dict[str, dict[str, Any]]:
    """Train (or reuse) every ``train:`` model; returns how each was trained, by config key."""
    paths = model_paths(config)
    return {key: _train(config, key, paths, device, progress) for key in training_order(config)}


def _train(config: AuditConfig, key: str, paths: dict[str, Any], device: str, progress: bool) -> dict[str, Any]:
    spec = config.models[key].train
    init, name, base = spec.get("init"), spec.get("model"), None
    if init is not None:
        if paths[init] is None:
            raise ConfigError(f"models.{key}.train.init: {init} has no weights to start from")
        try:
            source = json.loads(Path(f"{paths[init]}.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{paths[init]}.json: not a readable model config ({exc})") from None
        name = name or source["name"]
        base = source["config"] if name == source["name"] else None
    # Fine-tuning from `init` keeps its architecture unless `set` changes it.
    model_config = {**(CPU_PRESETS.get(name, {}) if base is None else base), **spec.get("set", {})}
    run = TrainConfig(model=name, model_config=model_config, data=str(data_directory(config)),
                      out=str(paths[key].parent), acceleration=config.sampling.accelerations[0],
                      mask=config.sampling.mask, center_fraction=config.sampling.center_fraction, device=device,
                      init=None if init is None else str(paths[init]), **train_options(spec))
    history = train(run, progress=progress, label=key if key == name else f"{key} ({name})")
    return training_info(run, history)


def training_info(run: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
    """What the report needs to know about a trained model: its budget, what it got, whether the
    ``max_minutes`` cap stopped it early, and its best validation PSNR."""
    last = history[-1] if history else {}
    best = max(history, key=lambda h: h["psnr"]) if history else {}
    return {
        "model": run.model,
        "epochs": run.epochs,
        "max_steps": run.max_steps,
        "max_minutes": run.max_minutes,
        "epochs_done": last.get("epoch", 0) - (1 if last.get("partial") else 0),
        "partial_epoch": bool(last.get("partial")),
        "steps": last.get("steps"),
        "minutes": last.get("minutes"),
        "stopped_by_cap": bool(last.get("stopped_by_cap")),
        "best_epoch": best.get("epoch"),
        "best_psnr": best.get("psnr"),
    }
