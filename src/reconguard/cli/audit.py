"""``reconguard audit CONFIG.yaml``: the whole robustness matrix into a database and a report.

Runs model x defense x attack x eps x seed x acceleration over the slices of a data split and
writes tidy records to OUTPUT/results.sqlite, then the report to OUTPUT/report/. Killed at any
moment and started again with the same config, it continues where it stopped; a changed config
adds new cells next to the old ones. Several audit processes started on the same config (same
machine, local disk) split the work and finish the units of one that dies. Under ``torchrun
--nproc_per_node N`` the slices are shared between the processes (gloo on CPU, NCCL on GPU) and
the records are the same as with one.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from reconguard.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard audit``."""
    from reconguard.audit import config

    parser = subparsers.add_parser(
        "audit",
        help="run a robustness audit from a YAML config (database + HTML report)",
        description=__doc__.split("\n\n", 1)[1],
        epilog="config file format:\n\n" + config.__doc__.split("\n\n", 1)[1].split("Errors name")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", type=Path, help="the audit's YAML config")
    parser.add_argument("--export", type=Path, action="append", default=[],
                        help="also export the records to this .csv or .parquet file (repeatable)")
    parser.add_argument("--no-report", dest="report", action="store_false", help="skip the HTML report")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard audit``."""
    from reconguard.audit import load_config, run_audit

    config = load_config(args.config)
    for path in args.export:
        if path.suffix not in (".csv", ".parquet"):
            raise ConfigError(f"--export {path}: give a .csv or .parquet file")
    store = run_audit(config, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    from reconguard.audit.claims import preparation_lock

    # Other audit processes on this directory finish too: one at a time writes the exports and the report.
    with preparation_lock(config.output, doing="reporting"):
        for path in args.export:
            store.export(path)
            print(f"exported records to {path}")
        cells = store.cells()
        print(f"{len(cells)} cells, {sum(c['slices'] for c in cells)} slice evaluations in {store.path}")
        if args.report:
            from reconguard.report.html import write_report

            print(f"report: {write_report(config.output)}")
    return 0

