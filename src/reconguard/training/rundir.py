"""A training run's directory: its configuration, its resume point, and reading them back safely.

``config.json`` pins the configuration (another one in the same directory is refused);
``state.pt`` holds the weights, the optimiser and the position in one atomic file and is read
without unpickling code; ``last`` is the same weights in the format users load. See
:mod:`reconguard.training.trainer` for the whole layout.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from reconguard.errors import ConfigError, DataError
from reconguard.files import atomic_path, atomic_write
from reconguard.models import registry

_RESTART = "start the run over with 'reconguard train --overwrite' (or delete the run directory)"


@dataclass
class RunState:
    """Where a run stands: position, elapsed time, best validation PSNR, history."""

    epoch: int = 0
    step: int = 0  # batches done in the current epoch
    elapsed: float = 0.0
    best_psnr: float = -math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by_cap: bool = False  # max_minutes ended training before epochs/max_steps were done


def prepare_run(out: Path, wanted: dict[str, Any], defaults: dict[str, Any], *, overwrite: bool,
                device: str) -> tuple[RunState, dict[str, Any] | None]:
    """The position to start from (and the saved payload when resuming); a fresh run's ``config.json``.

    Args:
        out: The run directory.
        wanted: The run's configuration (``dataclasses.asdict`` of its ``TrainConfig``).
        defaults: Every configuration field's default: a run written before a field existed holds it.
        overwrite: Start over even if ``out`` holds a run of another configuration.
        device: Where the saved tensors are loaded.
    """
    config_path = out / "config.json"
    if config_path.exists() and not overwrite:
        try:
            stored = json.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            raise DataError(f"{config_path}: not a readable training config; {_RESTART}") from None
        if not isinstance(stored, dict):
            raise DataError(f"{config_path}: not a training config (a JSON object); {_RESTART}")
        # A run written before a field existed holds that field's default.
        existing = {**defaults, **stored}
        if existing != json.loads(json.dumps(wanted)):
            raise ConfigError(
                f"{out} holds a training run with a different configuration; use another --out or --overwrite"
            )
        state_path = out / "state.pt"
        if state_path.exists():
            saved = _read_state(state_path, device)
            return RunState(**{f.name: saved[f.name] for f in fields(RunState) if f.name in saved}), saved
        return RunState(), None
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("state.pt", "history.json"):
        (out / stale).unlink(missing_ok=True)
    atomic_write(config_path, json.dumps(wanted, indent=2))
    return RunState(), None


#: What ``state.pt`` must hold, and the type of each entry.
_STATE_TYPES = {"model": dict, "optimizer": dict, "epoch": int, "step": int, "elapsed": (int, float),
                "best_psnr": (int, float), "history": list}


def _read_state(path: Path, device: str) -> dict[str, Any]:
    """``state.pt``, read without unpickling code and checked; a :class:`DataError` naming it otherwise."""
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickle protocols are not the user's concern
            warnings.simplefilter("ignore")
            saved = torch.load(path, weights_only=True, map_location=device)
    except pickle.UnpicklingError:
        reason = "corrupt, or it holds objects other than tensors; nothing was unpickled"
        raise DataError(f"{path}: not a readable training state ({reason}); {_RESTART}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError, KeyError, IndexError,
            UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable training state ({_reason(exc)}); {_RESTART}") from None
    if not isinstance(saved, dict):
        raise DataError(f"{path}: not a reconguard training state (a {type(saved).__name__}); {_RESTART}")
    for key, kind in _STATE_TYPES.items():
        if not isinstance(saved.get(key), kind) or isinstance(saved.get(key), bool):
            raise DataError(f"{path}: not a reconguard training state (no valid {key!r}); {_RESTART}")
    return saved


def restore(path: Path, saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the weights and optimiser state of ``state.pt``; a :class:`DataError` if they do not fit."""
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataError(f"{path}: its weights do not fit this run's model ({_reason(exc)}); {_RESTART}") from None


def _reason(exc: BaseException) -> str:
    """The most telling line of a torch error, shortened (torch prefixes headers like 'Error(s) in ...:')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    informative = [line for line in lines if not line.endswith(":")] or lines or [type(exc).__name__]
    text = informative[0]
    return text if len(text) <= 120 else text[:117] + "..."


def save_state(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: RunState) -> None:
    """Write ``state.pt`` (the resume point) and ``last``."""
    # state.pt alone is the resume point (weights, optimiser and position in one atomic file);
    # last.safetensors is the same weights in the format users load.
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **asdict(state)}
    with atomic_path(out / "state.pt") as tmp:
        torch.save(payload, tmp)
    registry.save(model, out / "last")
