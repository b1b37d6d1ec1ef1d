"""Build reconstructors by name, save and load them, import fastMRI checkpoints.

A saved model is two files side by side: ``<path>.safetensors`` (weights) and ``<path>.json``
(``{"name", "config", "reconguard_version"}``). Both are written to a temporary file first and
renamed, so an interrupted save never leaves a half-written file behind. Nothing is unpickled:
fastMRI ``.pt``/``.ckpt`` files are read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import difflib
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from reconguard import __version__
from reconguard.errors import ConfigError, DataError
from reconguard.files import atomic_paths
from reconguard.keywords import check_keywords
from reconguard.models.base import ReconstructorModule
from reconguard.models.classical import CSTV
from reconguard.models.diffusion import DiffusionReconstructor
from reconguard.models.irim import IRIM
from reconguard.models.modl import MoDL
from reconguard.models.pretrained import check_files
from reconguard.models.recurrent_varnet import RecurrentVarNet
from reconguard.models.resunet import ResUNetPP
from reconguard.models.rim import RIM
from reconguard.models.unet import UNet
from reconguard.models.varnet import VarNet
from reconguard.models.xpdnet import XPDNet
from reconguard.models.zero_filled import ZeroFilled

MODELS: dict[str, type[ReconstructorModule]] = {
    cls.name: cls for cls in (ZeroFilled, UNet, VarNet, MoDL, CSTV, RIM, IRIM, XPDNet, RecurrentVarNet, ResUNetPP,
                          DiffusionReconstructor)
}
_SUFFIXES = (".safetensors", ".json")


class UntrainedModelWarning(UserWarning):
    """A trainable model is used with random (untrained) weights."""


def unknown_model_message(name: object) -> str:
    """``unknown model 'unte' (did you mean 'unet'?); choose one of [...]``."""
    close = difflib.get_close_matches(str(name), list(MODELS), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown model {name!r}{hint}; choose one of {sorted(MODELS)}"


def warn_if_untrained(model: ReconstructorModule, where: str = "") -> None:
    """Warn (:class:`UntrainedModelWarning`) that a model with trainable weights was built, not loaded.

    Args:
        model: A freshly built model.
        where: Prefix naming where it was asked for (e.g. ``"audit.yaml:5: models.unet: "``).
    """
    if any(p.requires_grad for p in model.parameters()):
        warnings.warn(
            f"{where}{model.name} is built with random weights (untrained), so its numbers say nothing about a "
            f"trained {model.name}; give a checkpoint ('reconguard train' writes one)",
            UntrainedModelWarning,
            stacklevel=2,
        )


def build(name: str, **config: Any) -> ReconstructorModule:
    """Build a reconstructor from its registered name and keyword hyper-parameters.

    Args:
        name: A key of :data:`MODELS`.
        **config: Hyper-parameters of that model (defaults for the rest).

    Returns:
        The model, freshly initialised.

    Raises:
        ConfigError: Unknown name, unknown hyper-parameter, or an impossible value.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(unknown_model_message(name))
    cls = MODELS[name]
    check_keywords(cls, config, f"model {name!r}")
    try:
        return cls(**config)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"invalid hyper-parameters {config} for model {name!r}: {exc}") from None


