"""``reconguard audit`` configuration: a YAML file, checked completely before any work starts.

Example (every key shown; only ``output``, ``data`` and ``models`` are required)::

    output: runs/audit                 # results.sqlite and report/ go here
    data: {builtin: mni152, size: 128, split: test, max_slices: 8}   # or {path: /data/knee, split: val}
    sampling: {mask: random, accelerations: [4], center_fraction: null}
    models:
      unet: {checkpoint: runs/unet/best}              # a reconguard checkpoint
      knee: {fastmri: unet.pt, kind: unet, config: {chans: 32}}   # a fastMRI state_dict
      cs: {name: cs_tv}                               # a registered model with default settings
      small: {train: {model: modl, max_minutes: 2}}   # trained by the audit (cached in output/models)
    defenses:                          # "none" (the undefended model) is always evaluated
      cyclic: {defense: cyclic, settings: {steps: 30}, calibrate: val, models: [unet], attacks: [pgd-kspace]}
    attacks:
      pgd-kspace: {eps: [0.01, 0.02, 0.05]}
      weak-image: {attack: pgd-image, eps: [0.005], steps: 5}
      fnaf: {}
    transfer:                          # black-box: perturbations crafted on a surrogate
      - {source: unet, targets: [cs], attacks: [pgd-kspace]}
    seeds: [0]
    batch_size: 4
    device: cpu
    panels: true                       # store images for the report's panels

Errors name the line of the file: ``config.yaml:12: models.unet: unknown key 'chekpoint'``.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconguard.errors import ConfigError

_TOP = {"output", "data", "sampling", "models", "defenses", "attacks", "transfer", "seeds", "batch_size", "device",
        "panels"}
_DATA = {"builtin", "size", "path", "split", "max_slices"}
_SAMPLING = {"mask", "accelerations", "center_fraction"}
_MODEL_SOURCES = ("checkpoint", "fastmri", "name", "train")
_MODEL = {*_MODEL_SOURCES, "kind", "config"}
_TRAIN = {"model", "set", "epochs", "max_minutes", "robust", "robust_set", "init", "lr", "loss", "batch_size"}
_DEFENSE = {"defense", "settings", "calibrate", "models", "attacks"}
_ATTACK_OPTIONS = {"norm", "relative", "amplitude", "steps", "step_size", "restarts", "loss", "unsupervised",
                   "eot_samples", "candidates", "feature_size", "gamma"}
_ATTACK = {"attack", "eps", "models", *_ATTACK_OPTIONS}
_TRANSFER = {"source", "targets", "attacks"}
BUILTIN = ("mni152", "colin27", "phantom")


@dataclass(frozen=True)
class AuditConfig:
    """A validated audit configuration (see the module docstring for the file format)."""

    output: Path
    data: dict[str, Any]
    sampling: dict[str, Any]
    models: dict[str, dict[str, Any]]
    defenses: dict[str, dict[str, Any]]
    attacks: dict[str, dict[str, Any]]
    transfer: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    batch_size: int = 4
    device: str = "cpu"
    panels: bool = True
    source: str = "<config>"

    def as_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (recorded in the database)."""
        return {"output": str(self.output), "data": self.data, "sampling": self.sampling, "models": self.models,
                "defenses": self.defenses, "attacks": self.attacks, "transfer": self.transfer, "seeds": self.seeds,
                "batch_size": self.batch_size, "device": self.device, "panels": self.panels}


class _Lines:
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


