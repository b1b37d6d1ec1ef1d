"""Atomic file writing: a file appears whole under its name, or not at all.

Every writer of the package goes through :func:`atomic_paths` (or its one-file forms
:func:`atomic_path` and :func:`atomic_write`): the content is written to a temporary sibling
(same directory, so the rename stays on one file system), made world-readable (``mkstemp``
creates ``0600`` files; results, data and models are meant to be shared) and renamed onto the
target only when every write succeeded. A failed or interrupted write leaves the previous file
untouched and no temporary file behind. :func:`atomic_directory` does the same for a directory of
results: built beside its final place, swapped in by one rename, the previous one removed only
after its successor is in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_MODE = 0o644


@contextmanager
def atomic_paths(targets: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporary siblings of ``targets``, renamed onto them together when the block succeeds.

    Example::

        with atomic_paths([weights, config]) as (tmp_weights, tmp_config):
            save_file(tensors, tmp_weights)
            tmp_config.write_text(text)
    """
    paths = [Path(t) for t in targets]
    temps: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            temps.append(Path(name))
        yield temps
        for tmp, path in zip(temps, paths):
            os.chmod(tmp, _MODE)
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """One temporary sibling of ``target``, renamed onto it when the block succeeds."""
    with atomic_paths([target]) as (tmp,):
        yield tmp


def atomic_write(target: str | os.PathLike, content: str | bytes) -> Path:
    """Write text (UTF-8, newlines as given) or bytes to ``target`` atomically; return its path."""
    with atomic_path(target) as tmp:
        if isinstance(content, str):
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(content)
        else:
            tmp.write_bytes(content)
    return Path(target)


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """A fresh staging directory beside ``target``, swapped into its place when the block succeeds
    (an existing ``target`` is replaced whole, and removed only once the new one is in place)."""
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes 0700 directories
        trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        try:
            if final.exists():
                os.replace(final, trash / "old")
            try:
                os.replace(staging, final)
            except BaseException:
                if (trash / "old").exists():
                    os.replace(trash / "old", final)  # put the previous one back
                raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
