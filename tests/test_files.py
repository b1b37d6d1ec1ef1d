"""Atomic writing: a file or directory appears whole, or the previous one stays."""

from __future__ import annotations

import stat

import pytest

from reconguard.files import atomic_directory, atomic_path, atomic_paths, atomic_write


def test_atomic_write_text_and_bytes_world_readable(tmp_path):
    text = atomic_write(tmp_path / "sub" / "a.txt", "é\r\n")
    blob = atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert text.read_bytes() == "é\r\n".encode()  # UTF-8, newlines as given
    assert blob.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(text.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.bin", "sub"]


def test_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path):
    target = atomic_write(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_paths_rename_all_or_none(tmp_path):
    first, second = tmp_path / "w.bin", tmp_path / "c.json"
    with pytest.raises(OSError), atomic_paths([first, second]) as (a, b):
        a.write_bytes(b"weights")
        raise OSError("disk full before the second file")
    assert not first.exists() and not second.exists()
    with atomic_paths([first, second]) as (a, b):
        a.write_bytes(b"weights")
        b.write_text("{}")
    assert first.read_bytes() == b"weights" and second.read_text() == "{}"


def test_atomic_directory_replaces_whole_or_keeps_the_old(tmp_path):
    out = tmp_path / "run"
    with atomic_directory(out) as staging:
        (staging / "old.txt").write_text("1")
    with pytest.raises(KeyboardInterrupt), atomic_directory(out) as staging:
        (staging / "new.txt").write_text("2")
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_directory(out) as staging:
        (staging / "new.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging or trash left
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
