"""Build defenses by name, with their hyper-parameters checked (one way, like the model registry)."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from reconguard.defenses.base import Defense
from reconguard.defenses.cyclic import CyclicMitigation
from reconguard.defenses.smoothing import RandomizedSmoothing
from reconguard.errors import ConfigError

DEFENSES: dict[str, type[Defense]] = {"cyclic": CyclicMitigation, "smooth": RandomizedSmoothing}


def build_defense(name: str, model: nn.Module, **config: Any) -> Defense:
    """Wrap ``model`` in the defense called ``name``.

    Args:
        name: A key of :data:`DEFENSES` (``cyclic``, ``smooth``).
        model: The reconstructor to protect.
        **config: The defense's keyword-only hyper-parameters.

    Raises:
        ConfigError: Unknown name or hyper-parameter, or an impossible value.
    """
    if name not in DEFENSES:
        raise ConfigError(f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}")
    cls = DEFENSES[name]
    accepted = {p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ConfigError(f"unknown hyper-parameter(s) {unknown} for defense {name!r}; it accepts {sorted(accepted)}")
    try:
        return cls(model, **config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid hyper-parameters {config} for defense {name!r}: {exc}") from None
