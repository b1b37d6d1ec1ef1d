"""``reconguard reproduce``: the papers' claims, each run by its paper's protocol, paper next to ours.

One entry of :data:`CLAIMS` per claim; each takes a :class:`ReproContext` and returns the
:class:`ClaimRow` objects of its table (see :mod:`reconguard.audit.reproduce.common` for the row
and the verdict rule). :func:`reproduce` runs some of them and writes their tables.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

from reconguard.audit.reproduce import attacks, cyclic, cyclic_sweep, diffusion, fnaf
from reconguard.audit.reproduce.common import ClaimRow, ReproContext, format_table, write_table

CLAIMS: dict[str, Callable[[ReproContext], list[ClaimRow]]] = {
    "cyclic": cyclic.run,
    "cyclic-sweep": cyclic_sweep.run,
    "fnaf": fnaf.run,
    "fnaf-robust": fnaf.run_robust,
    "diffusion": diffusion.run,
    "pgd-vs-noise": attacks.run_pgd_vs_noise,
    "transfer": attacks.run_transfer,
}


#: The reference models each claim needs (``ctx.models / NAME``); the diffusion claim uses the
#: surrogates ``resunet-8x`` and ``irim-8x`` when present.
REQUIRES: dict[str, tuple[str, ...]] = {
    "cyclic": ("modl",), "cyclic-sweep": ("modl",), "fnaf": ("unet",), "fnaf-robust": ("unet",),
    "diffusion": ("diffusion",),
    "pgd-vs-noise": attacks.MODELS, "transfer": attacks.MODELS,
}


def not_run(name: str, missing: list[str]) -> ClaimRow:
    """The row of a claim whose reference models are missing: nothing measured, and why."""
    return ClaimRow(
        claim=f"{name}/not-run", quantity="-", paper=None, source="-", ours=math.nan, ci=(math.nan, math.nan), n=0,
        verdict="not run", setting="-",
        note=f"no reference model {', '.join(missing)}: train it with python -m reconguard.training.reference "
             f"{' '.join(missing)} --export (or pass --models DIR)")


def reproduce(names: list[str], ctx: ReproContext, *, report: Callable[[str], None] = print) -> list[ClaimRow]:
    """Run the named claims in order; write ``ctx.out/<claim>/claims.{md,json}`` for each (as it
    finishes, so an interrupted run keeps the finished tables) and ``ctx.out/claims.md`` for all.
    A claim whose reference models are missing gets one "not run" row saying which."""
    rows: list[ClaimRow] = []
    for name in names:
        missing = [m for m in REQUIRES[name] if not (Path(ctx.models) / f"{m}.json").exists()]
        found = [not_run(name, missing)] if missing else CLAIMS[name](replace(ctx, out=ctx.out / name))
        write_table(found, ctx.out / name)
        report(f"\n## {name}\n\n{format_table(found)}")
        rows += found
    write_table(rows, ctx.out)
    return rows


__all__ = ["CLAIMS", "ClaimRow", "ReproContext", "reproduce"]