def load_config(path: str | Path) -> AuditConfig:
    """Read and validate an audit config file.

    Raises:
        ConfigError: Unreadable YAML, unknown keys, wrong types or impossible values (naming the line).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    return parse_config(text, source=str(path), base=path.parent)


def parse_config(text: str, *, source: str = "<config>", base: Path | None = None) -> AuditConfig:
    """Validate the YAML ``text`` of an audit config; relative paths resolve against ``base``."""
    try:
        node, raw = yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    lines = _Lines(node, source)
    check = _Checker(lines, base or Path.cwd())
    raw = check.mapping(raw, (), _TOP, required=("output", "data", "models"))
    models = check.models(raw["models"])
    attacks = check.attacks(raw.get("attacks") or {}, models)
    defenses = check.defenses(raw.get("defenses") or {}, models, attacks)
    return AuditConfig(
        output=check.path(raw["output"], ("output",), must_exist=False),
        data=check.data(raw["data"]),
        sampling=check.sampling(raw.get("sampling") or {}),
        models=models,
        defenses=defenses,
        attacks=attacks,
        transfer=check.transfer(raw.get("transfer") or [], models, attacks),
        seeds=check.int_list(raw.get("seeds", [0]), ("seeds",), low=0),
        batch_size=check.integer(raw.get("batch_size", 4), ("batch_size",), low=1),
        device=check.string(raw.get("device", "cpu"), ("device",)),
        panels=check.boolean(raw.get("panels", True), ("panels",)),
        source=source,
    )


class _Checker:
    """Type and value checks that raise :class:`ConfigError` naming the line."""

    def __init__(self, lines: _Lines, base: Path):
        self.lines, self.base = lines, base

    def fail(self, path: tuple, message: str) -> ConfigError:
        return self.lines.error(path, message)

    # -- scalars ---------------------------------------------------------------------------------

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
            if item not in known:
                raise self.fail((*path, i), f"unknown name {item!r}; defined: {sorted(known)}")
        return list(items)

    def path(self, value: Any, path: tuple, *, must_exist: bool = True) -> Path:
        resolved = Path(self.string(value, path)).expanduser()
        resolved = Path(os.path.normpath(resolved if resolved.is_absolute() else self.base / resolved))
        if must_exist and not resolved.exists():
            raise self.fail(path, f"{resolved} does not exist")
        return resolved

    # -- sections --------------------------------------------------------------------------------

    def data(self, value: Any) -> dict[str, Any]:
        data = self.mapping(value, ("data",), _DATA)
        if ("builtin" in data) == ("path" in data):
            raise self.fail(("data",), "give exactly one of 'builtin' (a built-in data set) or 'path'")
        out: dict[str, Any] = {"split": self.string(data.get("split", "test"), ("data", "split"))}
        if "builtin" in data:
            if data["builtin"] not in BUILTIN:
                raise self.fail(("data", "builtin"), f"unknown built-in data set {data['builtin']!r}; {BUILTIN}")
            out["builtin"] = data["builtin"]
            out["size"] = self.integer(data.get("size", 128), ("data", "size"), low=16)
        elif "size" in data:
            raise self.fail(("data", "size"), "size applies to built-in data only")
        else:
            root = self.path(data["path"], ("data", "path"))
            if not (root / out["split"]).is_dir():
                raise self.fail(("data", "split"), f"{root / out['split']} is not a directory")
            out["path"] = str(root)
        max_slices = data.get("max_slices")
        out["max_slices"] = None if max_slices is None else self.integer(max_slices, ("data", "max_slices"), low=1)
        return out

    def sampling(self, value: Any) -> dict[str, Any]:
        from reconguard.physics.masks import MASKS

        sampling = self.mapping(value, ("sampling",), _SAMPLING)
        mask = sampling.get("mask", "random")
        if mask not in MASKS:
            raise self.fail(("sampling", "mask"), f"unknown mask {mask!r}; choose one of {sorted(MASKS)}")
        raw = sampling.get("accelerations", [4])
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise self.fail(("sampling", "accelerations"), "expected at least one acceleration")
        accelerations = [self.number(a, ("sampling", "accelerations", i), low=1.0, strict=True)
                         for i, a in enumerate(items)]
        fraction = sampling.get("center_fraction")
        if fraction is not None:
            fraction = self.number(fraction, ("sampling", "center_fraction"), low=0.0, strict=True)
            if fraction >= 1:
                raise self.fail(("sampling", "center_fraction"), f"must be < 1, got {fraction}")
        return {"mask": mask, "accelerations": accelerations, "center_fraction": fraction}

    def models(self, value: Any) -> dict[str, dict[str, Any]]:
        from reconguard.models.registry import MODELS

        if not isinstance(value, dict) or not value:
            raise self.fail(("models",), "expected a non-empty mapping of model names to specs")
        out = {}
        for key, spec in value.items():
            path = ("models", key)
            if key == "none" or not isinstance(key, str):
                raise self.fail(path, f"invalid model name {key!r}")
            spec = self.mapping(spec if spec is not None else {}, path, _MODEL)
            sources = [s for s in _MODEL_SOURCES if s in spec]
            if len(sources) != 1:
                raise self.fail(path, f"give exactly one of {list(_MODEL_SOURCES)}")
            kind = sources[0]
            entry: dict[str, Any] = {"kind": kind}
            if kind == "checkpoint":
                weights = self.path(spec["checkpoint"], (*path, "checkpoint"), must_exist=False)
                stem = weights.with_suffix("") if weights.suffix in (".json", ".safetensors") else weights
                if not stem.with_name(stem.name + ".json").exists():
                    raise self.fail((*path, "checkpoint"), f"{stem}.json does not exist")
                entry["checkpoint"] = str(stem)
            elif kind == "fastmri":
                entry["fastmri"] = str(self.path(spec["fastmri"], (*path, "fastmri")))
                if spec.get("kind") not in ("unet", "varnet"):
                    raise self.fail((*path, "kind"), "fastmri models need kind: unet or varnet")
                entry.update(model=spec["kind"], config=dict(spec.get("config") or {}))
            elif kind == "name":
                if spec["name"] not in MODELS:
                    raise self.fail((*path, "name"), f"unknown model {spec['name']!r}; choose one of {sorted(MODELS)}")
                entry.update(model=spec["name"], config=dict(spec.get("config") or {}))
            else:
                entry["train"] = self.train(spec["train"], (*path, "train"), MODELS, value)
            out[key] = entry
        return out

    def train(self, value: Any, path: tuple, registry: dict, models: dict) -> dict[str, Any]:
        train = self.mapping(value, path, _TRAIN)
        if train.get("model") not in registry and "init" not in train:
            raise self.fail((*path, "model"), f"unknown model {train.get('model')!r}; choose one of {sorted(registry)}")
        if "init" in train and (train["init"] not in models or train["init"] == path[1]):
            raise self.fail((*path, "init"), f"init must name another model of this config, got {train['init']!r}")
        for key in ("epochs", "batch_size"):
            if key in train:
                self.integer(train[key], (*path, key), low=1)
        for key in ("max_minutes", "lr"):
            if key in train:
                self.number(train[key], (*path, key), strict=True)
        if train.get("robust", "none") not in ("none", "pgd", "fnaf", "smooth"):
            raise self.fail((*path, "robust"), f"robust must be none, pgd, fnaf or smooth, got {train['robust']!r}")
        for key in ("set", "robust_set"):
            if not isinstance(train.get(key, {}), dict):
                raise self.fail((*path, key), "expected a mapping of hyper-parameters")
        return dict(train)

    def defenses(self, value: Any, models: dict, attacks: dict) -> dict[str, dict[str, Any]]:
        from reconguard.defenses.registry import DEFENSES

        if not isinstance(value, dict):
            raise self.fail(("defenses",), "expected a mapping of defense names to specs")
        out = {}
        for key, spec in value.items():
            path = ("defenses", key)
            if key == "none":
                raise self.fail(path, "'none' (the undefended model) is always evaluated; do not define it")
            spec = self.mapping(spec if spec is not None else {}, path, _DEFENSE)
            name = spec.get("defense", key)
            if name not in DEFENSES:
                raise self.fail((*path, "defense"), f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}")
            settings = spec.get("settings") or {}
            if not isinstance(settings, dict):
                raise self.fail((*path, "settings"), "expected a mapping of hyper-parameters")
            accepted = {p.name for p in inspect.signature(DEFENSES[name].__init__).parameters.values()
                        if p.kind is p.KEYWORD_ONLY}
            for option in settings:
                if option not in accepted:
                    raise self.fail((*path, "settings", option), f"unknown option for {name}; {sorted(accepted)}")
            calibrate = spec.get("calibrate", "val" if name == "cyclic" else None)
            out[key] = {"defense": name, "settings": dict(settings), "calibrate": calibrate,
                        "models": self.names(spec.get("models", list(models)), (*path, "models"), models),
                        "attacks": self.names(spec.get("attacks", list(attacks)), (*path, "attacks"), attacks)}
        return out

    def attacks(self, value: Any, models: dict) -> dict[str, dict[str, Any]]:
        from reconguard.attacks.presets import ATTACKS

        if not isinstance(value, dict):
            raise self.fail(("attacks",), "expected a mapping of attack names to specs")
        out = {}
        for key, spec in value.items():
            path = ("attacks", key)
            spec = self.mapping(spec if spec is not None else {}, path, _ATTACK)
            name = spec.get("attack", key)
            if name not in ATTACKS:
                raise self.fail((*path, "attack"), f"unknown attack {name!r}; choose one of {list(ATTACKS)}")
            preset = ATTACKS[name]
            entry: dict[str, Any] = {"attack": name, "options": {k: spec[k] for k in _ATTACK_OPTIONS if k in spec},
                                     "models": self.names(spec.get("models", list(models)), (*path, "models"), models)}
            if preset.kind == "perturbation":
                raw = spec.get("eps", [preset.eps])
                items = raw if isinstance(raw, list) else [raw]
                if not items:
                    raise self.fail((*path, "eps"), "expected at least one budget")
                entry["eps"] = [self.number(e, (*path, "eps", i)) for i, e in enumerate(items)]
            elif "eps" in spec:
                raise self.fail((*path, "eps"), f"{name} has no budget")
            else:
                entry["eps"] = [None]
            out[key] = entry
            self._attack_options(key, entry)
        return out

    def _attack_options(self, key: str, entry: dict[str, Any]) -> None:
        """Build the attack once per budget now, so a refused option fails before any work."""
        from reconguard.audit.cells import build_attack

        for eps in entry["eps"]:
            try:
                build_attack(entry, eps=eps, seed=0)
            except ConfigError as exc:
                raise self.fail(("attacks", key), str(exc)) from None

    def transfer(self, value: Any, models: dict, attacks: dict) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self.fail(("transfer",), "expected a list of {source, targets, attacks}")
        out = []
        for i, spec in enumerate(value):
            path = ("transfer", i)
            spec = self.mapping(spec, path, _TRANSFER, required=("source",))
            source = self.names(spec["source"], (*path, "source"), models)
            if len(source) != 1:
                raise self.fail((*path, "source"), "expected one surrogate model")
            targets = self.names(spec.get("targets", [m for m in models if m != source[0]]), (*path, "targets"), models)
            chosen = self.names(spec.get("attacks", list(attacks)), (*path, "attacks"), attacks)
            for name in chosen:
                if attacks[name]["eps"] == [None]:
                    raise self.fail((*path, "attacks"), f"{name} is a feature attack; transfer needs a perturbation")
            out.append({"source": source[0], "targets": [t for t in targets if t != source[0]], "attacks": chosen})
        return out
