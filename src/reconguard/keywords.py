"""Hyper-parameters read from a constructor's keyword-only signature (models, defenses, strategies).

A model's or a defense's options are exactly the keyword-only parameters of its ``__init__``: the
registries, the audit config and the robust-training strategies check names against them here, so
a new hyper-parameter is a new keyword and nothing else.
"""

from __future__ import annotations

import inspect
from typing import Iterable

from reconguard.errors import ConfigError


def keyword_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of ``cls.__init__``, by name, in signature order."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p for p in parameters if p.kind is p.KEYWORD_ONLY}


def check_keywords(cls: type, given: Iterable[str], what: str) -> None:
    """Raise ``ConfigError("unknown hyper-parameter(s) [...] for <what>; it accepts [...]")`` for names
    of ``given`` that are not keyword-only parameters of ``cls``."""
    accepted = keyword_parameters(cls)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown hyper-parameter(s) {unknown} for {what}; it accepts {sorted(accepted)}")
