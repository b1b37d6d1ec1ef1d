"""Run directories for commands that write results: refuse to replace a run unless asked.

A command builds its output with :func:`reconguard.files.atomic_directory`, so an error or Ctrl-C
never leaves a half-written run behind and a replaced run disappears only after its successor is
in place.
"""

from __future__ import annotations

from pathlib import Path

from reconguard.errors import ConfigError


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing run unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} already holds a run; pass --overwrite to replace it")
