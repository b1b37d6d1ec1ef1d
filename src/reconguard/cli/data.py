"""``reconguard data``: build the built-in data set and describe built data sets."""

from __future__ import annotations

import argparse
from typing import Any

from reconguard.cli.options import NON_NEGATIVE_INT, NON_NEGATIVE_NUMBER, POSITIVE_INT, integer, number, pick
from reconguard.errors import DataError

_BUILD_HELP = """\
Build the built-in MRI data set in fastMRI HDF5 format from anatomy available offline:
the MNI152 T1 template (ships inside nilearn), the Colin 27 template (Debian package
mricron-data) or a Shepp-Logan phantom with small lesions. Slices are cut in all three
orientations and grouped into volumes of BLOCK contiguous slices, split train/val/test by
position.

The k-space is SIMULATED from magnitude images (smooth random phase, optional simulated coil
maps, centred FFT, complex Gaussian noise); no raw scanner k-space is involved. Targets are
computed from the noisy fully sampled k-space, like fastMRI's.

Re-running with the same options reuses the finished build (OUT/dataset.json marks it)."""


def add_parser(subparsers: Any) -> None:
    """Register ``reconguard data`` with its ``build`` and ``info`` sub-commands."""
    parser = subparsers.add_parser(
        "data",
        help="build the built-in data set (simulated k-space) or describe one",
        description="Build the built-in data set (k-space simulated from real anatomy) or describe one.",
    )
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    _add_build(commands)
    info = commands.add_parser(
        "info",
        help="print the splits of a built data set",
        description="Print the manifest of a data set built by 'reconguard data build' as a table.",
    )
    info.add_argument("dir", metavar="DIR", help="directory given to 'reconguard data build --out'")
    info.set_defaults(func=_info)


def _add_build(commands: Any) -> None:
    build = commands.add_parser(
        "build",
        help="build the built-in data set (simulated k-space from real anatomy)",
        description=_BUILD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = build.add_argument
    arg("--out", required=True, metavar="DIR", help="output directory: train/, val/, test/, dataset.json")
    arg(
        "--source",
        default="mni152",
        choices=("mni152", "colin27", "phantom"),
        help="MNI152 template, Colin 27 template or synthetic phantom (default: %(default)s)",
    )
    arg("--size", type=integer(16), default=128, help="side of the square slices, >= 16 (default: %(default)s)")
    arg(
        "--coils",
        type=POSITIVE_INT,
        default=1,
        help="receive coils: 1 = single-coil files, more = multi-coil with maps (default: %(default)s)",
    )
    arg(
        "--noise",
        type=NON_NEGATIVE_NUMBER,
        default=0.01,
        help="k-space noise std per real/imaginary part; the image maximum is 1 (default: %(default)s)",
    )
    arg("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of all randomness; same seed, same files")
    arg("--block", type=POSITIVE_INT, default=8, help="contiguous slices per volume file (default: %(default)s)")
    arg(
        "--fractions",
        type=number(0.0, strict=True, high=1.0),
        nargs=3,
        default=(0.7, 0.1, 0.2),
        metavar=("TRAIN", "VAL", "TEST"),
        help="shares of the volumes per split, summing to 1 (default: 0.7 0.1 0.2)",
    )
    arg("--overwrite", action="store_true", help="replace a build made with other options in DIR")
    arg("--quiet", action="store_true", help="no progress bar and no summary table")
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from reconguard.data.builtin import build_dataset

    manifest = build_dataset(args.out, fractions=tuple(args.fractions), progress=not args.quiet,
                             **pick(args, "source", "size", "coils", "noise", "seed", "block", "overwrite"))
    if not args.quiet:
        print(format_manifest(manifest, args.out))
    return 0


def _info(args: argparse.Namespace) -> int:
    from reconguard.data.builtin import load_manifest

    manifest = load_manifest(args.dir)
    if manifest is None:
        raise DataError(f"{args.dir}: no dataset.json; not a complete 'reconguard data build' output")
    print(format_manifest(manifest, args.dir))
    return 0


def format_manifest(manifest: dict[str, Any], where: str) -> str:
    """Render a build manifest as a small text table (one row per split)."""
    shape = "x".join(str(n) for n in manifest.get("shape", ()))
    coils = manifest.get("coils", "?")
    rows = [("split", "volumes", "slices", "shape", "coils")]
    for split, counts in manifest["splits"].items():
        counts = counts if isinstance(counts, dict) else {}
        files, slices = counts.get("files", "?"), counts.get("slices", "?")
        rows.append((str(split), str(files), str(slices), shape, str(coils)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    version = manifest.get("reconguard_version", "?")
    lines = [f"{where}: source {manifest.get('source', '?')}, simulated k-space, reconguard {version}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
