"""The one exception type a user can cause.

Every error that bad input can trigger (a malformed file, a wrong shape, NaN k-space, an unknown
model name, an impossible parameter) is raised as :class:`ReconguardError` (or a subclass), with a
message that names the offending file or parameter. The CLI prints it as one line and exits 2.
"""

from __future__ import annotations


class ReconguardError(Exception):
    """A problem with user input, reported as one readable line."""


class DataError(ReconguardError):
    """A data file or array is malformed (missing key, wrong rank, NaN/inf, shape mismatch)."""


class ConfigError(ReconguardError):
    """A parameter or configuration value is unknown or impossible."""


def require(condition: bool, message: str, error: type[ReconguardError] = ConfigError) -> None:
    """Raise ``error(message)`` unless ``condition`` holds.

    Args:
        condition: What must be true.
        message: Sentence naming the parameter/file and the problem.
        error: Exception class to raise.
    """
    if not condition:
        raise error(message)


def require_at_least(owner: str, low: float, **values: float) -> None:
    """Raise :class:`ConfigError` ``"<owner> <name> must be >= <low>, got <value>"`` for the first
    of ``values`` below ``low`` (the hyper-parameter checks of models and metrics)."""
    for name, value in values.items():
        require(value >= low, f"{owner} {name} must be >= {low:g}, got {value}")
