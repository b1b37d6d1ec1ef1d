"""Run directories for commands that write results: staged, then published in one rename.

A command builds its output in a hidden staging directory next to ``--out`` and calls
:func:`publish` only when everything is written, so an error or Ctrl-C never leaves a half-written
run behind and a replaced run disappears only after its successor is in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from reconguard.errors import ConfigError


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing run unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} already holds a run; pass --overwrite to replace it")


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Yield a fresh staging directory beside ``out``; publish it if the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        yield staging
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, out: Path) -> None:
    """Swap the finished staging directory into place (the old run is removed only afterwards)."""
    os.chmod(staging, 0o755)  # mkdtemp makes 0700 directories
    if not out.exists():
        os.replace(staging, out)
        return
    trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    try:
        os.replace(out, trash / "run")
        try:
            os.replace(staging, out)
        except BaseException:
            os.replace(trash / "run", out)  # put the old run back
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (temporary file, then rename), world-readable."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
