"""util.fsio: a file is replaced whole or not at all, and the lock excludes another process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seeknetic_prep.util.fsio import LOCKING, atomic_path, atomic_write, locked

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "part.parquet"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the ne")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]


def test_a_failed_rename_removes_the_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "results.parquet"
    target.mkdir()
    (target / "in the way").write_bytes(b"x")  # os.replace cannot put a file over a folder
    with pytest.raises(OSError):
        atomic_write(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]


def test_a_missing_folder_fails_without_creating_anything(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "no" / "such.json", b"{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_fails_and_stays_empty(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            atomic_write(folder / "report.html", b"<html>")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_unsynced_writes_are_atomic_too(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "body.json", fsync=False) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".body.json.") and tmp.name.endswith(".tmp")
        tmp.write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["body.json"]


_CHILD = """
import os, sys, time
from pathlib import Path
from seeknetic_prep.util.fsio import locked, try_lock
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
print("free" if try_lock(fd) else "held", flush=True)
os.close(fd)
start = time.monotonic()
with locked(Path(sys.argv[1])):
    print(f"waited {time.monotonic() - start:.2f}", flush=True)
"""


@pytest.mark.skipif(LOCKING == "none", reason="no locking on this platform")
def test_the_lock_excludes_a_second_process_until_released(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with locked(path):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE,
                                 text=True, env=env)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"  # try_lock: refused while we hold it
        time.sleep(0.5)  # the child is now blocked in locked()
    line = child.stdout.readline()
    assert child.wait(timeout=30) == 0
    assert line.startswith("waited ") and float(line.split()[1]) >= 0.4  # blocked until released
    assert path.exists()  # the lock file is never deleted (that would let two processes lock two files)
