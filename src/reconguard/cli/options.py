"""Argument groups shared by several sub-commands (one definition of each option)."""

from __future__ import annotations

import argparse
from typing import Any

from reconguard.errors import ConfigError


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """``--acceleration``, ``--center-fraction``, ``--mask``."""
    group = parser.add_argument_group("sampling")
    group.add_argument("--acceleration", type=float, default=4.0, help="under-sampling factor (default: 4)")
    group.add_argument(
        "--center-fraction",
        type=float,
        default=None,
        help="fully sampled central fraction of k-space (default: fastMRI's 0.32/acceleration, "
        "i.e. 0.08 at 4x and 0.04 at 8x)",
    )
    group.add_argument(
        "--mask",
        default="random",
        choices=["random", "equispaced", "variable_density"],
        help="sampling pattern (default: random, as fastMRI's RandomMaskFunc)",
    )


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    """Turn ``["chans=16", "drop_prob=0.1"]`` into ``{"chans": 16, "drop_prob": 0.1}``.

    Values are parsed as YAML scalars (ints, floats, booleans, strings).
    """
    import yaml

    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        result[key.strip()] = yaml.safe_load(value)
    return result


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device`` (checked by :func:`check_device` when the command runs)."""
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default: cpu)")


def check_device(device: str) -> None:
    """Raise a one-line error for a device string torch does not know or cannot use here."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
