"""``reconguard audit`` configuration: a YAML file, checked completely before any work starts.

Example (every key shown; only ``output``, ``data`` and ``models`` are required)::

    output: runs/audit                 # results.sqlite and report/ go here
    data: {builtin: mni152, size: 128, split: test, max_slices: 8}   # or {path: /data/knee, split: val}
    sampling: {mask: random, accelerations: [4], center_fraction: null}
    models:
      unet: {checkpoint: runs/unet/best}              # a reconguard checkpoint
      modl: {pretrained: modl}                        # a reference model shipped with reconguard
      knee: {fastmri: unet.pt, kind: unet, config: {chans: 32}}   # a fastMRI state_dict
      cs: {name: cs_tv}                               # a registered model with default settings
      small: {train: {model: modl, epochs: 5}}        # trained by the audit (cached in output/models);
                                      # budget: epochs and/or steps; max_minutes only as a cap
    defenses:                          # "none" (the undefended model) is always evaluated
      cyclic: {defense: cyclic, settings: {steps: 30}, calibrate: val, models: [unet], attacks: [pgd-kspace]}
      robust: {weights: {checkpoint: runs/unet-fnaf/best}, models: [unet]}   # robust training of unet
      slow: {defense: cyclic, models: [unet], max_slices: 4}   # defended cells on the first 4 slices only
    attacks:
      pgd-kspace: {eps: [0.01, 0.02, 0.05]}
      weak-image: {attack: pgd-image, eps: [0.005], steps: 5}
      fnaf: {}
    transfer:                          # black-box: perturbations crafted on a surrogate
      - {source: unet, targets: [cs], attacks: [pgd-kspace], eps: [0.02]}   # eps: default all of the attack's
    seeds: [0]
    batch_size: 4
    device: cpu
    panels: true                       # store images for the report's panels
    quality_gate_db: 1.0               # no verdict for a model not this much better than zero-filling
    regime_db: 3.0                     # a test where matched random noise alone costs this much is "unstable"

Errors name the line of the file: ``config.yaml:12: models.unet: unknown key 'chekpoint'``.
Everything is checked before any work: keys, types and ranges of every field and option, and the
whole matrix is built once, cheaply (models constructed without weights on the ``meta`` device,
every defense wrapped around every model it protects, every attack at every budget), so that an
impossible pairing fails here rather than after data was built or models trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconguard.attacks.presets import ATTACKS, OPTIONS, build_attack
from reconguard.audit.matrix import check_matrix
from reconguard.audit.specs import AttackSpec, DataSpec, DefenseSpec, ModelSpec, SamplingSpec, TransferSpec
from reconguard.audit.yamlcheck import Checker, Lines
from reconguard.defenses.registry import DEFENSES
from reconguard.errors import ConfigError, DataError
from reconguard.keywords import keyword_parameters
from reconguard.models.pretrained import check_files
from reconguard.models.registry import MODELS, unknown_model_message
from reconguard.physics.masks import MASKS
from reconguard.report.verdicts import GATE_MARGIN_DB, REGIME_DB

_TOP = {"output", "data", "sampling", "models", "defenses", "attacks", "transfer", "seeds", "batch_size", "device",
        "panels", "quality_gate_db", "regime_db"}
_DATA = {"builtin", "size", "path", "split", "max_slices"}
_SAMPLING = {"mask", "accelerations", "center_fraction"}
_MODEL_SOURCES = ("checkpoint", "pretrained", "fastmri", "name", "train")
_TRAIN = {"model", "set", "epochs", "steps", "max_minutes", "robust", "robust_set", "init", "lr", "loss",
          "batch_size"}
_DEFENSE = {"defense", "settings", "calibrate", "models", "attacks", "weights", "max_slices"}
#: Where the weights of a trained defense may come from (files: the audit trains only ``models:``).
_WEIGHT_SOURCES = ("checkpoint", "pretrained", "fastmri")
#: The attack options an ``attacks:`` entry may set (the budget is ``eps``, the seeds are ``seeds``).
_ATTACK_OPTIONS = {k: v for k, v in OPTIONS.items() if k not in ("eps", "seed")}
_ATTACK = {"attack", "eps", "models", *_ATTACK_OPTIONS}
_TRANSFER = {"source", "targets", "attacks", "eps"}
BUILTIN = ("mni152", "colin27", "phantom")


@dataclass(frozen=True)
class AuditConfig:
    """A validated audit configuration (see the module docstring for the file format)."""

    output: Path
    data: DataSpec
    sampling: SamplingSpec
    models: dict[str, ModelSpec]
    defenses: dict[str, DefenseSpec]
    attacks: dict[str, AttackSpec]
    transfer: tuple[TransferSpec, ...] = ()
    seeds: tuple[int, ...] = (0,)
    batch_size: int = 4
    device: str = "cpu"
    panels: bool = True
    quality_gate_db: float = GATE_MARGIN_DB
    regime_db: float = REGIME_DB
    source: str = "<config>"

    def as_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (recorded in the database)."""
        sections = {name: {k: v.as_dict() for k, v in getattr(self, name).items()}
                    for name in ("models", "defenses", "attacks")}
        return {"output": str(self.output), "data": self.data.as_dict(), "sampling": self.sampling.as_dict(),
                **sections, "transfer": [t.as_dict() for t in self.transfer], "seeds": list(self.seeds),
                "batch_size": self.batch_size, "device": self.device, "panels": self.panels,
                "quality_gate_db": self.quality_gate_db, "regime_db": self.regime_db}


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
    lines = Lines(node, source)
    check = _Checker(lines, base or Path.cwd())
    raw = check.mapping(raw, (), _TOP, required=("output", "data", "models"))
    models = check.models(raw["models"])
    attacks = check.attacks(raw.get("attacks") or {}, models)
    defenses = check.defenses(raw.get("defenses") or {}, models, attacks)
    config = AuditConfig(
        output=check.path(raw["output"], ("output",), must_exist=False),
        data=check.data(raw["data"]),
        sampling=check.sampling(raw.get("sampling") or {}),
        models=models,
        defenses=defenses,
        attacks=attacks,
        transfer=check.transfer(raw.get("transfer") or [], models, attacks),
        seeds=tuple(check.int_list(raw.get("seeds", [0]), ("seeds",), low=0)),
        batch_size=check.integer(raw.get("batch_size", 4), ("batch_size",), low=1),
        device=check.device(raw.get("device", "cpu"), ("device",)),
        panels=check.boolean(raw.get("panels", True), ("panels",)),
        quality_gate_db=check.number(raw.get("quality_gate_db", GATE_MARGIN_DB), ("quality_gate_db",), low=0.0),
        regime_db=check.number(raw.get("regime_db", REGIME_DB), ("regime_db",), low=0.0),
        source=source,
    )

    for key, spec in config.defenses.items():
        if spec.max_slices is not None and spec.max_slices % config.batch_size:
            raise check.fail(("defenses", key, "max_slices"), f"must be a multiple of batch_size "
                             f"({config.batch_size}): work units are whole batches, got {spec.max_slices}")
    check_matrix(config, check.fail)
    return config


