"""``reconguard reproduce``: one command per claim of the papers reconguard implements, paper next to ours."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

# Written out (not imported from reconguard.audit.reproduce) so that `reconguard --help` stays fast.
CLAIM_HELP = {
    "cyclic": "training-free cyclic mitigation against the paper's network-input attack on the reference MoDL "
              "(Saberi et al. arXiv:2501.01908): gain under attack, clean cost, adaptive attacks, detector AUC",
    "cyclic-sweep": "the cyclic mitigation with one knob of the paper's configuration changed at a time (iterations, "
                    "ball, jitter, masks, gating, model quality): gain under attack and clean cost of each",
    "fnaf": "false-negative features on the reference U-Net, hit rates under the paper's criterion and ours "
            "(Cheng et al. MIDL 2020)",
    "fnaf-robust": "FNAF-robust fine-tuning with the paper's weighting vs a clean fine-tune: hit-rate cut and clean "
                   "cost (Cheng et al.; Caliva et al. arXiv:2011.00070)",
    "diffusion": "unsupervised diffusion reconstruction at 8x: clean quality, white-box and surrogate-transfer "
                 "attacks, artefact shape (Han et al. arXiv:2406.16983)",
    "pgd-vs-noise": "worst-case k-space perturbations vs Gaussian noise of the same norm (Antun et al. "
                    "arXiv:1902.05300, Darestani et al. arXiv:2102.06103)",
    "transfer": "black-box transfer between the reference models (Han et al.; Darestani et al.)",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard reproduce``."""
    claims = "\n".join(textwrap.fill(f"{name}: {text}", 96, subsequent_indent="    ")
                       for name, text in CLAIM_HELP.items())
    parser = subparsers.add_parser(
        "reproduce",
        help="run a paper's protocol on the reference models and compare with the paper's numbers",
        description=textwrap.fill(
            "Run each claim by its paper's protocol, as closely as the built-in data allow, on the shipped "
            "reference models, and print a table per claim: the paper's number (cited), ours with a 95 % "
            "bootstrap interval over slices, and a verdict (reproduced / direction only / not reproduced) with "
            "the departures of our setting. Tables go to OUT/<claim>/claims.md and .json, all of them to "
            "OUT/claims.md. See docs/reproduction.md for the full-size numbers."
        ),
        epilog="claims:\n" + claims,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("claims", nargs="+", metavar="CLAIM", choices=[*CLAIM_HELP, "all"],
                        help=f"one or more of: {', '.join(CLAIM_HELP)}, or all")
    parser.add_argument("--quick", action="store_true", help="CI size: a few slices and iterations, minutes")
    parser.add_argument("--data", type=Path, default=Path("data/builtin"),
                        help="built-in data set (built with the reference models' parameters if missing; "
                        "default: data/builtin)")
    parser.add_argument("--models", type=Path, default=None,
                        help="directory of reference models <name>.safetensors/.json (default: the shipped ones)")
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="output (default: runs/reproduce)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard reproduce``."""
    from reconguard.audit.reproduce import CLAIMS, ReproContext, reproduce
    from reconguard.data.builtin import build_dataset
    from reconguard.errors import ConfigError
    from reconguard.models.pretrained import WEIGHTS, pretrained_names
    from reconguard.training.reference import DATA_BUILD

    names = list(CLAIMS) if "all" in args.claims else list(dict.fromkeys(args.claims))
    models = args.models or WEIGHTS
    if args.models is None and not pretrained_names():
        raise ConfigError(f"no reference models in {WEIGHTS}; train them (python -m reconguard.training.reference "
                          "--export) or pass --models DIR")
    if not (args.data / "dataset.json").exists():
        build_dataset(args.data, **DATA_BUILD, progress=not args.quiet)
    ctx = ReproContext(data=args.data, out=args.out, models=models, quick=args.quick, seed=args.seed,
                       device=args.device, progress=not args.quiet)
    reproduce(names, ctx)
    print(f"\ntables: {args.out / 'claims.md'}")
    return 0
