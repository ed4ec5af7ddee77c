"""The run's state: one SQLite database at ``<out>/state.sqlite``.

A run is resumable because every step of every unit of work is committed here, in its own
transaction, only after the server acknowledged it. A unit is one (content fingerprint,
window, service) and moves::

    planned -> uploaded -> submitted -> completed
        \\          \\           \\-----> failed
         \\          \\----------------> failed
          \\--------------------------> failed

so after a crash a rerun knows exactly what the server already has: completed units are left
alone, submitted ones are polled, uploaded ones are submitted with their stored r2 keys. The
``files`` table maps each path seen to its fingerprint and whether it could be preprocessed.

The schema is versioned with ``PRAGMA user_version`` and upgraded by the ``MIGRATIONS`` list,
the way sqlite-utils records its steps. The database runs in WAL mode; only the main process
of a run writes to it (worker processes decode, they never touch the state), and one lock
serializes the writes of its threads. ``sqlite3`` errors become :class:`StateError` here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import StateError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "FileRow", "Store", "Unit", "UnitStatus"]

UnitStatus = Literal["planned", "uploaded", "submitted", "completed", "failed"]
FileStatus = Literal["planned", "ok", "failed"]

MIGRATIONS: tuple[str, ...] = (
    # 1: files, units, runs
    """
    CREATE TABLE files (
        path TEXT PRIMARY KEY,
        fingerprint TEXT,
        size INTEGER,
        duration_ms INTEGER,
        status TEXT NOT NULL,
        error TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX files_fingerprint ON files(fingerprint);
    CREATE TABLE units (
        fingerprint TEXT NOT NULL,
        window_index INTEGER NOT NULL,
        service TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL UNIQUE,
        attempt INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        frame_times_ms TEXT,
        r2_keys TEXT,
        result TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (fingerprint, window_index, service)
    );
    CREATE INDEX units_status ON units(status);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        windows_decoded INTEGER NOT NULL DEFAULT 0,
        jobs_completed INTEGER NOT NULL DEFAULT 0,
        outcome TEXT
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Unit:
    """One row of ``units``: a (fingerprint, window, service) job and how far it got."""

    fingerprint: str
    window_index: int
    service: str
    start_ms: int
    end_ms: int
    request_id: str
    attempt: int
    status: UnitStatus
    frame_times_ms: list[float] | None
    r2_keys: dict[str, str] | None
    result: dict[str, Any] | None
    error: str | None

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.fingerprint, self.window_index, self.service)


@dataclass(frozen=True)
class FileRow:
    path: str
    fingerprint: str | None
    size: int | None
    duration_ms: int | None
    status: FileStatus
    error: str | None


_UNIT_COLS = (
    "fingerprint, window_index, service, start_ms, end_ms, request_id, attempt, status, "
    "frame_times_ms, r2_keys, result, error"
)


def _unit(row: sqlite3.Row | tuple[Any, ...]) -> Unit:
    fp, idx, svc, start, end, rid, attempt, status, ftimes, keys, result, error = tuple(row)
    return Unit(
        fp, idx, svc, start, end, rid, attempt, status,
        json.loads(ftimes) if ftimes else None,
        json.loads(keys) if keys else None,
        json.loads(result) if result else None,
        error,
    )


