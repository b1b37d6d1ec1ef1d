"""The results database: its schema version is checked before anything is written, foreign or
damaged content is one DataError, and a unit is never committed twice."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest

from reconguard.audit.store import APPLICATION_ID, SCHEMA_VERSION, Store, Unit
from reconguard.errors import DataError

CELL = {"cell_id": "c1", "model": "zf", "defense": "none", "attack": "pgd", "source": "zf", "eps": 0.01, "seed": 0,
        "acceleration": 4.0, "spec": {}}
# The five tables as the first release wrote them (no application id, no version).
LEGACY = """
CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT NOT NULL, finished TEXT, config TEXT NOT NULL,
    versions TEXT NOT NULL, git_revision TEXT, device TEXT NOT NULL, world_size INTEGER NOT NULL, host TEXT);
CREATE TABLE cells (cell_id TEXT PRIMARY KEY, model TEXT NOT NULL, defense TEXT NOT NULL, attack TEXT NOT NULL,
    source TEXT NOT NULL, eps REAL, seed INTEGER NOT NULL, acceleration REAL NOT NULL, spec TEXT NOT NULL);
CREATE TABLE units (cell_id TEXT NOT NULL, batch INTEGER NOT NULL, slices INTEGER NOT NULL, seconds REAL NOT NULL,
    rank INTEGER NOT NULL, run_id INTEGER NOT NULL, PRIMARY KEY (cell_id, batch));
CREATE TABLE records (cell_id TEXT NOT NULL, volume TEXT NOT NULL, slice INTEGER NOT NULL, condition TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL, PRIMARY KEY (cell_id, volume, slice, condition, metric));
CREATE TABLE panels (cell_id TEXT NOT NULL, volume TEXT NOT NULL, slice INTEGER NOT NULL, images BLOB NOT NULL,
    PRIMARY KEY (cell_id, volume, slice));
INSERT INTO cells VALUES ('c1', 'zf', 'none', 'pgd', 'zf', 0.01, 0, 4.0, '{}');
INSERT INTO records VALUES ('c1', 'v.h5', 0, 'clean', 'psnr', 30.0);
"""


def _unit(value=30.0, panels=()) -> Unit:
    return Unit("c1", 0, 1, 0.5, 0, (("v.h5", 0, "clean", "psnr", value),), panels)


def _pragma(path, name):
    with sqlite3.connect(path) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


def test_a_new_database_carries_its_application_id_and_version(tmp_path):
    store = Store(tmp_path)
    assert (_pragma(store.path, "application_id"), _pragma(store.path, "user_version")) == (APPLICATION_ID,
                                                                                         SCHEMA_VERSION)
    store.add_cells([CELL])
    assert store.commit_unit(_unit(), 1) and not store.commit_unit(_unit(31.0), 1)  # the second writes nothing
    assert [r["value"] for r in store.records()] == [30.0]


def test_a_database_from_before_versions_is_upgraded_in_place(tmp_path):
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(LEGACY)
    store = Store(tmp_path)
    assert _pragma(path, "user_version") == SCHEMA_VERSION
    assert [r["value"] for r in store.records()] == [30.0] and store.trainings() == {}


@pytest.mark.parametrize(
    "setup,message",
    [
        ("CREATE TABLE foo (x); INSERT INTO foo VALUES (1);", r"no table 'runs'; its tables: \['foo'\]"),
        (LEGACY.replace("images BLOB", "pixels BLOB"), r"table 'panels' lacks the columns \['images'\]"),
        (LEGACY + f"PRAGMA user_version = {SCHEMA_VERSION + 1};", "of a newer reconguard"),
        ("CREATE TABLE foo (x); PRAGMA application_id = 1234;", "application id 0x4d2"),
    ],
)
def test_a_foreign_database_is_refused_and_left_unchanged(tmp_path, setup, message):
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(setup)
    before = path.read_bytes()
    with pytest.raises(DataError, match=message):
        Store(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    (tmp_path / "results.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match="not a reconguard results database"):
        Store(tmp_path)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "blob",
    [b"\x00\x01garbage", _npz(clean=np.zeros((4, 4))), _npz(target=np.zeros((4, 4)), clean=np.zeros((3, 3))),
     _npz(target=np.zeros((4, 4)), max_value=np.ones(3)), _npz(target=np.array(["a", "b"]))],
    ids=["not an archive", "no target", "shapes differ", "max_value not scalar", "text"],
)
def test_a_damaged_panel_blob_is_one_data_error(tmp_path, blob):
    store = Store(tmp_path)
    store.add_cells([CELL])
    store.commit_unit(_unit(panels=(("v.h5", 0, {"target": np.ones((4, 4)), "clean": np.ones((4, 4))}),)), 1)
    assert set(store.panel("c1", "v.h5", 0)) == {"target", "clean"}
    with store.transaction() as db:
        db.execute("UPDATE panels SET images = ?", (blob,))
    with pytest.raises(DataError, match=r"panel of cell c1, v.h5 slice 0"):
        store.panel("c1", "v.h5", 0)


def test_records_and_json_that_are_not_what_the_audit_writes_are_one_data_error(tmp_path):
    store = Store(tmp_path)
    store.add_cells([CELL])
    store.commit_unit(_unit(), 1)
    with store.transaction() as db:
        db.execute("UPDATE records SET value = 'many'")
        db.execute("UPDATE cells SET spec = '{not json'")
    with pytest.raises(DataError, match=r"record psnr of cell c1, v.h5 slice 0 is not a number"):
        store.records()
    with pytest.raises(DataError, match=r"the spec of cell c1 is not JSON"):
        store.cells()


def test_trainings_round_trip(tmp_path):
    store = Store(tmp_path)
    store.record_training("small", {"model": "modl", "stopped_by_cap": True, "steps": 3})
    store.record_training("small", {"model": "modl", "stopped_by_cap": False, "steps": 9})
    assert store.trainings() == {"small": {"model": "modl", "stopped_by_cap": False, "steps": 9}}
