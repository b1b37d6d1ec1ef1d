"""The results database of an audit: one SQLite file of tidy records.

Tables:

``runs``
    One row per invocation: config (JSON), package versions, git revision, device, world size.
``cells``
    One row per cell of the matrix (model x defense x attack x eps x seed x acceleration, plus the
    surrogate ``source`` of transfer attacks). ``cell_id`` is a hash of everything that determines
    the cell's numbers, so a changed config makes new cells and never invalidates old ones.
``units``
    One row per finished work unit (a fixed batch of slices of one cell) with its seconds and rank.
``records``
    The tidy results: one row per slice x cell x condition x metric (``condition`` is ``clean``,
    ``attacked``, ``noise``, ``transfer``... see :mod:`reconguard.audit.runner`).
``panels``
    Images of each slice (float16, compressed ``.npz``) for the report's image panels.
``claims``
    Units being computed right now: owner (host, pid), lease expiry (:mod:`reconguard.audit.claims`).
``trainings``
    How each ``train:`` model of the config was trained: epochs and steps done, and whether the
    ``max_minutes`` cap cut it short (``stopped_by_cap``), as JSON per model key.

A unit's records, panels and its ``units`` row are written in one ``BEGIN IMMEDIATE`` transaction
that first checks the unit is not done yet: a run killed at any moment leaves either the whole unit
or nothing, a resumed run recomputes only the units that have no ``units`` row, and two processes
that computed the same unit never write it twice. Several audit processes may share one database
(:mod:`reconguard.audit.claims`); under ``torchrun`` only rank 0 writes.

The file carries SQLite's ``application_id`` (:data:`APPLICATION_ID`) and ``user_version``
(:data:`SCHEMA_VERSION`); a database of another application, or of a newer reconguard, is refused
before anything is written to it. Files written before the version existed (version 0 with the
five original tables) are upgraded in place.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
import zipfile
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from reconguard.errors import DataError
from reconguard.files import atomic_write

DATABASE = "results.sqlite"
#: SQLite ``application_id`` of a reconguard results database ("RGAR").
APPLICATION_ID = 0x52474152
#: Layout version (``user_version``): 1 = the five original tables, 2 = + claims and trainings.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT NOT NULL, finished TEXT, config TEXT NOT NULL,
    versions TEXT NOT NULL, git_revision TEXT, device TEXT NOT NULL, world_size INTEGER NOT NULL, host TEXT);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY, model TEXT NOT NULL, defense TEXT NOT NULL, attack TEXT NOT NULL,
    source TEXT NOT NULL, eps REAL, seed INTEGER NOT NULL, acceleration REAL NOT NULL, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    cell_id TEXT NOT NULL REFERENCES cells, batch INTEGER NOT NULL, slices INTEGER NOT NULL,
    seconds REAL NOT NULL, rank INTEGER NOT NULL, run_id INTEGER NOT NULL, PRIMARY KEY (cell_id, batch));
CREATE TABLE IF NOT EXISTS records (
    cell_id TEXT NOT NULL REFERENCES cells, volume TEXT NOT NULL, slice INTEGER NOT NULL,
    condition TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
    PRIMARY KEY (cell_id, volume, slice, condition, metric));
CREATE TABLE IF NOT EXISTS panels (
    cell_id TEXT NOT NULL REFERENCES cells, volume TEXT NOT NULL, slice INTEGER NOT NULL, images BLOB NOT NULL,
    PRIMARY KEY (cell_id, volume, slice));
CREATE TABLE IF NOT EXISTS claims (
    cell_id TEXT NOT NULL, batch INTEGER NOT NULL, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    expires REAL NOT NULL, PRIMARY KEY (cell_id, batch));
CREATE TABLE IF NOT EXISTS trainings (model TEXT PRIMARY KEY, info TEXT NOT NULL);
"""
_COLUMNS = {
    "runs": {"run_id", "started", "finished", "config", "versions", "git_revision", "device", "world_size", "host"},
    "cells": {"cell_id", "model", "defense", "attack", "source", "eps", "seed", "acceleration", "spec"},
    "units": {"cell_id", "batch", "slices", "seconds", "rank", "run_id"},
    "records": {"cell_id", "volume", "slice", "condition", "metric", "value"},
    "panels": {"cell_id", "volume", "slice", "images"},
    "claims": {"cell_id", "batch", "owner", "host", "pid", "expires"},
    "trainings": {"model", "info"},
}
_VERSION_TABLES = {1: ("runs", "cells", "units", "records", "panels"), 2: tuple(_COLUMNS)}

