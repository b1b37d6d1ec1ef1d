"""``reconguard report``: the HTML report, figures and summaries of an audit output directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from reconguard.errors import ConfigError, DataError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconguard report``."""
    parser = subparsers.add_parser(
        "report",
        help="HTML report of an audit (verdicts, tables, figures, worst-slice panels)",
        description=(
            "Read OUTDIR/results.sqlite (written by 'reconguard audit') and write OUTDIR/report/: a "
            "self-contained index.html (figures embedded, no network access needed), figures/*.png and "
            "*.pdf, summary.md and summary.csv (per-cell means). An existing report is replaced."
        ),
    )
    parser.add_argument("outdir", type=Path, metavar="OUTDIR", help="audit output directory")
    parser.add_argument(
        "--screenshot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also save a screenshot of the page (needs selenium, chromium and chromedriver)",
    )
    parser.add_argument("--screenshot-height", type=int, default=900, metavar="PX",
                        help="how much of the page the screenshot shows, from the top (default: 900 px; "
                             "the verdicts and the defense effects take about 2400)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``reconguard report``."""
    from reconguard.report.html import write_report

    if not args.outdir.is_dir():
        raise DataError(f"{args.outdir}: no such directory")
    if args.screenshot is not None and args.screenshot.suffix.lower() != ".png":
        raise ConfigError(f"--screenshot {args.screenshot}: must be a .png file")
    page = write_report(args.outdir)
    print(f"report: {page}")
    if args.screenshot is not None:
        from reconguard.report.browser import screenshot

        print(f"screenshot: {screenshot(page, args.screenshot, height=args.screenshot_height)}")
    return 0
