"""Checks of YAML values that name the line of the offending key (used by the audit config).

:class:`Lines` maps key paths of a YAML document to line numbers; :class:`Checker` validates
scalars, mappings and lists and raises :class:`~reconguard.errors.ConfigError` as
``file.yaml:LINE: key.path: message``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from reconguard.errors import ConfigError


class Lines:
    """Line numbers of the keys of a YAML document, by key path, for error messages."""

    def __init__(self, node: yaml.Node | None, source: str):
        self.source, self.lines = source, {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[(*path, key.value)] = key.start_mark.line + 1
                self._walk(value, (*path, key.value))
                self.lines[(*path, key.value)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i))

    def error(self, path: tuple, message: str) -> ConfigError:
        line = next((self.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self.lines), None)
        where = ".".join(str(p) for p in path) or "config"
        prefix = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{prefix}: {where}: {message}")


class Checker:
    """Type and value checks that raise :class:`ConfigError` naming the line."""

    def __init__(self, lines: Lines, base: Path):
        self.lines, self.base = lines, base

    def fail(self, path: tuple, message: str) -> ConfigError:
        """The error for the key at ``path`` (its line, its dotted name, ``message``)."""
        return self.lines.error(path, message)

    def mapping(self, value: Any, path: tuple, keys: set[str], *, required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in keys:
                raise self.fail((*path, key), f"unknown key {key!r}; expected one of {sorted(keys)}")
        for key in required:
            if key not in value:
                raise self.fail(path, f"missing required key {key!r}")
        return value

    def string(self, value: Any, path: tuple) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value

    def choice(self, value: Any, path: tuple, options: Any, what: str) -> str:
        """A string among ``options`` (lists, numbers... are refused without hashing them)."""
        if not isinstance(value, str) or value not in options:
            raise self.fail(path, f"unknown {what} {value!r}; choose one of {sorted(options)}")
        return value

    def device(self, value: Any, path: tuple) -> str:
        value = self.string(value, path)
        try:
            kind = torch.device(value).type
        except RuntimeError:
            raise self.fail(path, f"{value!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise self.fail(path, f"{value}: CUDA is not available on this machine")
        return value

    def option(self, value: Any, path: tuple, option: Any) -> Any:
        """A value of an attack option (:class:`reconguard.attacks.presets.Option`)."""
        if option.kind is bool:
            return self.boolean(value, path)
        if option.kind is str:
            return self.string(value, path) if option.choices is None else self.choice(value, path, option.choices,
                                                                                        path[-1])
        if option.kind is int:
            return self.integer(value, path, low=int(option.low))
        number = self.number(value, path, low=option.low, strict=option.strict)
        if option.high is not None and number > option.high:
            raise self.fail(path, f"expected a number <= {option.high:g}, got {value!r}")
        return number

    def boolean(self, value: Any, path: tuple) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {value!r}")
        return value

    def integer(self, value: Any, path: tuple, *, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(path, f"expected an integer >= {low}, got {value!r}")
        return value

    def number(self, value: Any, path: tuple, *, low: float = 0.0, strict: bool = False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < low or (strict and value == low):
            raise self.fail(path, f"expected a finite number {'>' if strict else '>='} {low:g}, got {value!r}")
        return float(value)

    def int_list(self, value: Any, path: tuple, *, low: int) -> list[int]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(path, "expected at least one value")
        return [self.integer(v, (*path, i), low=low) for i, v in enumerate(items)]

    def names(self, value: Any, path: tuple, known: dict) -> list[str]:
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if not isinstance(item, str) or item not in known:
                raise self.fail((*path, i), f"unknown name {item!r}; defined: {sorted(known)}")
        return list(items)

    def path(self, value: Any, path: tuple, *, must_exist: bool = True) -> Path:
        resolved = Path(self.string(value, path)).expanduser()
        resolved = Path(os.path.normpath(resolved if resolved.is_absolute() else self.base / resolved))
        if must_exist and not resolved.exists():
            raise self.fail(path, f"{resolved} does not exist")
        return resolved

    def settings(self, value: Any, path: tuple) -> dict[str, Any]:
        """A mapping of keyword hyper-parameters (``None`` is empty)."""
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.fail(path, "expected a mapping of hyper-parameters")
        return dict(value)