#: Columns of :meth:`Store.records` (cells joined to records), in order.
RECORD_COLUMNS = ("cell_id", "model", "defense", "attack", "source", "eps", "seed", "acceleration",
                  "volume", "slice", "condition", "metric", "value")


@dataclass(frozen=True)
class Unit:
    """The outcome of one work unit, written atomically by :meth:`Store.commit_unit`.

    Attributes:
        cell_id: The cell.
        batch: Index of the fixed batch of slices within the cell.
        slices: Number of slices in the batch.
        seconds: Wall-clock seconds spent on it.
        rank: The process that computed it.
        records: ``(volume, slice, condition, metric, value)`` tuples.
        panels: ``(volume, slice, {name: 2-D array})`` for the report's image panels.
    """

    cell_id: str
    batch: int
    slices: int
    seconds: float
    rank: int
    records: tuple[tuple[str, int, str, str, float | None], ...]
    panels: tuple[tuple[str, int, dict[str, np.ndarray]], ...] = ()


class Store:
    """The SQLite database of one audit output directory.

    Args:
        path: The database file (suffix ``.sqlite``), or the output directory (``results.sqlite`` inside).

    Raises:
        DataError: The file exists but is not a reconguard results database.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path if path.suffix == ".sqlite" else path / DATABASE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a reconguard results database ({exc})") from None

    def _open(self) -> None:
        """Check the file is ours (before writing anything), then create or upgrade the tables."""
        with closing(sqlite3.connect(self.path, timeout=60.0, isolation_level=None)) as db:
            problem = _layout_problem(db)
            if problem is not None:
                raise DataError(f"{self.path}: not a reconguard results database ({problem}); it was left unchanged")
            if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
            db.execute("BEGIN IMMEDIATE")  # several audit processes may open a new file at once
            try:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        # WAL + synchronous=FULL: a committed unit survives a power loss; readers never block the writer.
        _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE`` (the write lock, taken at once): committed on
        exit, rolled back on an exception. Whatever is read inside is current until the commit."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------------

    def start_run(self, *, config: dict[str, Any], versions: dict[str, str], git_revision: str | None,
                  device: str, world_size: int, host: str, started: str) -> int:
        """Record an invocation; returns its ``run_id``."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (started, config, versions, git_revision, device, world_size, host) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (started, json.dumps(config, sort_keys=True), json.dumps(versions, sort_keys=True),
                 git_revision, device, world_size, host),
            )
            return int(cursor.lastrowid)

    def finish_run(self, run_id: int, finished: str) -> None:
        """Stamp the end time of an invocation that ran to completion."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET finished = ? WHERE run_id = ?", (finished, run_id))

    def add_cells(self, cells: Iterable[dict[str, Any]]) -> None:
        """Insert cells not yet known (by ``cell_id``); existing ones are left untouched."""
        rows = [(c["cell_id"], c["model"], c["defense"], c["attack"], c["source"], c["eps"], c["seed"],
                 c["acceleration"], json.dumps(c["spec"], sort_keys=True)) for c in cells]
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def commit_unit(self, unit: Unit, run_id: int) -> bool:
        """Write a unit's records, panels and completion row in one transaction (and drop its claim).

        Returns:
            ``False`` (and writes nothing) when the unit was already committed -- by this or any
            other process: the check and the writes are one ``BEGIN IMMEDIATE`` transaction.
        """
        with self.transaction() as db:
            db.execute("DELETE FROM claims WHERE cell_id = ? AND batch = ?", (unit.cell_id, unit.batch))
            done = db.execute("SELECT 1 FROM units WHERE cell_id = ? AND batch = ?", (unit.cell_id, unit.batch))
            if done.fetchone():
                return False
            db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)",
                           [(unit.cell_id, *r) for r in unit.records])
            db.executemany("INSERT OR REPLACE INTO panels VALUES (?, ?, ?, ?)",
                           [(unit.cell_id, v, s, _pack(images)) for v, s, images in unit.panels])
            db.execute("INSERT INTO units VALUES (?, ?, ?, ?, ?, ?)",
                       (unit.cell_id, unit.batch, unit.slices, unit.seconds, unit.rank, run_id))
        return True

    def record_training(self, model: str, info: dict[str, Any]) -> None:
        """Store how the config's ``train:`` model ``model`` was trained (see :meth:`trainings`)."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO trainings VALUES (?, ?)", (model, json.dumps(info, sort_keys=True)))

    # -- reading -------------------------------------------------------------------------------

    def done_units(self) -> set[tuple[str, int]]:
        """``(cell_id, batch)`` of every committed unit."""
        with closing(self._connect()) as db:
            return {(c, int(b)) for c, b in db.execute("SELECT cell_id, batch FROM units")}

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a read-only SQL query as dicts."""
        with closing(self._connect()) as db:
            cursor = db.execute(sql, parameters)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor]

    def records(self) -> list[dict[str, Any]]:
        """Every record joined to its cell (columns :data:`RECORD_COLUMNS`), in a stable order."""
        columns = ", ".join(f"c.{k}" if k not in ("volume", "slice", "condition", "metric", "value") else f"r.{k}"
                            for k in RECORD_COLUMNS)
        rows = self.query(f"SELECT {columns} FROM records r JOIN cells c USING (cell_id) "
                          "ORDER BY c.cell_id, r.volume, r.slice, r.condition, r.metric")
        for row in rows:
            value = row["value"]
            if value is not None and not isinstance(value, (int, float)):
                raise DataError(f"{self.path}: record {row['metric']} of cell {row['cell_id']}, {row['volume']} "
                                f"slice {row['slice']} is not a number ({value!r:.40})")
        return rows

    def cells(self) -> list[dict[str, Any]]:
        """Every cell with its spec decoded, its finished slices and seconds."""
        rows = self.query(
            "SELECT c.*, COALESCE(SUM(u.slices), 0) AS slices, COALESCE(SUM(u.seconds), 0.0) AS seconds "
            "FROM cells c LEFT JOIN units u USING (cell_id) GROUP BY c.cell_id ORDER BY c.cell_id")
        for row in rows:
            row["spec"] = self._json(row["spec"], f"spec of cell {row['cell_id']}")
        return rows

    def panel(self, cell_id: str, volume: str, slice_index: int) -> dict[str, np.ndarray] | None:
        """The images stored for one slice of one cell (``None`` if none were stored).

        Raises:
            DataError: The stored blob is not the image archive the runner writes (2-D float
                images including ``target``, a scalar ``max_value``).
        """
        rows = self.query("SELECT images FROM panels WHERE cell_id = ? AND volume = ? AND slice = ?",
                          (cell_id, volume, slice_index))
        if not rows:
            return None
        try:
            return _unpack(rows[0]["images"])
        except ValueError as exc:
            raise DataError(f"{self.path}: panel of cell {cell_id}, {volume} slice {slice_index}: {exc}") from None

    def trainings(self) -> dict[str, dict[str, Any]]:
        """How each ``train:`` model was trained, by config key: ``model``, ``epochs``/``max_steps``/
        ``max_minutes`` (the budget), ``epochs_done``, ``steps``, ``minutes`` and ``stopped_by_cap``
        (``True`` when the wall-clock cap ended training before its budget)."""
        rows = self.query("SELECT * FROM trainings ORDER BY model")
        return {row["model"]: self._json(row["info"], f"training of {row['model']}") for row in rows}

    def runs(self) -> list[dict[str, Any]]:
        """Run metadata, oldest first, with JSON columns decoded."""
        rows = self.query("SELECT * FROM runs ORDER BY run_id")
        for row in rows:
            for key in ("config", "versions"):
                row[key] = self._json(row[key], f"{key} of run {row['run_id']}")
        return rows

    def _json(self, text: Any, what: str) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise DataError(f"{self.path}: the {what} is not JSON") from None

    def export(self, path: str | Path) -> Path:
        """Write :meth:`records` to ``.csv`` or ``.parquet`` (needs ``pyarrow``), chosen by suffix."""
        path = Path(path)
        rows = self.records()
        if path.suffix == ".csv":
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=RECORD_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            atomic_write(path, text.getvalue())
        elif path.suffix == ".parquet":
            try:
                import pyarrow as pa  # optional dependency (extra 'parquet')
                import pyarrow.parquet as pq  # optional dependency (extra 'parquet')
            except ImportError:
                raise DataError("Parquet export needs pyarrow: pip install 'reconguard[parquet]'") from None
            table = pa.table({k: [r[k] for r in rows] for k in RECORD_COLUMNS})
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer)
            atomic_write(path, buffer.getvalue().to_pybytes())
        else:
            raise DataError(f"{path}: export to .csv or .parquet")
        return path


def _pack(images: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v, dtype=np.float16) for k, v in images.items()})
    return buffer.getvalue()


def _unpack(blob: Any) -> dict[str, np.ndarray]:
    """The images of a panel blob; ``ValueError`` if it is not what :func:`_pack` writes."""
    if not isinstance(blob, bytes):
        raise ValueError(f"expected an image archive, got {type(blob).__name__}")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            images = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise ValueError(f"not an image archive ({type(exc).__name__})") from None
    shapes = {v.shape for k, v in images.items() if k != "max_value"}
    numeric = all(np.issubdtype(v.dtype, np.number) and not np.iscomplexobj(v) for v in images.values())
    if "target" not in images or len(shapes) != 1 or len(next(iter(shapes))) != 2 or not numeric:
        raise ValueError("expected real 2-D images of one shape including 'target'")
    if "max_value" in images and images["max_value"].size != 1:
        raise ValueError("max_value must be a scalar")
    return {k: v.astype(np.float32) for k, v in images.items()}


def _layout_problem(db: sqlite3.Connection) -> str | None:
    """Why an open SQLite file is not a reconguard results database (``None``: it is, or it is empty)."""
    app, version = (db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("application_id", "user_version"))
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app not in (0, APPLICATION_ID):
        return f"application id {app:#x}"
    if version > SCHEMA_VERSION:
        return f"schema version {version} of a newer reconguard; this one reads up to {SCHEMA_VERSION}"
    if version == 0 and not tables:
        return None  # a new (or empty) file
    required = _VERSION_TABLES.get(version or 1)  # version 0 with tables: written before versions existed
    if required is None:
        return f"unknown schema version {version}"
    missing = [t for t in required if t not in tables]
    if missing:
        return f"no table {missing[0]!r}; its tables: {sorted(tables)}"
    for table in required:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if not _COLUMNS[table] <= columns:
            return f"table {table!r} lacks the columns {sorted(_COLUMNS[table] - columns)}"
    return None


def _retry_locked(statement: Any, seconds: float = 60.0) -> Any:
    """Run ``statement()`` again while another process holds the lock it needs (journal mode changes
    do not wait on SQLite's busy timeout)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def iter_metric(rows: Iterable[dict[str, Any]], **where: Any) -> Iterator[dict[str, Any]]:
    """The rows of :meth:`Store.records` whose columns equal every ``where`` value."""
    return (r for r in rows if all(r[k] == v for k, v in where.items()))
