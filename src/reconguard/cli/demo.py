"""``reconguard demo``: the main job on the built-in data, end to end, with no arguments.

The demo is an audit (:mod:`reconguard.cli.audit`) of an embedded config, written to
``WORKDIR/audit.yaml`` so it can be copied and grown. It builds the built-in data set (MNI152
anatomy, k-space simulated from it, 4x random mask) and audits reconguard's shipped reference
models -- zero-filling, a U-Net, MoDL and E2E-VarNet, trained on the same data by
``python -m reconguard.training.reference`` (nothing is trained, so every machine gets the same
records) -- under PGD in k-space and on the network's input image, FNAF and a transfer attack,
each next to random noise matched to it. Two defenses run, each paired with its undefended model
so that the report shows what it gains and costs with 95 % intervals: FNAF-robust training (the
shipped ``unet-fnaf`` weights, fine-tuned from the U-Net, as a defense of the U-Net) and the gated
cyclic defense on MoDL under the network-input attack, with its detector's alarm rates and the
adaptive (BPDA) attack through it -- the latter on the first 2 slices, with 3 mitigation steps on
1 mask, the size that fits the demo's budget (``reconguard reproduce cyclic`` runs the paper's).
It prints one verdict line per model and defense, with the evidence behind each, and writes the
HTML report. Finished cells are cached: a second run only redraws the report.

``--retrain`` trains the models first, from the same recipes, into ``WORKDIR/models`` (default
workdir ``runs/demo-retrain``; hours on a 2-core CPU; ``--epochs`` shortens every recipe for a
try, and the verdict table then marks those models as not the reference ones).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reconguard.errors import ConfigError

#: The shipped models the demo uses, in training order (``unet-fnaf`` starts from ``unet`` and is
#: audited as its defense by robust training).
DEMO_MODELS = ("unet", "modl", "varnet", "unet-fnaf")

CONFIG = """\
# reconguard demo: a reduced robustness audit on the built-in data.
# The images are real anatomy ({source}); k-space is simulated from them (single-coil, 4x random mask).
output: .
data: {{builtin: {source}, size: {size}, split: test, max_slices: {slices}}}
sampling: {{mask: random, accelerations: [4]}}
quality_gate_db: 1.0   # no verdict for a model less than 1 dB better than zero-filling
regime_db: 3.0         # when random noise matched to an attack alone costs this much, the model is "unstable"
models:
  zero-filled: {{name: zero_filled}}
{models}
defenses:
  fnaf-robust: {{weights: {fnaf_weights}, models: [unet]}}   # robust training: unet fine-tuned FNAF-robust
  cyclic:      # gated cyclic mitigation of network-input attacks; demo size: 2 slices, 3 steps, 1 mask
    defense: cyclic
    settings: {{variable: input, ball: real_imag, steps: 3, num_masks: 1, detector_masks: 1}}
    calibrate: val
    models: [modl]
    attacks: [pgd-input]
    max_slices: 2
attacks:
  pgd-kspace: {{eps: [0.01, 0.05], steps: 5}}          # l2, relative to the measured k-space
  pgd-input: {{eps: [0.01], steps: 5, models: [zero-filled, unet, modl]}}  # l-inf on the network's input image
  fnaf: {{candidates: 5}}
transfer:
  - {{source: unet, targets: [modl, varnet], attacks: [pgd-kspace], eps: [0.05]}}
batch_size: 2
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
    parser.add_argument("--slices", type=int, default=6, help="test slices audited (default: 6)")
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
    source = (lambda name: f"{{checkpoint: models/{name}/best}}") if args.retrain else \
        (lambda name: f"{{pretrained: {name}}}")
    models = "\n".join(f"  {name}: {source(name)}" for name in DEMO_MODELS if name != "unet-fnaf")
    path = args.workdir / "audit.yaml"
    path.write_text(CONFIG.format(source=args.source, size=args.size, slices=args.slices, models=models,
                                  fnaf_weights=source("unet-fnaf")))
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
