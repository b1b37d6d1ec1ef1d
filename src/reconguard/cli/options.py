"""Argument groups shared by several sub-commands (one definition of each option).

Every numeric option is checked where it is parsed -- type, integer-ness, range, finiteness -- by
the converters below, so a bad value is one line naming the option (``reconguard X: error:
argument --acceleration: ...``, exit 2) before any work starts.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, NoReturn

from reconguard.errors import ConfigError


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def integer(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum`` (``1.5``, ``x`` and ``-1`` are refused)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def number(low: float, *, strict: bool = False, high: float | None = None) -> Callable[[str], float]:
    """An argparse ``type``: a finite number ``>= low`` (``> low`` when ``strict``), ``<= high``."""
    bound = f"{'>' if strict else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text}")
        return value

    parse.__name__ = f"number {bound}"
    return parse


#: Reusable converters.
POSITIVE_INT = integer(1)
NON_NEGATIVE_INT = integer(0)
POSITIVE_NUMBER = number(0.0, strict=True)
NON_NEGATIVE_NUMBER = number(0.0)


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """``--acceleration``, ``--center-fraction``, ``--mask``."""
    group = parser.add_argument_group("sampling")
    group.add_argument("--acceleration", type=number(1.0), default=4.0,
                       help="under-sampling factor, >= 1 (default: 4)")
    group.add_argument(
        "--center-fraction",
        type=number(0.0, strict=True, high=1.0),
        default=None,
        help="fully sampled central fraction of k-space, in (0, 1] (default: fastMRI's 0.32/acceleration, "
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
        try:
            result[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not a YAML scalar") from None
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


def pick(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.name}`` for the flags a command passes on unchanged."""
    return {name: getattr(args, name) for name in names}