def _files(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.json)`` for a path given with or without either suffix."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in _SUFFIXES else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save(model: ReconstructorModule, path: str | os.PathLike, *, half: bool = False) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` atomically.

    Args:
        model: A registered reconstructor.
        path: Destination, with or without a ``.safetensors``/``.json`` suffix.
        half: Store floating-point tensors as float16 (half the size; :func:`load` casts them
            back to the model's dtype).

    Returns:
        The path of the JSON config (pass it, or the path given here, to :func:`load`).
    """
    if MODELS.get(getattr(model, "name", None)) is not type(model):
        raise ConfigError(f"can only save registered models ({sorted(MODELS)}), got {type(model).__name__}")
    weights_file, config_file = _files(path)
    weights_file.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    meta = {"name": model.name, "config": model.config, "reconguard_version": __version__}
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    with atomic_paths([weights_file, config_file]) as (tmp_weights, tmp_config):
        save_file(tensors, str(tmp_weights))
        tmp_config.write_text(text)
    return config_file


#: Prefix of a shipped reference model's name in :func:`load` (``"pretrained:unet"``).
PRETRAINED = "pretrained:"


def load(path_or_name: str | os.PathLike, **overrides: Any) -> ReconstructorModule:
    """Load a saved model, or build a default model from a registered name.

    ``"pretrained:NAME"`` loads the shipped reference model ``NAME`` after checking its SHA-256
    (:mod:`reconguard.models.pretrained`). A ``str`` equal to a registered name (e.g. ``"cs_tv"``)
    builds that model with default hyper-parameters (with an :class:`UntrainedModelWarning` when it
    has trainable weights); pass ``Path("cs_tv")`` or ``"./cs_tv"`` to read files of that name
    instead. A bare name that is neither registered nor a file (``"unte"``) is reported with the
    valid names and the closest.

    Args:
        path_or_name: Registered name, ``pretrained:NAME``, or the path given to :func:`save`
            (suffix optional).
        **overrides: Hyper-parameters that replace the saved ones without changing the weights,
            e.g. ``steps=50`` (a diffusion model's sampler) or ``checkpointing=True``; one that
            changes a weight's shape fails with :class:`DataError`.

    Returns:
        The model in eval mode.

    Raises:
        ConfigError: A bare name that is not registered and names no file.
        DataError: A file is missing, unreadable, or does not match its config.
    """
    if isinstance(path_or_name, str) and path_or_name.startswith(PRETRAINED):
        path_or_name = check_files(path_or_name[len(PRETRAINED):])
    if isinstance(path_or_name, str) and path_or_name in MODELS:
        model = build(path_or_name, **overrides).eval()
        warn_if_untrained(model)
        return model
    if isinstance(path_or_name, str) and _looks_like_a_name(path_or_name):
        raise ConfigError(unknown_model_message(path_or_name) + ", or give a checkpoint path")

    weights_file, config_file = _files(path_or_name)
    try:
        meta = json.loads(config_file.read_text())
        name, config = meta["name"], meta["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{config_file}: not a readable reconguard model config ({exc})") from None
    try:
        model = build(name, **{**config, **overrides})
    except (ConfigError, TypeError) as exc:
        raise DataError(f"{config_file}: {exc}") from None
    try:
        state = load_file(str(weights_file))
        model.load_state_dict(state, strict=True)
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise DataError(f"{weights_file}: cannot load weights ({_first_line(exc)})") from None
    return model.eval()


def _looks_like_a_name(text: str) -> bool:
    """A bare word (no directory, no checkpoint suffix) that names no file."""
    path = Path(text)
    bare = path.name == text and path.suffix not in _SUFFIXES
    return bare and not any(p.exists() for p in (path, *_files(path)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _count(keys: list[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_fastmri_config(name: str, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Guess the hyper-parameters a fastMRI state_dict was trained with (for error messages).

    Args:
        name: ``"unet"`` or ``"varnet"``.
        state: The fastMRI state_dict (prefix already stripped).

    Returns:
        Whatever could be read off the weight shapes and key names.
    """
    keys = list(state)
    if name == "unet":
        first = state.get("down_sample_layers.0.layers.0.weight")
        guess = {"num_pool_layers": _count(keys, r"down_sample_layers\.(\d+)\.")}
        if first is not None and first.ndim == 4:
            guess.update(chans=int(first.shape[0]), in_chans=int(first.shape[1]))
        return {k: v for k, v in guess.items() if v}
    guess = {
        "num_cascades": _count(keys, r"cascades\.(\d+)\."),
        "pools": _count(keys, r"cascades\.0\.model\.unet\.down_sample_layers\.(\d+)\."),
        "sens_pools": _count(keys, r"sens_net\.norm_unet\.unet\.down_sample_layers\.(\d+)\."),
    }
    for key, prefix in (("chans", "cascades.0.model"), ("sens_chans", "sens_net.norm_unet")):
        weight = state.get(f"{prefix}.unet.down_sample_layers.0.layers.0.weight")
        if weight is not None and weight.ndim == 4:
            guess[key] = int(weight.shape[0])
    return {k: v for k, v in guess.items() if v}


def _read_fastmri(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickle protocols are not the user's concern
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(
            f"{path}: not a readable tensor checkpoint ({_first_line(exc)}); only plain state_dicts "
            "and Lightning checkpoints of tensors are accepted (nothing is unpickled)"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{path}: expected a state_dict (dict of tensors) or a Lightning checkpoint")
    prefix = f"{name}."
    # Lightning modules store the network under self.unet / self.varnet next to other buffers
    # (e.g. the SSIM loss window), so keep only the prefixed keys when there are any.
    if any(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items() if k.startswith(prefix)}
    return obj


def load_fastmri(path: str | os.PathLike, name: str = "unet", **config: Any) -> ReconstructorModule:
    """Load fastMRI ``Unet``/``VarNet`` weights into our :class:`UNet`/:class:`VarNet`.

    Accepts a plain state_dict (fastMRI's published ``*_state_dict.pt`` files) or a
    PyTorch-Lightning ``.ckpt`` whose ``"state_dict"`` keys carry a ``"unet."``/``"varnet."``
    prefix. The file is read with ``torch.load(..., weights_only=True)``.

    Args:
        path: The checkpoint file.
        name: ``"unet"`` or ``"varnet"``.
        **config: Hyper-parameters matching the checkpoint (e.g. ``chans=256`` for fastMRI's
            pretrained single-coil U-Net).

    Returns:
        The model, strictly loaded, in eval mode.

    Raises:
        DataError: The file is missing or not a tensor checkpoint.
        ConfigError: The weights do not fit the hyper-parameters; the message lists the first
            differing keys and the hyper-parameters the file appears to need.
    """
    if name not in ("unet", "varnet"):
        raise ConfigError(f"load_fastmri supports 'unet' and 'varnet', got {name!r}")
    model = build(name, **config)
    path = Path(path)
    state = _read_fastmri(path, name)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong_shape:
        groups = (("missing", missing), ("unexpected", unexpected), ("of wrong shape", wrong_shape))
        problems = [f"{len(keys)} {what} (first: {', '.join(keys[:2])})" for what, keys in groups if keys]
        guess = infer_fastmri_config(name, state)
        hint = ", ".join(f"{k}={v}" for k, v in guess.items()) or "a different architecture"
        raise ConfigError(
            f"{path}: the weights do not fit {name} with {model.config} -- keys {'; '.join(problems)}; "
            f"the file looks like {hint}, pass these to load_fastmri"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()
