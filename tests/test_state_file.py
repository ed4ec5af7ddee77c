"""What may stand where the state database should be (issue 22.11): a zero-byte or foreign file
is refused with one line unless the folder is otherwise empty, never taken for a new state (a
new state over an earlier run's folder submitted every request id again)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import ROOT, stats
from _results_helpers import add_file

from seeknetic_prep.errors import StateError
from seeknetic_prep.state.store import Store


def _cli(*args: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    env["SEEKNETIC_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_a_zero_byte_state_is_refused_and_nothing_is_submitted_again(tmp_path: Path, emulator: Any) -> None:
    out = tmp_path / "out"
    args = ("run", "fixtures/demo/desert.mp4", "--base-url", emulator.base_url, "--out", str(out),
            "--workers", "0")
    first = _cli(*args, key=emulator.api_key)
    assert first.returncode == 0, first.stderr
    before = stats(emulator)["submissions"]
    mine = {rid: n for rid, n in before.items() if n}
    (out / "state.sqlite").write_bytes(b"")  # emptied: a full disk, a bad copy, `> state.sqlite`
    for name in ("state.sqlite-wal", "state.sqlite-shm"):
        (out / name).unlink(missing_ok=True)
    parts = sorted(p.name for p in (out / "parts").iterdir())
    again = _cli(*args, key=emulator.api_key)
    assert again.returncode == 1, again.stdout + again.stderr  # StateError: the state is unusable
    assert "Traceback" not in again.stderr
    errors = [line for line in again.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "is empty" in errors[0] and "state.sqlite" in errors[0], again.stderr
    assert stats(emulator)["submissions"] == before and mine  # not one id submitted again
    assert (out / "state.sqlite").stat().st_size == 0
    assert sorted(p.name for p in (out / "parts").iterdir()) == parts


def test_an_empty_file_in_an_otherwise_empty_folder_is_a_new_state(tmp_path: Path) -> None:
    db = tmp_path / "out" / "state.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"")
    (tmp_path / "out" / "settings.json").write_text("{}")  # written by the run just before
    with Store(db) as store:
        assert store.counts() == {}
        assert not store.earlier_results


@pytest.mark.parametrize("kind", ["empty", "text", "foreign"])
def test_an_empty_or_foreign_file_beside_results_is_refused(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    (out / "parts").mkdir(parents=True)
    db = out / "state.sqlite"
    if kind == "empty":
        db.write_bytes(b"")
    elif kind == "text":
        db.write_text("not a database\n")
    else:  # another program's SQLite database
        with sqlite3.connect(db) as other:
            other.execute("CREATE TABLE notes (body TEXT)")
        other.close()
    before = db.read_bytes()
    with pytest.raises(StateError) as caught:
        Store(db)
    message = str(caught.value)
    assert "\n" not in message and str(db) in message
    assert db.read_bytes() == before
    if kind == "foreign":  # even alone in its folder: never migrated into
        (out / "parts").rmdir()
        with pytest.raises(StateError, match="not a seeknetic-prep state"):
            Store(db)
        assert db.read_bytes() == before


def test_a_new_state_beside_earlier_results_says_so(tmp_path: Path) -> None:
    """The ledger looks up every unit of such a state first (``Store.earlier_results``)."""
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        assert not store.earlier_results
        run = store.start_run()
        add_file(store, "/v/a.mp4", "a" * 32, 1, dim=8)
        from seeknetic_prep.results.part_rows import append_results_part

        append_results_part(store, out, run)
    with Store(out / "state.sqlite") as store:
        assert not store.earlier_results  # an existing state: its own units say what existed
    for name in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):
        (out / name).unlink(missing_ok=True)
    with Store(out / "state.sqlite") as store:
        assert store.earlier_results
    fresh = tmp_path / "fresh"
    (fresh / "emulator").mkdir(parents=True)  # `run --local` starts it before the state
    with Store(fresh / "state.sqlite") as store:
        assert not store.earlier_results
