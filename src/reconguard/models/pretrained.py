"""The reference models that ship with reconguard, trained on the built-in data set.

``weights/manifest.json`` lists each model with the recipe it was trained by
(:mod:`reconguard.training.reference`), its validation and test metrics next to zero-filling and
CS-TV on the same test split, its training time and the SHA-256 of its files, and the fingerprint
of the data build it was trained on. Load one with ``registry.load("pretrained:NAME")`` (or
``--model pretrained:NAME`` on the command line, ``{pretrained: NAME}`` in an audit config): the
SHA-256 of its files is checked first (:func:`check_files`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from reconguard.errors import ConfigError, DataError

WEIGHTS = Path(__file__).parent / "weights"
MANIFEST = "manifest.json"


def manifest(directory: Path | None = None) -> dict[str, Any]:
    """The manifest of the shipped models (``{}`` when none ship); ``directory`` defaults to
    :data:`WEIGHTS`, as in every function here."""
    path = (directory or WEIGHTS) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not a readable manifest ({exc})") from None


def pretrained_names(directory: Path | None = None) -> list[str]:
    """Names of the shipped models."""
    return sorted(manifest(directory).get("models", {}))


def check_files(name: str, directory: Path | None = None) -> Path:
    """Check the files of shipped model ``name`` against the manifest's SHA-256; return its
    checkpoint stem (for :func:`reconguard.models.registry.load`).

    Raises:
        ConfigError: ``name`` is not a shipped model.
        DataError: A file is missing or differs from the one the manifest describes.
    """
    directory = directory or WEIGHTS
    entry = manifest(directory).get("models", {}).get(name)
    if entry is None:
        raise ConfigError(f"no shipped reference model {name!r}; shipped: {pretrained_names(directory)}")
    for file, expected in entry["sha256"].items():
        path = directory / file
        if not path.exists():
            raise DataError(f"{path}: missing (regenerate with python -m reconguard.training.reference)")
        if sha256(path) != expected:
            raise DataError(f"{path}: SHA-256 differs from {directory / MANIFEST}; the file was changed")
    return directory / name


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
