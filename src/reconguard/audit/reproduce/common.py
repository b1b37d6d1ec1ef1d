"""What every reproduced claim shares: the run context, one table row per claim, the verdict rule.

A claim runs the paper's protocol as closely as the built-in data allow and returns
:class:`ClaimRow` objects: the paper's number (with its citation: paper, table, setting), ours
with a bootstrap confidence interval over slices, the departures of our setting from the paper's,
and a :func:`verdict`:

- ``reproduced``: same direction, and the paper's value lies within ``tolerance`` of our interval;
- ``direction only``: same direction, magnitude outside the tolerance;
- ``not reproduced``: the opposite direction or no measurable effect (the interval contains 0),
  with the measured reason in ``note``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from reconguard.files import atomic_write

VERDICTS = ("reproduced", "direction only", "not reproduced", "not run")


@dataclass(frozen=True, kw_only=True)
class ReproContext:
    """Where a claim reads and writes, and how large it runs.

    Attributes:
        data: Built-in data set directory (``train/``, ``val/``, ``test/``).
        out: Output directory of this claim (tables, cached trained-for-purpose models).
        models: Directory of the reference models (``<name>.safetensors`` + ``.json``).
        quick: CI size: few slices, few iterations, minutes in all.
        seed: Seeds every random choice.
        device: ``cpu`` or ``cuda``.
        progress: Show progress bars.
    """

    data: Path
    out: Path
    models: Path
    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


@dataclass(frozen=True, kw_only=True)
class ClaimRow:
    """One line of the reproduction table.

    Attributes:
        claim: Short identifier, e.g. ``cyclic/gain-under-attack``.
        quantity: What is measured, with its unit (``PSNR gain under attack (dB)``).
        paper: The paper's number (``None`` when the paper gives only a qualitative statement).
        source: Citation of that number: paper, table or figure, setting.
        ours: Our estimate (mean over slices, or the rate).
        ci: 95 % bootstrap interval of ``ours`` over slices.
        n: Number of slices (or trials) behind ``ours``.
        verdict: One of :data:`VERDICTS`.
        setting: Our setting (model, data, acceleration, budget).
        departures: How our setting differs from the paper's.
        note: The measured reason for a verdict other than ``reproduced``.
    """

    claim: str
    quantity: str
    paper: float | None
    source: str
    ours: float
    ci: tuple[float, float]
    n: int
    verdict: str
    setting: str
    departures: str = ""
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def cache_key(ctx: ReproContext, spec: Any, models: Sequence[str]) -> str:
    """Key of a claim's per-slice cache: what the run computes (``spec``, JSON), the seed, the device
    and the SHA-256 of each named reference model's weights, so a cached slice is reused only by
    the same computation on the same weights."""
    hasher = hashlib.sha256(json.dumps([spec, ctx.seed, ctx.device]).encode())
    for name in models:
        hasher.update((Path(ctx.models) / f"{name}.safetensors").read_bytes())
    return hasher.hexdigest()[:16]


def verdict(paper: float, ci: tuple[float, float], *, tolerance: float) -> str:
    """The verdict rule of the module docstring, for a signed effect (gain, drop, rate change).

    Args:
        paper: The paper's effect.
        ci: Our interval.
        tolerance: Largest acceptable distance between the paper's value and our interval,
            in the quantity's unit.
    """
    low, high = ci
    if low <= 0 <= high or math.copysign(1, paper) != math.copysign(1, (low + high) / 2):
        return "not reproduced"
    distance = 0.0 if low <= paper <= high else min(abs(paper - low), abs(paper - high))
    return "reproduced" if distance <= tolerance else "direction only"


def write_table(rows: Sequence[ClaimRow], out: Path) -> Path:
    """Write ``out/claims.json`` (rows) and ``out/claims.md`` (the table); return the Markdown path.

    Both are written to temporary names and renamed, so a killed run leaves the previous tables.
    """
    atomic_write(out / "claims.json", json.dumps([asdict(r) for r in rows], indent=2))
    return atomic_write(out / "claims.md", format_table(rows))


def format_table(rows: Sequence[ClaimRow]) -> str:
    """The Markdown table: claim, quantity, paper (source), ours [CI] (n), verdict, setting, notes."""
    lines = ["| claim | quantity | paper | ours [95 % CI] (n) | verdict | our setting; departures | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = "-" if r.paper is None else f"{r.paper:g}"
        ours = "-" if r.verdict == "not run" else f"{r.ours:.3g} [{r.ci[0]:.3g}, {r.ci[1]:.3g}] ({r.n})"
        setting = r.setting + (f"; {r.departures}" if r.departures else "")
        cells = (r.claim, r.quantity, f"{paper} ({r.source})", ours, r.verdict, setting, r.note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