class Store:
    """The state database of one output directory.

    Args:
        path: the SQLite file (created with its parent directory if missing).

    Raises:
        StateError: the file is not a database, or was written by a newer seeknetic-prep.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot open the state database ({exc}).") from exc

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: schema version {version} is newer than this seeknetic-prep "
                f"understands ({SCHEMA_VERSION}); upgrade seeknetic-prep or use another --out."
            )
        for number in range(version, SCHEMA_VERSION):
            self._db.execute("BEGIN IMMEDIATE")
            for statement in _split_sql(MIGRATIONS[number]):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {number + 1}")
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            if self._closed:  # a late thread after an interrupt: the step is simply redone
                return 0
            try:
                return self._db.execute(sql, params).rowcount
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: write failed ({exc}).") from exc

    def _write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params in statements:
                        self._db.execute(sql, params)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: write failed ({exc}).") from exc

    def record_file(
        self,
        path: str,
        *,
        status: FileStatus,
        fingerprint: str | None = None,
        size: int | None = None,
        duration_ms: int | None = None,
        error: str | None = None,
    ) -> None:
        self._write(
            "INSERT INTO files (path, fingerprint, size, duration_ms, status, error, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET fingerprint=excluded.fingerprint, "
            "size=excluded.size, duration_ms=excluded.duration_ms, status=excluded.status, "
            "error=excluded.error, updated_at=excluded.updated_at",
            (path, fingerprint, size, duration_ms, status, error, time.time()),
        )

    def plan_units(self, units: Sequence[tuple[str, int, str, int, int, str]]) -> None:
        """Insert ``(fingerprint, window_index, service, start_ms, end_ms, request_id)`` rows
        that do not exist yet, in one transaction; existing units keep their progress."""
        now = time.time()
        self._write_many([
            (
                "INSERT OR IGNORE INTO units (fingerprint, window_index, service, start_ms, end_ms, "
                "request_id, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'planned', ?, ?)",
                (*u, now, now),
            )
            for u in units
        ])

    def mark_uploaded(
        self, request_id: str, r2_keys: dict[str, str], frame_times_ms: Sequence[float]
    ) -> None:
        self._write(
            "UPDATE units SET status='uploaded', r2_keys=?, frame_times_ms=?, error=NULL, updated_at=? "
            "WHERE request_id=? AND status='planned'",
            (json.dumps(r2_keys), json.dumps(list(frame_times_ms)), time.time(), request_id),
        )

    def mark_submitted(self, request_id: str) -> None:
        self._write(
            "UPDATE units SET status='submitted', updated_at=? "
            "WHERE request_id=? AND status IN ('planned', 'uploaded')",
            (time.time(), request_id),
        )

    def mark_completed(self, request_id: str, result: dict[str, Any]) -> None:
        self._write(
            "UPDATE units SET status='completed', result=?, error=NULL, updated_at=? "
            "WHERE request_id=? AND status != 'completed'",
            (json.dumps(result), time.time(), request_id),
        )

    def mark_failed(self, request_id: str, error: str) -> None:
        self._write(
            "UPDATE units SET status='failed', error=?, updated_at=? "
            "WHERE request_id=? AND status != 'completed'",
            (error, time.time(), request_id),
        )

    def fail_fingerprint(self, fingerprint: str, error: str) -> None:
        """Fail every unit of a content that turned out unusable mid-decode."""
        self._write(
            "UPDATE units SET status='failed', error=?, updated_at=? "
            "WHERE fingerprint=? AND status IN ('planned', 'uploaded')",
            (error, time.time(), fingerprint),
        )

    def retry_failed(self, new_request_id: Callable[[Unit, int], str]) -> int:
        """Put failed units back to ``planned`` under a new attempt number and request id.

        A server-side job keeps its id forever, so a retried unit needs a fresh one:
        ``new_request_id(unit, attempt)`` makes it.
        """
        failed = self.units_with_status("failed")
        now = time.time()
        self._write_many([
            (
                "UPDATE units SET status='planned', attempt=?, request_id=?, error=NULL, result=NULL, "
                "r2_keys=NULL, updated_at=? WHERE fingerprint=? AND window_index=? AND service=?",
                (u.attempt + 1, new_request_id(u, u.attempt + 1), now, *u.key),
            )
            for u in failed
        ])
        return len(failed)

    def start_run(self) -> int:
        now = time.time()
        with self._lock:
            try:
                cur = self._db.execute("INSERT INTO runs (started_at, updated_at) VALUES (?, ?)", (now, now))
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: write failed ({exc}).") from exc
            return int(cur.lastrowid or 0)

    def update_run(self, run_id: int, *, windows_decoded: int, jobs_completed: int,
                   outcome: str | None = None) -> None:
        self._write(
            "UPDATE runs SET updated_at=?, windows_decoded=?, jobs_completed=?, outcome=? WHERE id=?",
            (time.time(), windows_decoded, jobs_completed, outcome, run_id),
        )

    # ------------------------------------------------------------------ reading

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return [tuple(r) for r in self._db.execute(sql, params).fetchall()]
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: read failed ({exc}).") from exc

    def units_of(self, fingerprint: str) -> list[Unit]:
        return [_unit(r) for r in self._read(
            f"SELECT {_UNIT_COLS} FROM units WHERE fingerprint=? ORDER BY window_index, service",
            (fingerprint,),
        )]

    def has_units(self, fingerprint: str) -> bool:
        """Whether a unit of this content was planned before (without loading any result)."""
        return bool(self._read("SELECT 1 FROM units WHERE fingerprint=? LIMIT 1", (fingerprint,)))

    def units_with_status(self, *statuses: UnitStatus) -> list[Unit]:
        marks = ", ".join("?" * len(statuses))
        return [_unit(r) for r in self._read(
            f"SELECT {_UNIT_COLS} FROM units WHERE status IN ({marks}) ORDER BY fingerprint, window_index",
            statuses,
        )]

    def unit(self, request_id: str) -> Unit | None:
        rows = self._read(f"SELECT {_UNIT_COLS} FROM units WHERE request_id=?", (request_id,))
        return _unit(rows[0]) if rows else None

    def files(self) -> list[FileRow]:
        return [FileRow(*r) for r in self._read(
            "SELECT path, fingerprint, size, duration_ms, status, error FROM files ORDER BY path"
        )]

    def counts(self) -> dict[str, int]:
        """Units by status."""
        return {s: n for s, n in self._read("SELECT status, COUNT(*) FROM units GROUP BY status")}

    def runs(self) -> list[tuple[int, float, float, int, int, str | None]]:
        return [
            (int(a), float(b), float(c), int(d), int(e), f)
            for a, b, c, d, e, f in self._read(
                "SELECT id, started_at, updated_at, windows_decoded, jobs_completed, outcome "
                "FROM runs ORDER BY id"
            )
        ]

    def iter_result_rows(self) -> Iterator[tuple[FileRow, Unit | None]]:
        """Every file with each of its terminal units, ordered by path, window and service.

        Streams from a cursor on its own connection, so a huge state never sits in memory and
        the writers are not blocked while ``results.jsonl`` is written.
        """
        try:
            reader = sqlite3.connect(self.path, timeout=30.0)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot open for reading ({exc}).") from exc
        try:
            cursor = reader.execute(
                "SELECT f.path, f.fingerprint, f.size, f.duration_ms, f.status, f.error, "
                + ", ".join(f"u.{c.strip()}" for c in _UNIT_COLS.split(","))
                + " FROM files f LEFT JOIN units u ON u.fingerprint = f.fingerprint AND f.status = 'ok' "
                "AND u.status IN ('completed', 'failed') ORDER BY f.path, u.window_index, u.service"
            )
            for row in cursor:
                file_row = FileRow(*row[:6])
                unit = _unit(row[6:]) if row[6] is not None else None
                yield file_row, unit
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: read failed ({exc}).") from exc
        finally:
            reader.close()


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
