"""The emulator's SQLite database: its schema, and one connection every part of storage shares.

One connection behind one lock keeps transactions simple: the emulator's rows are tiny, and the
heavy work (decoding and fsyncing tensors) happens outside the lock. WAL with ``synchronous=FULL``
makes a committed row survive a kill -9 or a power cut, which the exactly-once story of the
client (a repeated request_id returns the job it made) relies on. A write that finds the disk
full (``SQLITE_FULL``) is rolled back whole and raised as :class:`~.space.StorageFull` (503).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from seeknetic_prep.emulator.storage.space import SQLITE_FULL, Space, is_full
from seeknetic_prep.errors import StateError

__all__ = ["SCHEMA_VERSION", "Database"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    owner TEXT NOT NULL,
    request_id TEXT NOT NULL,
    name TEXT NOT NULL,
    service TEXT NOT NULL,
    r2_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, request_id, name)
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (r2_key);
CREATE TABLE IF NOT EXISTS jobs (
    owner TEXT NOT NULL,
    request_id TEXT NOT NULL,
    task_type TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    result TEXT,
    error_message TEXT,
    PRIMARY KEY (owner, request_id)
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
CREATE TABLE IF NOT EXISTS dropped_uploads (
    owner TEXT NOT NULL,
    r2_key TEXT NOT NULL,
    dropped_at REAL NOT NULL,
    PRIMARY KEY (owner, r2_key)
);
CREATE TABLE IF NOT EXISTS stats (
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    request_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (owner, kind, request_id)
);
"""


class Database:
    """The connection, opened with the schema in place; every method is safe across threads.

    Writes (:meth:`execute`, :meth:`transaction`) raise
    :class:`~seeknetic_prep.emulator.storage.space.StorageFull` when the disk is full, with
    nothing of them kept.

    Raises:
        StateError: the file was written by a newer emulator (a higher schema version).
    """

    def __init__(self, path: Path, space: Space) -> None:
        self._space = space
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"Emulator database {path} has schema {version}: "
                f"this emulator reads schema <= {SCHEMA_VERSION}."
            )
        self._conn.executescript(_SCHEMA)
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement; committed at once unless inside :meth:`transaction`.

        Raises:
            StorageFull: the disk is full (outside a transaction: the statement had no effect).
        """
        with self._lock:
            try:
                if not self._conn.in_transaction and self._space.inject():
                    raise _injected_full()
                self._conn.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if is_full(exc):
                    raise self._space.full("database", "to the database", exc) from exc
                raise
            if not self._conn.in_transaction:
                self._space.ok("database")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def row(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            found: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return found

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock and a write transaction for the block: committed at its end, rolled
        back if it raises. Reads inside it see its own writes.

        Raises:
            StorageFull: the disk is full (the transaction was rolled back).
        """
        with self._lock:
            try:
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    yield
                    if self._space.inject():
                        raise _injected_full()
                    self._conn.execute("COMMIT")
                except BaseException:
                    # SQLite may have rolled back already (it does on SQLITE_FULL).
                    if self._conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):  # never hide the first error
                            self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if is_full(exc):
                    raise self._space.full("database", "to the database", exc) from exc
                raise
            self._space.ok("database")


def _injected_full() -> sqlite3.OperationalError:
    """What SQLite raises when a write finds the disk full (the fault knob's version of it)."""
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = SQLITE_FULL  # type: ignore[attr-defined]  # as SQLite sets it (3.11+)
    return exc
