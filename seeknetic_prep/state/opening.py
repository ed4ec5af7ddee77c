"""Opening the state database: refusing what cannot be our state, settings, migrations.

Three ways in, one per kind of reader: :func:`open_writable` (a run, ``status``, ``results``:
the file created if missing, migrated to this version's schema, checked first so that a file
that is not our state, or an empty one beside an earlier run's results, is refused before
anything is written); :func:`open_readonly` (a reader of an out folder it cannot write: no
migration, no journal); :func:`connect_readonly` (a cache beside the state, read as it is).
``sqlite3`` errors become :class:`StateError` with the path and what to do.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from seeknetic_prep.errors import StateError
from seeknetic_prep.state.schema import SCHEMA_VERSION, apply

__all__ = ["connect_readonly", "open_readonly", "open_writable"]

_BOOKKEEPING = (".lock", "settings.json")  # written by a run before it opens its state


def _earlier_files(db: Path) -> list[str]:
    """What the folder of ``db`` holds besides the database, its journals and bookkeeping."""
    mine = {db.name, f"{db.name}-wal", f"{db.name}-shm", f"{db.name}-journal", *_BOOKKEEPING}
    try:
        return sorted(p.name for p in db.parent.iterdir() if p.name not in mine)
    except OSError:
        return []


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that reads ``path`` and can write nothing: ``mode=ro``, or, where that
    cannot open a WAL database (no ``-shm`` beside it and a folder we cannot write: then no
    writer can be there), ``immutable=1``.

    Raises:
        sqlite3.Error: it cannot be read either way.
    """
    uri = path.resolve().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, isolation_level=None,
                             timeout=30.0)
        db.execute("PRAGMA schema_version").fetchone()
        return db
    except sqlite3.OperationalError:
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False, isolation_level=None)


def open_readonly(path: Path) -> sqlite3.Connection:
    """``path`` opened for reading only. A WAL database needs its ``-shm`` file to be read
    safely while another process writes; in a folder we cannot write, with no ``-shm`` there
    (its writer closed cleanly), no one can be writing it, so it is read as immutable."""
    if not path.is_file():
        raise StateError(f"{path}: no state database there.")
    try:
        db = connect_readonly(path)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise StateError(f"{path}: cannot read the state database ({exc}).") from exc
    if version != SCHEMA_VERSION:
        db.close()
        raise StateError(
            f"{path}: schema version {version}, and this seeknetic-prep reads version {SCHEMA_VERSION}; "
            + ("upgrade seeknetic-prep." if version > SCHEMA_VERSION else
               "it cannot be upgraded in a folder you cannot write: ask its owner to run "
               "`seeknetic-prep status --out` on it once with this version."))
    return db


def open_writable(path: Path) -> tuple[sqlite3.Connection, bool]:
    """``path`` opened for a run (created with its folder if missing, WAL, migrated), and
    whether a new state starts beside an earlier run's results (see :func:`_check_new`).

    Raises:
        StateError: not our state, an empty file beside earlier results, a newer schema, or
            SQLite cannot open it.
    """
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    except sqlite3.Error as exc:
        raise StateError(f"{path}: cannot open the state database ({exc}).") from exc
    try:
        earlier_results = _check_new(db, path, existed)
        if not int(db.execute("PRAGMA user_version").fetchone()[0]):  # no table yet:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # freed pages can leave the file
        db.execute("PRAGMA journal_mode=WAL")
        # Builds with SQLITE_SECURE_DELETE zero every freed page (a released embedding's
        # overflow page: 70 of 76 ms for 1,000); FAST zeroes what costs no more I/O, and the
        # incremental vacuum that follows a release overwrites or cuts off the freed pages.
        db.execute("PRAGMA secure_delete=FAST")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        _migrate(db, path)
    except sqlite3.Error as exc:
        db.close()
        raise StateError(f"{path}: cannot open the state database ({exc}).") from exc
    except BaseException:
        db.close()
        raise
    return db, earlier_results


def _check_new(db: sqlite3.Connection, path: Path, existed: bool) -> bool:
    """Refuse what cannot be our state before anything is written to it; say whether a new
    state starts in a folder that already holds an earlier run's results.

    A file that holds no database (zero bytes: a full disk, a bad copy, ``> state.sqlite``)
    beside an earlier run's files would otherwise become a new state, and the run would
    submit every request id again: refused unless the folder is otherwise empty. Another
    program's SQLite database (tables, but no schema version of ours) is always refused.
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version:
        return False
    tables = int(db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    if tables:
        raise StateError(
            f"{path} is not a seeknetic-prep state (another program's SQLite database): "
            "use another --out, or move that file away."
        )
    others = _earlier_files(path)
    if existed and others:
        raise StateError(
            f"{path} is empty (no database in it) but its folder holds an earlier run's "
            f"files ({', '.join(others[:3])}): a new state there would submit every request "
            "again; restore the file from a backup, or delete it to start over (the next run "
            "then looks up every request on the server first)."
        )
    # `run --local` starts its emulator (<out>/emulator) before it opens the state: that
    # folder alone says nothing of earlier results, and the lookups would slow a first run.
    return any(name != "emulator" for name in others)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path}: schema version {version} is newer than this seeknetic-prep "
            f"understands ({SCHEMA_VERSION}); upgrade seeknetic-prep or use another --out."
        )
    for number in range(version, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            apply(db, number)
            db.execute(f"PRAGMA user_version = {number + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
