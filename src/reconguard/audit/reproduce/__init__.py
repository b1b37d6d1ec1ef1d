"""``reconguard reproduce``: the papers' claims, each run by its paper's protocol, paper next to ours.

One entry of :data:`CLAIMS` per claim; each takes a :class:`ReproContext` and returns the
:class:`ClaimRow` objects of its table (see :mod:`reconguard.audit.reproduce.common` for the row
and the verdict rule). :func:`reproduce` runs some of them and writes their tables.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from reconguard.audit.reproduce import attacks, cyclic, diffusion, fnaf
from reconguard.audit.reproduce.common import ClaimRow, ReproContext, format_table, write_table

CLAIMS: dict[str, Callable[[ReproContext], list[ClaimRow]]] = {
    "cyclic": cyclic.run,
    "fnaf": fnaf.run,
    "fnaf-robust": fnaf.run_robust,
    "diffusion": diffusion.run,
    "pgd-vs-noise": attacks.run_pgd_vs_noise,
    "transfer": attacks.run_transfer,
}


def reproduce(names: list[str], ctx: ReproContext, *, report: Callable[[str], None] = print) -> list[ClaimRow]:
    """Run the named claims in order; write ``ctx.out/<claim>/claims.{md,json}`` for each (as it
    finishes, so an interrupted run keeps the finished tables) and ``ctx.out/claims.md`` for all."""
    rows: list[ClaimRow] = []
    for name in names:
        found = CLAIMS[name](replace(ctx, out=ctx.out / name))
        write_table(found, ctx.out / name)
        report(f"\n## {name}\n\n{format_table(found)}")
        rows += found
    write_table(rows, ctx.out)
    return rows


__all__ = ["CLAIMS", "ClaimRow", "ReproContext", "reproduce"]