class _Checker(Checker):
    """The sections of an audit config (scalar checks: :class:`~reconguard.audit.yamlcheck.Checker`)."""

    # -- sections --------------------------------------------------------------------------------

    def data(self, value: Any) -> DataSpec:
        data = self.mapping(value, ("data",), _DATA)
        if ("builtin" in data) == ("path" in data):
            raise self.fail(("data",), "give exactly one of 'builtin' (a built-in data set) or 'path'")
        out: dict[str, Any] = {"split": self.string(data.get("split", "test"), ("data", "split"))}
        if "builtin" in data:
            out["builtin"] = self.choice(data["builtin"], ("data", "builtin"), BUILTIN, "built-in data set")
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
        return DataSpec(**out)

    def sampling(self, value: Any) -> SamplingSpec:
        sampling = self.mapping(value, ("sampling",), _SAMPLING)
        mask = self.choice(sampling.get("mask", "random"), ("sampling", "mask"), MASKS, "mask")
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
        return SamplingSpec(mask=mask, accelerations=tuple(accelerations), center_fraction=fraction)

    def models(self, value: Any) -> dict[str, ModelSpec]:
        if not isinstance(value, dict) or not value:
            raise self.fail(("models",), "expected a non-empty mapping of model names to specs")
        out = {}
        for key, spec in value.items():
            path = ("models", key)
            if key == "none" or not isinstance(key, str):
                raise self.fail(path, f"invalid model name {key!r}")
            out[key] = self.model(spec, path, _MODEL_SOURCES, value)
        return out

    def model(self, value: Any, path: tuple, sources: tuple[str, ...], models: dict) -> ModelSpec:
        """One model spec: exactly one of ``sources`` (``pretrained`` becomes a checkpoint)."""
        spec = self.mapping(value if value is not None else {}, path, {*sources, "kind", "config"})
        given = [s for s in sources if s in spec]
        if len(given) != 1:
            raise self.fail(path, f"give exactly one of {list(sources)}")
        kind = given[0]
        entry: dict[str, Any] = {"kind": kind}
        if kind == "checkpoint":
            weights = self.path(spec["checkpoint"], (*path, "checkpoint"), must_exist=False)
            stem = weights.with_suffix("") if weights.suffix in (".json", ".safetensors") else weights
            if not stem.with_name(stem.name + ".json").exists():
                raise self.fail((*path, "checkpoint"), f"{stem}.json does not exist")
            entry["checkpoint"] = str(stem)
        elif kind == "pretrained":  # a checkpoint in the package, its files checked against the manifest
            entry.update(kind="checkpoint", checkpoint=self.pretrained(spec["pretrained"], (*path, "pretrained")))
        elif kind == "fastmri":
            entry["fastmri"] = str(self.path(spec["fastmri"], (*path, "fastmri")))
            if spec.get("kind") not in ("unet", "varnet"):
                raise self.fail((*path, "kind"), "fastmri models need kind: unet or varnet")
            entry.update(model=spec["kind"], config=self.settings(spec.get("config"), (*path, "config")))
        elif kind == "name":
            if not isinstance(spec["name"], str) or spec["name"] not in MODELS:
                raise self.fail((*path, "name"), unknown_model_message(spec["name"]))
            entry.update(model=spec["name"], config=self.settings(spec.get("config"), (*path, "config")))
        else:
            entry["train"] = self.train(spec["train"], (*path, "train"), MODELS, models)
        return ModelSpec(**entry)

    def pretrained(self, value: Any, path: tuple) -> str:
        """The checkpoint stem of a shipped reference model, after checking its files' SHA-256."""
        try:
            return str(check_files(value))
        except (ConfigError, DataError) as exc:
            raise self.fail(path, str(exc)) from None

    def train(self, value: Any, path: tuple, registry: dict, models: dict) -> dict[str, Any]:
        train = self.mapping(value, path, _TRAIN)
        if "model" in train or "init" not in train:
            if not isinstance(train.get("model"), str) or train["model"] not in registry:
                raise self.fail((*path, "model"), unknown_model_message(train.get("model")))
        if "init" in train and (not isinstance(train["init"], str) or train["init"] not in models
                                or train["init"] == path[1]):
            raise self.fail((*path, "init"), f"init must name another model of this config, got {train['init']!r}")
        for key in ("epochs", "steps", "batch_size"):
            if key in train:
                self.integer(train[key], (*path, key), low=1)
        for key in ("max_minutes", "lr"):
            if key in train:
                self.number(train[key], (*path, key), strict=True)
        self.choice(train.get("robust", "none"), (*path, "robust"), ("none", "pgd", "fnaf", "smooth"), "robust mode")
        self.choice(train.get("loss", "l1"), (*path, "loss"), ("l1", "mse", "ssim"), "loss")
        for key in ("set", "robust_set"):
            if key in train:
                train[key] = self.settings(train[key], (*path, key))
        return dict(train)

    def defenses(self, value: Any, models: dict, attacks: dict) -> dict[str, DefenseSpec]:
        if not isinstance(value, dict):
            raise self.fail(("defenses",), "expected a mapping of defense names to specs")
        out = {}
        for key, spec in value.items():
            path = ("defenses", key)
            if key == "none":
                raise self.fail(path, "'none' (the undefended model) is always evaluated; do not define it")
            if not isinstance(key, str):
                raise self.fail(path, f"invalid defense name {key!r}")
            spec = self.mapping(spec if spec is not None else {}, path, _DEFENSE)
            default = "trained" if "weights" in spec else key
            name = self.choice(spec.get("defense", default), (*path, "defense"), DEFENSES, "defense")
            weights = None
            if (name == "trained") != ("weights" in spec):
                raise self.fail(path, "a trained defense (defense: trained) is given by its weights: "
                                "weights: {pretrained: NAME} or {checkpoint: PATH}; other defenses take none")
            if name == "trained":
                weights = self.model(spec["weights"], (*path, "weights"), _WEIGHT_SOURCES, models)
                if spec.get("settings"):
                    raise self.fail((*path, "settings"), "a trained defense has no settings: its weights are all")
            settings = self.settings(spec.get("settings"), (*path, "settings"))
            accepted = {k: v for k, v in keyword_parameters(DEFENSES[name]).items() if k != "weights"}
            for option in settings:
                if option not in accepted:
                    raise self.fail((*path, "settings", option), f"unknown option for {name}; {sorted(accepted)}")
            calibrate = spec.get("calibrate", "val" if name == "cyclic" else None)
            if calibrate is not None:
                calibrate = self.string(calibrate, (*path, "calibrate"))
            limit = spec.get("max_slices")
            out[key] = DefenseSpec(
                defense=name, settings=dict(settings), calibrate=calibrate, weights=weights,
                max_slices=None if limit is None else self.integer(limit, (*path, "max_slices"), low=1),
                models=tuple(self.names(spec.get("models", list(models)), (*path, "models"), models)),
                attacks=tuple(self.names(spec.get("attacks", list(attacks)), (*path, "attacks"), attacks)))
        return out

    def attacks(self, value: Any, models: dict) -> dict[str, AttackSpec]:
        if not isinstance(value, dict):
            raise self.fail(("attacks",), "expected a mapping of attack names to specs")
        out = {}
        for key, spec in value.items():
            path = ("attacks", key)
            if not isinstance(key, str):
                raise self.fail(path, f"invalid attack name {key!r}")
            spec = self.mapping(spec if spec is not None else {}, path, _ATTACK)
            name = self.choice(spec.get("attack", key), (*path, "attack"), ATTACKS, "attack")
            preset = ATTACKS[name]
            options = {k: self.option(spec[k], (*path, k), option)
                       for k, option in _ATTACK_OPTIONS.items() if k in spec}
            eps: tuple[float | None, ...] = (None,)
            if preset.kind == "perturbation":
                raw = spec.get("eps", [preset.eps])
                items = raw if isinstance(raw, list) else [raw]
                if not items:
                    raise self.fail((*path, "eps"), "expected at least one budget")
                eps = tuple(self.number(e, (*path, "eps", i)) for i, e in enumerate(items))
            elif "eps" in spec:
                raise self.fail((*path, "eps"), f"{name} has no budget")
            out[key] = AttackSpec(attack=name, options=options, eps=eps,
                                  models=tuple(self.names(spec.get("models", list(models)), (*path, "models"), models)))
            self._attack_options(key, out[key])
        return out

    def _attack_options(self, key: str, entry: AttackSpec) -> None:
        """Build the attack once per budget now, so a refused option fails before any work."""
        for eps in entry.eps:
            try:
                build_attack(entry.attack, **{**entry.options, "eps": eps, "seed": 0})
            except (ConfigError, TypeError, ValueError) as exc:
                raise self.fail(("attacks", key), str(exc)) from None

    def transfer(self, value: Any, models: dict, attacks: dict) -> tuple[TransferSpec, ...]:
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
                if attacks[name].eps == (None,):
                    raise self.fail((*path, "attacks"), f"{name} is a feature attack; transfer needs a perturbation")
            eps = None
            if "eps" in spec:
                items = spec["eps"] if isinstance(spec["eps"], list) else [spec["eps"]]
                eps = tuple(self.number(e, (*path, "eps", i)) for i, e in enumerate(items))
                missing = [e for e in eps for name in chosen if e not in attacks[name].eps]
                if not eps or missing:
                    raise self.fail((*path, "eps"), f"expected budgets the transferred attacks run at, "
                                    f"{sorted({e for name in chosen for e in attacks[name].eps})}; got {list(eps)}")
            out.append(TransferSpec(source=source[0], targets=tuple(t for t in targets if t != source[0]),
                                    attacks=tuple(chosen), eps=eps))
        return tuple(out)
