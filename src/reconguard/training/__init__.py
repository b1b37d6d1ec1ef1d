"""Supervised training and evaluation of reconstructors.

The public names are imported on first use so that ``reconguard --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "train": "trainer",
    "VolumeMetrics": "evaluation",
    "evaluate": "evaluation",
    "summarize": "evaluation",
    "CPU_PRESETS": "presets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reconguard.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"reconguard.training.{_EXPORTS[name]}"), name)
