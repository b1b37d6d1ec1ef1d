"""The schema of ``dataset.json``, the manifest that marks a complete built-in data build.

:func:`check_manifest` validates a whole manifest against :data:`SCHEMA` and names the first
field that does not fit (``dataset.json: field 'shape': expected a list of 2 integers >= 1, got
5``), so a hand-edited or foreign file is one clear error, never a ``TypeError`` later on.
Fields not in the schema are allowed (later builders may add some).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from reconguard.errors import DataError

#: A check returns ``None`` when the value fits, else what was expected.
Check = Callable[[Any], "str | None"]


def _integer(low: int) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        return None if ok else f"an integer >= {low}"

    return check


def _number(low: float) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= low
        return None if ok else f"a number >= {low:g}"

    return check


def _string(choices: tuple[str, ...] | None = None) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and (choices is None or value in choices):
            return None
        return "a string" if choices is None else f"one of {list(choices)}"

    return check


def _list(item: Check, length: int, what: str) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, list) and len(value) == length and all(item(v) is None for v in value)
        return None if ok else f"a list of {length} {what}"

    return check


@dataclass(frozen=True)
class Table:
    """A JSON object: every field of ``fields`` (required), plus any ``keys`` mapped to ``values``."""

    fields: dict[str, Any] = field(default_factory=dict)
    keys: Check | None = None
    values: Any = None


_COUNTS = Table({"files": _integer(0), "slices": _integer(0)})

#: Every field a build writes, with its type (see :func:`reconguard.data.builtin.build_dataset`).
SCHEMA: dict[str, Any] = {
    "name": _string(),
    "kspace": _string(),
    "source": _string(),
    "parameters": Table({
        "source": _string(),
        "size": _integer(16),
        "coils": _integer(1),
        "noise": _number(0.0),
        "seed": _integer(0),
        "block": _integer(1),
        "fractions": _list(_number(0.0), 3, "numbers"),
    }),
    "builder_version": _integer(1),
    "reconguard_version": _string(),
    "challenge": _string(("singlecoil", "multicoil")),
    "shape": _list(_integer(1), 2, "integers >= 1"),
    "coils": _integer(1),
    "orientations": Table(keys=_string(), values=_integer(0)),
    "splits": Table(keys=_string(("train", "val", "test")), values=_COUNTS),
}


def check_manifest(path: Path, manifest: Any) -> dict[str, Any]:
    """Validate a parsed ``dataset.json`` against :data:`SCHEMA`.

    Args:
        path: The file (for the message).
        manifest: Its parsed JSON.

    Returns:
        ``manifest``, unchanged.

    Raises:
        DataError: Naming the first field that is missing or of the wrong type.
    """
    problem = _walk(manifest, Table(SCHEMA), "")
    if problem is not None:
        field, expected, got = problem
        where = f"field '{field}'" if field else "the file"
        raise DataError(
            f"{path}: {where}: expected {expected}, got {got}; not a manifest written by "
            "'reconguard data build' (rebuild with --overwrite)"
        )
    return manifest


def _walk(value: Any, spec: Any, where: str) -> tuple[str, str, str] | None:
    """``(field, expected, got)`` of the first misfit of ``value`` to ``spec``, else ``None``."""
    if not isinstance(spec, Table):
        problem = spec(value)
        return None if problem is None else (where, problem, _show(value))
    if not isinstance(value, dict):
        return where, "an object", _show(value)
    for key, sub in spec.fields.items():
        name = f"{where}.{key}" if where else key
        if key not in value:
            return name, "it to be present", "nothing"
        found = _walk(value[key], sub, name)
        if found is not None:
            return found
    for key, item in value.items() if spec.values is not None else ():
        name = f"{where}.{key}" if where else str(key)
        bad_key = None if spec.keys is None else spec.keys(key)
        if bad_key is not None:
            return name, f"a key that is {bad_key}", repr(key)
        found = _walk(item, spec.values, name)
        if found is not None:
            return found
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
