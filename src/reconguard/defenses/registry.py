"""Build defenses by name, with their hyper-parameters checked (one way, like the model registry)."""

from __future__ import annotations

from typing import Any

from torch import nn

from reconguard.defenses.base import Defense
from reconguard.defenses.cyclic import CyclicMitigation
from reconguard.defenses.smoothing import RandomizedSmoothing
from reconguard.defenses.weights import TrainedWeights
from reconguard.errors import ConfigError
from reconguard.keywords import check_keywords

DEFENSES: dict[str, type[Defense]] = {"cyclic": CyclicMitigation, "smooth": RandomizedSmoothing,
                                      "trained": TrainedWeights}


def build_defense(name: str, model: nn.Module, **config: Any) -> Defense:
    """Wrap ``model`` in the defense called ``name``.

    Args:
        name: A key of :data:`DEFENSES` (``cyclic``, ``smooth``, ``trained``: robustly trained
            weights given as ``weights=``).
        model: The reconstructor to protect.
        **config: The defense's keyword-only hyper-parameters.

    Raises:
        ConfigError: Unknown name or hyper-parameter, or an impossible value.
    """
    if name not in DEFENSES:
        raise ConfigError(f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}")
    cls = DEFENSES[name]
    check_keywords(cls, config, f"defense {name!r}")
    try:
        return cls(model, **config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid hyper-parameters {config} for defense {name!r}: {exc}") from None
