"""``reconguard demo``: the main job on the built-in data, end to end, with no arguments.

The demo is an audit (:mod:`reconguard.cli.audit`) of an embedded config, written to
``WORKDIR/audit.yaml`` so it can be copied and grown. It builds the built-in data set (MNI152
anatomy, k-space simulated from it, 4x random mask) and audits reconguard's shipped reference
models -- a U-Net, MoDL, E2E-VarNet and an FNAF-robust U-Net, trained on the same data by
``python -m reconguard.training.reference`` (nothing is trained, so every machine gets the same
records) -- under PGD in k-space and on the network's input image, FNAF and a transfer attack.
The FNAF-robust U-Net is the demo's defense (robust training); the training-free defenses are
too slow for a demo under an adaptive attack (``reconguard defend``, ``reconguard reproduce
cyclic``). It prints one verdict line per model and writes the HTML report. Finished cells are
cached: a second run only redraws the report.

``--retrain`` trains the four models first, from the same recipes, into ``WORKDIR/models``
(default workdir ``runs/demo-retrain``; hours on a 2-core CPU; ``--epochs`` shortens every
recipe for a try, and the verdict table then marks those models as not the reference ones).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reconguard.errors import ConfigError

#: The shipped models the demo audits, in training order (``unet-fnaf`` starts from ``unet``).
DEMO_MODELS = ("unet", "modl", "varnet", "unet-fnaf")

CONFIG = """\
# reconguard demo: a reduced robustness audit on the built-in data.
# The images are real anatomy ({source}); k-space is simulated from them (single-coil, 4x random mask).
output: .
data: {{builtin: {source}, size: {size}, split: test, max_slices: {slices}}}
sampling: {{mask: random, accelerations: [4]}}
quality_gate_db: 1.0   # no verdict for a model less than 1 dB better than zero-filling
models:
  zero-filled: {{name: zero_filled}}
{models}
attacks:
  pgd-kspace: {{eps: [0.01, 0.05], steps: 5}}          # l2, relative to the measured k-space
  pgd-input: {{eps: [0.01], steps: 5, models: [zero-filled, unet, modl, unet-fnaf]}}  # the network's input image
  fnaf: {{candidates: 5}}
transfer:
  - {{source: unet, targets: [modl, varnet, unet-fnaf], attacks: [pgd-kspace]}}
batch_size: 4
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="the main job with no arguments: the shipped models audited on the built-in data, with an HTML report",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", type=Path, default=None,
                        help="output directory (default: runs/demo, or runs/demo-retrain with --retrain, so "
                             "records of shipped and retrained models never mix in one database)")
    parser.add_argument("--slices", type=int, default=8, help="test slices audited (default: 8)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the models from the reference recipes into WORKDIR/models instead of "
                             "using the shipped weights (hours on a 2-core CPU)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="with --retrain: train every model this many epochs instead of its recipe's")
    parser.add_argument("--source", default="mni152", choices=["mni152", "colin27", "phantom"],
                        help="with --retrain: anatomy of the built-in data (default: mni152, the shipped models')")
    parser.add_argument("--size", type=int, default=128,
                        help="with --retrain: slice size in pixels (default: 128, the shipped models')")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard demo``."""
    from reconguard.audit import Store, load_config, run_audit
    from reconguard.report.html import write_report
    from reconguard.report.verdict_tables import compact_table
    from reconguard.report.verdicts import Rule

    _check(args)
    if args.workdir is None:
        args.workdir = Path("runs/demo-retrain" if args.retrain else "runs/demo")
    start = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    notes = _retrain(args) if args.retrain else {}
    if args.retrain:
        models = "\n".join(f"  {name}: {{checkpoint: models/{name}/best}}" for name in DEMO_MODELS)
    else:
        models = "\n".join(f"  {name}: {{pretrained: {name}}}" for name in DEMO_MODELS)
    path = args.workdir / "audit.yaml"
    path.write_text(CONFIG.format(source=args.source, size=args.size, slices=args.slices, models=models))
    origin = "retrained in models/" if args.retrain else "shipped reference models"
    print(f"reconguard demo: auditing {origin} with {path}")
    config = load_config(path)
    run_audit(config, progress=not args.quiet)
    page = write_report(config.output, training_notes=notes or None)
    print()
    rule = Rule(margin_db=config.quality_gate_db, regime_db=config.regime_db)
    print(compact_table(Store(config.output).records(), rule=rule, training_notes=notes or None))
    print(f"\ndone in {(time.monotonic() - start) / 60:.1f} min")
    print(f"report: {page}")
    return 0


def _check(args: argparse.Namespace) -> None:
    if args.slices < 1:
        raise ConfigError(f"--slices must be >= 1, got {args.slices}")
    if args.epochs is not None and (not args.retrain or args.epochs < 1):
        raise ConfigError("--epochs needs --retrain and must be >= 1")
    if not args.retrain and (args.source != "mni152" or args.size != 128):
        raise ConfigError("the shipped models were trained on --source mni152 --size 128; "
                          "other data needs --retrain")
    if args.size < 16:
        raise ConfigError(f"--size must be >= 16, got {args.size}")


def _retrain(args: argparse.Namespace) -> dict[str, str]:
    """Train the demo's models by the reference recipes (resumed if interrupted); return the
    verdict notes of models trained shorter than their recipe."""
    from reconguard.data import build_dataset
    from reconguard.training.reference import RECIPES, train_reference

    data = args.workdir / "data"
    build_dataset(data, source=args.source, size=args.size, progress=not args.quiet)
    print(f"reconguard demo: training {', '.join(DEMO_MODELS)} into {args.workdir / 'models'}")
    train_reference(list(DEMO_MODELS), data=str(data), runs=str(args.workdir / "models"), epochs=args.epochs,
                    progress=not args.quiet)
    if args.epochs is None:
        return {}
    return {name: f"retrained {args.epochs} epoch(s), not the reference recipe's {RECIPES[name].epochs}"
            for name in DEMO_MODELS if RECIPES[name].epochs != args.epochs}
