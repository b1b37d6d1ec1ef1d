"""Plain-text tables for the terminal, CI logs and the docs (Markdown) and CSV files."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Rows with the same keys as CSV text (header from the first row)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def show(value: float | None, fmt: str) -> str:
    """Format a number, or ``n/a`` for ``None``/NaN/inf."""
    return "n/a" if value is None or not math.isfinite(value) else fmt.format(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str | None = None) -> str:
    """A Markdown table; ``align`` is one character per column (``l`` or ``r``, default: first
    column left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with columns padded to their widest cell (two spaces apart)."""
    widths = [max(len(str(line[i])) for line in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in (header, *rows))


def metrics_table(rows: Sequence[tuple[str, dict[str, float]]], *, title: str) -> str:
    """Volume-averaged metrics (mean +- standard error) of several models as Markdown."""
    body = [
        (
            name,
            f"{s['volumes']:.0f}",
            f"{s['slices']:.0f}",
            f"{s['psnr']:.2f} ± {s['psnr_sem']:.2f}",
            f"{s['ssim']:.4f} ± {s['ssim_sem']:.4f}",
            f"{s['nmse']:.4f} ± {s['nmse_sem']:.4f}",
        )
        for name, s in rows
    ]
    header = ("model", "volumes", "slices", "PSNR (dB)", "SSIM", "NMSE")
    return f"{title}\n\n" + markdown_table(header, body)
