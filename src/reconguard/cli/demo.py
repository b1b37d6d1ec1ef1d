"""``reconguard demo``: the main job on the built-in data, end to end, with no arguments.

The demo is an audit (:mod:`reconguard.cli.audit`) of an embedded config, written to
``WORKDIR/audit.yaml`` so it can be copied and grown: it builds the built-in data set, trains a
small complex-output U-Net (the cyclic defense's score needs the phase), a MoDL and an
FNAF-robust U-Net (each on a time budget; cached, so a second run reuses them and every finished
cell), runs PGD in k-space and image domain, FNAF, a transfer
attack and the cyclic defense with its adaptive attack, and writes the HTML report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reconguard.errors import ConfigError

CONFIG = """\
# reconguard demo: a reduced robustness audit on the built-in data.
# The images are real anatomy ({source}); k-space is simulated from them (single-coil, 4x random mask).
output: .
data: {{builtin: {source}, size: {size}, split: test, max_slices: {slices}}}
sampling: {{mask: random, accelerations: [4]}}
models:
  zero-filled: {{name: zero_filled}}
  unet: {{train: {{model: unet, set: {{in_chans: 2}}, max_minutes: {minutes}}}}}  # complex: cyclic needs phase
  modl: {{train: {{model: modl, max_minutes: {minutes}}}}}
  unet-fnaf: {{train: {{init: unet, robust: fnaf, loss: mse, lr: 1.0e-4, max_minutes: {robust_minutes}}}}}
defenses:
  cyclic: {{settings: {{steps: 10, patience: 3}}, models: [unet], attacks: [pgd-kspace]}}
attacks:
  pgd-kspace: {{eps: [0.01, 0.05], steps: 5}}
  pgd-image: {{eps: [0.01], steps: 5, models: [unet, modl, unet-fnaf]}}
  fnaf: {{candidates: 5, models: [unet, modl, unet-fnaf]}}
transfer:
  - {{source: unet, targets: [modl, unet-fnaf], attacks: [pgd-kspace]}}
batch_size: 4
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="the main job with no arguments: a reduced audit on the built-in data, with its HTML report",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="output directory (default: runs/demo)")
    parser.add_argument("--source", default="mni152", choices=["mni152", "colin27", "phantom"],
                        help="anatomy of the built-in data (default: mni152)")
    parser.add_argument("--size", type=int, default=128, help="slice size in pixels (default: 128)")
    parser.add_argument("--slices", type=int, default=8, help="test slices audited (default: 8)")
    parser.add_argument("--max-minutes", type=float, default=2.0,
                        help="training budget of the U-Net and of MoDL; the robust U-Net gets half (default: 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard demo``."""
    from reconguard.audit import load_config, run_audit
    from reconguard.report.html import write_report

    if args.max_minutes <= 0 or args.slices < 1 or args.size < 16:
        raise ConfigError("--max-minutes must be > 0, --slices >= 1 and --size >= 16")
    start = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / "audit.yaml"
    path.write_text(CONFIG.format(source=args.source, size=args.size, slices=args.slices,
                                  minutes=f"{args.max_minutes:g}", robust_minutes=f"{args.max_minutes / 2:g}"))
    print(f"reconguard demo: auditing with {path} (models are trained on first use and cached)")
    config = load_config(path)
    run_audit(config, progress=not args.quiet)
    page = write_report(config.output)
    print()
    print((page.parent / "summary.md").read_text())
    print(f"\ndone in {(time.monotonic() - start) / 60:.1f} min")
    print(f"report: {page}")
    return 0
