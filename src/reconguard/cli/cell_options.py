"""The command line of the one-cell commands (``attack``, ``defend``, ``transfer``): their shared
flags, generated from :data:`reconguard.attacks.presets.OPTIONS`, and the cell they describe.

Light on purpose (argparse and the attack table only): every sub-command's parser is built on
each ``reconguard`` call, so the work is imported on use.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reconguard.attacks.presets import ATTACKS, OPTIONS, build_attack
from reconguard.cli.options import POSITIVE_INT, add_device_option, add_sampling_options, check_device, integer, number
from reconguard.errors import ConfigError


def add_cell_options(parser: argparse.ArgumentParser, *, verb: str, max_slices: int | None = None,
                     max_help: str = "") -> None:
    """``--data``, ``--split``, the attack's and the sampling's flags, ``--max-slices`` and ``--batch-size``."""
    arg = parser.add_argument
    arg("--data", required=True, help="data set directory")
    arg("--split", default="test", help=f"sub-directory to {verb} (default: test)")
    add_attack_options(parser)
    add_sampling_options(parser)
    arg("--max-slices", type=POSITIVE_INT, default=max_slices,
        help=f"{verb} only the first N slices of the split" + (f" (default: {max_slices}{max_help})"
                                                             if max_slices is not None else ""))
    arg("--batch-size", type=POSITIVE_INT, default=4, help="slices per batch (default: 4)")


def add_run_options(parser: argparse.ArgumentParser, *, out: str, overwrite: bool = True) -> None:
    """``--out`` (helped by ``out``), ``--overwrite``, ``--device`` and ``--quiet``."""
    parser.add_argument("--out", type=Path, default=None, help=out)
    if overwrite:
        parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    add_device_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_attack_options(parser: argparse.ArgumentParser) -> None:
    """``--attack`` and one flag per row of :data:`reconguard.attacks.presets.OPTIONS`."""
    parser.add_argument("--attack", default="pgd-kspace", metavar="|".join(ATTACKS),
                        help="attack (default: pgd-kspace)")
    for name, option in OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if option.kind is bool and option.off is not None:
            pair = parser.add_mutually_exclusive_group()
            pair.add_argument(flag, dest=name, action="store_true", default=True, help=f"{option.help} (default)")
            pair.add_argument(option.off[0], dest=name, action="store_false", help=option.off[1])
        elif option.kind is bool:
            parser.add_argument(flag, action="store_true", help=option.help)
        else:
            default = "per attack" if option.default is None else format(option.default, _FORMAT[option.kind])
            parser.add_argument(flag, type=_parser(option), default=option.default, metavar=option.metavar,
                                choices=option.choices, help=f"{option.help} (default: {default})")


_FORMAT = {int: "d", float: "g", str: ""}


def _parser(option: Any) -> Any:
    """The argparse ``type`` of an attack option: its kind and range."""
    if option.kind is int:
        return integer(int(option.low))
    if option.kind is float:
        return number(option.low, strict=option.strict, high=option.high)
    return option.kind


def resolve_cell(args: argparse.Namespace, *, needs: str | None = None) -> tuple[Any, Any]:
    """``(attack, mask generator)`` of the command line, after checking ``--device``.

    Args:
        args: The parsed flags of :func:`add_cell_options`.
        needs: What the command does with a perturbation (its error when the attack has no
            budget, such as FNAF); ``None``: any attack.
    """
    from reconguard.physics.masks import build_mask

    check_device(args.device)
    attack = build_attack(args.attack, **{key: getattr(args, key) for key in OPTIONS})
    if needs is not None and attack.threat is None:
        raise ConfigError(f"{args.attack} is not a perturbation attack; {needs}")
    return attack, build_mask(args.mask, acceleration=args.acceleration, center_fraction=args.center_fraction)


def model_label(spec: str) -> str:
    """Short name of a model for file names: the registered name, or the checkpoint's stem
    (prefixed with its directory for generic stems such as ``best``)."""
    from reconguard.models.registry import MODELS

    if spec in MODELS:
        return spec
    path = Path(spec)
    stem = path.with_suffix("").name if path.suffix in (".safetensors", ".json") else path.name
    return f"{path.parent.name}-{stem}" if stem in ("best", "last") and path.parent.name else stem
