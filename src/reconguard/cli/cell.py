"""The loop of the one-cell commands (``attack``, ``defend``, ``transfer``): an audit cell run in order.

Each command resolves its cell(s) to :class:`~reconguard.experiment.Setup` objects and calls
:func:`run_cells`, which feeds every batch of the split to :func:`reconguard.experiment.evaluate`
(several setups of one batch share the attacks they craft: a surrogate is attacked once for all
its targets); the command only formats the records. Tables and files name columns
``<condition>_<metric>`` (:func:`reconguard.experiment.wide`). Imported by the commands on use.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from reconguard.data import Sample, SliceDataset
from reconguard.experiment import Setup, UnitResult, evaluate, wide


def split(data: str | Path, name: str, max_slices: int | None) -> tuple[SliceDataset, int]:
    """The data set ``DATA/NAME`` and how many of its slices to use (all, or the first ``max_slices``)."""
    dataset = SliceDataset(Path(data) / name)
    return dataset, len(dataset) if max_slices is None else min(max_slices, len(dataset))


def run_cells(setups: dict[Any, Setup], dataset: SliceDataset, count: int, *, batch_size: int, device: str,
              desc: str, quiet: bool) -> Iterator[tuple[Any, Sample, UnitResult]]:
    """``(key, batch, result)`` for every batch of the first ``count`` slices and every setup, with a progress bar."""
    with tqdm(total=count, desc=desc, unit="slice", disable=quiet, leave=False) as bar:
        for index, start in enumerate(range(0, count, batch_size)):
            batch = Sample.collate([dataset[i] for i in range(start, min(count, start + batch_size))]).to(device)
            crafted: dict = {}
            for key, setup in setups.items():
                yield key, batch, evaluate(setup, batch, index, crafted=crafted)
            bar.update(len(batch))


def slice_rows(batch: Sample, unit: UnitResult, context: dict[str, Any]) -> list[dict[str, Any]]:
    """One CSV row per slice: ``context``, the unit's ``<condition>_<metric>`` columns, and the
    seconds per slice of each timed condition (``<condition>_seconds``)."""
    per_slice = {f"{condition}_seconds": seconds / len(batch) for condition, seconds in unit.seconds.items()}
    return [{"volume": row.pop("volume"), "slice": row.pop("slice"), **context, **row, **per_slice}
            for row in wide(unit.records)]


def means(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean over rows of every numeric column (``None`` where it is not finite)."""
    keys = dict.fromkeys(k for row in rows for k in row)
    numeric = [k for k in keys if k != "eps" and all(isinstance(r.get(k), float) or r.get(k) is None for r in rows)]
    out: dict[str, float | None] = {}
    for key in numeric:
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        value = sum(values) / len(values) if values else math.nan
        out[key] = value if math.isfinite(value) else None
    return out
