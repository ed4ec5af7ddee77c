"""The run's state: one SQLite database at ``<out>/state.sqlite``.

A run is resumable because every step of every unit of work is recorded here. A unit is one
(content fingerprint, window, service) and moves::

    planned -> uploaded -> submitted -> completed
        \\          \\           \\-----> failed
         \\          \\----------------> failed
          \\--------------------------> failed

so after a crash a rerun knows what the server already has: completed units are left alone,
submitted ones are polled, uploaded ones are submitted with their stored r2 keys. The ``files``
table maps each absolute path seen (its bytes, so any name round-trips) to its fingerprint, its
``stat`` identity and whether it could be preprocessed. An embedding is kept as a float32 blob
in the unit's last column, which reads of progress never select, so they never load one.

**Batched writes, and why losing the last ones is safe.** The unit transitions
(``mark_uploaded``, ``mark_submitted``, ``mark_completed``, ``mark_failed``) are buffered and
committed together: every :data:`FLUSH_S` seconds by a background thread, as soon as
:data:`FLUSH_ROWS` are waiting, before any read of this ``Store``, before any other write
(``record_file``, ``plan_units``, ...), on :meth:`Store.flush` and on :meth:`Store.close`. So a
clean exit or a Ctrl-C loses nothing, and a ``kill -9`` loses at most the last
:data:`FLUSH_S` seconds of transitions. That is safe because of one rule the pipeline keeps:
**a unit planned in an earlier run is looked up on the server (``async_status``) before it is
submitted**, and submitted units are polled again. A lost ``mark_uploaded`` costs a second
upload (idempotent), a lost ``mark_submitted`` a lookup that finds the job, a lost
``mark_completed`` a poll. ``plan_units`` and ``record_file`` are committed at once, so "was this
unit planned before?" is never lost. Buffered writes are applied in call order.

The schema is versioned (``PRAGMA user_version``; see :mod:`seeknetic_prep.state.schema`). The
database runs in WAL mode; only the main process of a run writes to it, and one lock serializes
its threads. ``sqlite3`` errors become :class:`StateError` here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from seeknetic_prep.errors import InvalidArgumentError, StateError
from seeknetic_prep.state.schema import MIGRATIONS, SCHEMA_VERSION, apply, split_result

__all__ = [
    "FLUSH_ROWS", "FLUSH_S", "MIGRATIONS", "SCHEMA_VERSION", "FileRow", "Store", "Unit", "UnitStatus",
    "display_path", "existing_state", "path_bytes",
]

def existing_state(out: str | os.PathLike[str]) -> Path:
    """The state database of the run folder ``out``, for the commands that only read one.

    Raises:
        InvalidArgumentError: there is none (no run has used ``out``).
    """
    db = Path(out) / "state.sqlite"
    if not db.exists():
        raise InvalidArgumentError(f"Invalid --out {str(out)!r}: no state.sqlite there (run first).")
    return db


UnitStatus = Literal["planned", "uploaded", "submitted", "completed", "failed"]
FileStatus = Literal["planned", "ok", "failed"]
FLUSH_S = 0.25
FLUSH_ROWS = 500


def path_bytes(path: str | os.PathLike[str]) -> bytes:
    """The absolute path as bytes, exactly as the OS names the file (``os.fsencode``): a
    name that is not UTF-8 (``b'caf\\xe9.mp4'``, which Python spells ``'caf\\udce9.mp4'``) is kept."""
    return os.fsencode(os.path.abspath(os.fspath(path)))


def display_path(path: str | bytes) -> str:
    """A path for people and for UTF-8 formats: undecodable bytes shown as ``\\xe9``."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def _text(value: str | None) -> str | None:
    """Text safe to store: a message quoting a non-UTF-8 path gets it escaped, not a crash."""
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Unit:
    """One row of ``units``: a (fingerprint, window, service) job and how far it got.

    ``result`` is loaded only by :meth:`Store.unit` and :meth:`Store.result`; lists of units
    (:meth:`Store.units_of`, :meth:`Store.units_with_status`) leave it ``None``.
    """

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
    """One path seen: ``path`` is absolute, in Python's ``surrogateescape`` form (pass it to
    ``open``); :attr:`display` is for printing."""

    path: str
    fingerprint: str | None
    size: int | None
    duration_ms: int | None
    status: FileStatus
    error: str | None
    mtime_ns: int | None = None
    inode: int | None = None

    @property
    def display(self) -> str:
        return display_path(self.path)


_UNIT_COLS = (
    "fingerprint, window_index, service, start_ms, end_ms, request_id, attempt, status, "
    "frame_times_ms, r2_keys, error"
)
_FILE_COLS = "path, fingerprint, size, duration_ms, status, error, mtime_ns, inode"


def _unit(row: Sequence[Any], result: dict[str, Any] | None = None) -> Unit:
    fp, idx, svc, start, end, rid, attempt, status, ftimes, keys, error = row
    return Unit(
        fp, idx, svc, start, end, rid, attempt, status,
        json.loads(ftimes) if ftimes else None,
        json.loads(keys) if keys else None,
        result, error,
    )


def _file(row: Sequence[Any]) -> FileRow:
    return FileRow(os.fsdecode(bytes(row[0])), *row[1:])


def result_dict(embedding: bytes | None, rest: str | None) -> dict[str, Any]:
    """The inverse of :func:`~seeknetic_prep.state.schema.split_result`."""
    out: dict[str, Any] = json.loads(rest) if rest else {}
    if embedding is not None:
        out["embedding"] = np.frombuffer(embedding, dtype="<f4").astype(float).tolist()
    return out


class Store:
    """The state database of one output directory.

    Args:
        path: the SQLite file (created with its parent directory if missing).

    Raises:
        StateError: the file is not a database, or was written by a newer seeknetic-prep.

    >>> with Store("seeknetic-out/state.sqlite") as store:  # doctest: +SKIP
    ...     store.counts()
    {'completed': 26}
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._closed = False
        self._pending: list[tuple[str, Sequence[Any]]] = []
        self._run_id = 0
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
        self._wake = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True, name="store-flush")
        self._flusher.start()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: schema version {version} is newer than this seeknetic-prep "
                f"understands ({SCHEMA_VERSION}); upgrade seeknetic-prep or use another --out."
            )
        for number in range(version, SCHEMA_VERSION):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                apply(self._db, number)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Commit what is buffered and close; later writes are dropped (a late thread)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_locked()
            finally:
                self._closed = True
                self._wake.set()
                self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def _flush_loop(self) -> None:
        while not self._wake.wait(FLUSH_S):
            with contextlib.suppress(StateError):  # the pipeline's next write or read reports it
                self.flush()

    def flush(self) -> None:
        """Commit every buffered transition now, in one transaction."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._closed or not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in batch:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: write failed ({exc}).") from exc

    def _queue(self, *statements: tuple[str, Sequence[Any]]) -> None:
        with self._lock:
            if self._closed:  # a late thread after an interrupt: the step is simply redone
                return
            self._pending.extend(statements)
            if len(self._pending) >= FLUSH_ROWS:
                self._flush_locked()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._write_many([(sql, params)])

    def _write_many(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Committed now, after what is buffered (call order is kept)."""
        with self._lock:
            if self._closed:
                return
            self._pending.extend(statements)
            self._flush_locked()

    def record_file(
        self,
        path: str | os.PathLike[str],
        *,
        status: FileStatus,
        fingerprint: str | None = None,
        size: int | None = None,
        duration_ms: int | None = None,
        error: str | None = None,
        mtime_ns: int | None = None,
        inode: int | None = None,
    ) -> None:
        """Record a path (made absolute; its bytes kept exactly) and what became of it.

        Give ``size``, ``mtime_ns`` and ``inode`` from the ``os.stat`` taken *before* the file
        was fingerprinted, so :meth:`known_file` can skip it next time; a file changed since
        then no longer matches and is redone.
        """
        self._write_many([(
            "INSERT INTO files (path, fingerprint, size, mtime_ns, inode, duration_ms, status, error, "
            "run_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
            "run_id = CASE WHEN files.fingerprint IS excluded.fingerprint AND files.status = excluded.status "
            "AND files.error IS excluded.error THEN files.run_id ELSE excluded.run_id END, "
            "fingerprint=excluded.fingerprint, size=excluded.size, mtime_ns=excluded.mtime_ns, "
            "inode=excluded.inode, duration_ms=excluded.duration_ms, status=excluded.status, "
            "error=excluded.error, updated_at=excluded.updated_at",
            (path_bytes(path), fingerprint, size, mtime_ns, inode, duration_ms, status, _text(error),
             self._run_id, time.time()),
        )])

    def plan_units(self, units: Sequence[tuple[str, int, str, int, int, str]]) -> None:
        """Insert ``(fingerprint, window_index, service, start_ms, end_ms, request_id)`` rows
        that do not exist yet, in one transaction; existing units keep their progress."""
        now = time.time()
        self._write_many(
            (
                "INSERT OR IGNORE INTO units (fingerprint, window_index, service, start_ms, end_ms, "
                "request_id, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'planned', ?, ?)",
                (*u, now, now),
            )
            for u in units
        )

    def mark_uploaded(
        self, request_id: str, r2_keys: dict[str, str], frame_times_ms: Sequence[float]
    ) -> None:
        self._queue((
            "UPDATE units SET status='uploaded', r2_keys=?, frame_times_ms=?, error=NULL, updated_at=? "
            "WHERE request_id=? AND status='planned'",
            (json.dumps(r2_keys), json.dumps(list(frame_times_ms)), time.time(), request_id),
        ))

    def mark_submitted(self, request_id: str) -> None:
        self._queue((
            "UPDATE units SET status='submitted', updated_at=? "
            "WHERE request_id=? AND status IN ('planned', 'uploaded')",
            (time.time(), request_id),
        ))

    def mark_completed(self, request_id: str, result: dict[str, Any]) -> None:
        """Keep a job's result: ``embedding`` as float32, ``tags`` and the rest as JSON."""
        blob, rest = split_result(result)
        self._queue((
            "UPDATE units SET status='completed', embedding=?, result=?, error=NULL, finished_run=?, "
            "updated_at=? WHERE request_id=? AND status != 'completed'",
            (blob, rest, self._run_id, time.time(), request_id),
        ))

    def mark_failed(self, request_id: str, error: str) -> None:
        self._queue((
            "UPDATE units SET status='failed', error=?, finished_run=?, updated_at=? "
            "WHERE request_id=? AND status != 'completed'",
            (_text(error), self._run_id, time.time(), request_id),
        ))

    def fail_fingerprint(self, fingerprint: str, error: str) -> None:
        """Fail every unit of a content that turned out unusable mid-decode."""
        self._write_many([(
            "UPDATE units SET status='failed', error=?, finished_run=?, updated_at=? "
            "WHERE fingerprint=? AND status IN ('planned', 'uploaded')",
            (_text(error), self._run_id, time.time(), fingerprint),
        )])

    def retry_failed(self, new_request_id: Callable[[Unit, int], str]) -> int:
        """Put failed units back to ``planned`` under a new attempt number and request id.

        A server-side job keeps its id forever, so a retried unit needs a fresh one:
        ``new_request_id(unit, attempt)`` makes it.
        """
        failed = self.units_with_status("failed")
        now = time.time()
        self._write_many(
            (
                "UPDATE units SET status='planned', attempt=?, request_id=?, error=NULL, result=NULL, "
                "embedding=NULL, r2_keys=NULL, finished_run=NULL, updated_at=? "
                "WHERE fingerprint=? AND window_index=? AND service=?",
                (u.attempt + 1, new_request_id(u, u.attempt + 1), now, *u.key),
            )
            for u in failed
        )
        return len(failed)

    def start_run(self) -> int:
        """A new run: the units it finishes and the paths it records are tagged with its id,
        which :func:`seeknetic_prep.results.parts.append_results_part` reads back."""
        now = time.time()
        with self._lock:
            self._flush_locked()
            try:
                cur = self._db.execute("INSERT INTO runs (started_at, updated_at) VALUES (?, ?)", (now, now))
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: write failed ({exc}).") from exc
            self._run_id = int(cur.lastrowid or 0)
            return self._run_id

    def update_run(self, run_id: int, *, windows_decoded: int, jobs_completed: int,
                   outcome: str | None = None) -> None:
        self._write_many([(
            "UPDATE runs SET updated_at=?, windows_decoded=?, jobs_completed=?, outcome=? WHERE id=?",
            (time.time(), windows_decoded, jobs_completed, outcome, run_id),
        )])

    # ------------------------------------------------------------------ reading

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query, after committing what is buffered (for the results module)."""
        with self._lock:
            try:
                self._flush_locked()
                return [tuple(r) for r in self._db.execute(sql, params).fetchall()]
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: read failed ({exc}).") from exc


    def known_file(
        self,
        path: str | os.PathLike[str],
        *,
        size: int,
        mtime_ns: int,
        inode: int,
        services: Sequence[str] = ("embedding", "tagging"),
    ) -> FileRow | None:
        """The finished row of this path if the file is unchanged, else ``None``.

        One lookup by primary key: the path's row must have the same size, mtime and inode,
        status ``ok``, every service in ``services`` planned, and no unit left unfinished. A
        rerun can then skip the file without fingerprinting or probing it.
        """
        has_services = " ".join(
            "AND EXISTS (SELECT 1 FROM units u WHERE u.fingerprint = f.fingerprint AND u.service = ?)"
            for _ in services
        )
        rows = self.read(
            f"SELECT {_FILE_COLS} FROM files f WHERE path=? AND size=? AND mtime_ns=? AND inode=? "
            "AND status='ok' AND NOT EXISTS (SELECT 1 FROM units u WHERE u.fingerprint = f.fingerprint "
            f"AND u.status NOT IN ('completed', 'failed')) {has_services}",
            (path_bytes(path), size, mtime_ns, inode, *services),
        )
        return _file(rows[0]) if rows else None

    def tally(self, fingerprint: str, services: Sequence[str] = ("embedding", "tagging")) -> dict[str, int]:
        """A content's windows and its units by status, in one indexed query: what a rerun
        needs to report a file :meth:`known_file` let it skip (``units_of`` only if some failed).

        >>> store.tally(fp)  # doctest: +SKIP
        {'windows': 2, 'completed': 4}
        """
        marks = ", ".join("?" * len(services))
        rows = self.read(
            f"SELECT status, COUNT(*) FROM units WHERE fingerprint=? "
            f"AND service IN ({marks}) GROUP BY status",
            (fingerprint, *services),
        )
        windows = self.read(
            f"SELECT COUNT(DISTINCT window_index) FROM units WHERE fingerprint=? AND service IN ({marks})",
            (fingerprint, *services),
        )[0][0]
        return {"windows": int(windows), **{status: int(n) for status, n in rows}}

    def units_of(self, fingerprint: str) -> list[Unit]:
        """A content's units, without their results (cheap: no embedding is read)."""
        return [_unit(r) for r in self.read(
            f"SELECT {_UNIT_COLS} FROM units WHERE fingerprint=? ORDER BY window_index, service",
            (fingerprint,),
        )]

    def has_units(self, fingerprint: str) -> bool:
        """Whether a unit of this content was planned before (without loading any result)."""
        return bool(self.read("SELECT 1 FROM units WHERE fingerprint=? LIMIT 1", (fingerprint,)))

    def units_with_status(self, *statuses: UnitStatus) -> list[Unit]:
        marks = ", ".join("?" * len(statuses))
        return [_unit(r) for r in self.read(
            f"SELECT {_UNIT_COLS} FROM units WHERE status IN ({marks}) ORDER BY fingerprint, window_index",
            statuses,
        )]

    def unit(self, request_id: str) -> Unit | None:
        """One unit, with its result when it has one."""
        rows = self.read(f"SELECT {_UNIT_COLS} FROM units WHERE request_id=?", (request_id,))
        return _unit(rows[0], self.result(request_id)) if rows else None

    def result(self, request_id: str) -> dict[str, Any] | None:
        """A completed job's result as the API gave it (the embedding back as floats)."""
        rows = self.read("SELECT embedding, result FROM units WHERE request_id=? AND status='completed'",
                         (request_id,))
        return result_dict(*rows[0]) if rows else None

    def files(self) -> list[FileRow]:
        """Every path seen, once each, ordered by its bytes."""
        return [_file(r) for r in self.read(f"SELECT {_FILE_COLS} FROM files ORDER BY path")]

    def counts(self) -> dict[str, int]:
        """Units by status."""
        return {s: n for s, n in self.read("SELECT status, COUNT(*) FROM units GROUP BY status")}

    def runs(self) -> list[tuple[int, float, float, int, int, str | None]]:
        return [
            (int(a), float(b), float(c), int(d), int(e), f)
            for a, b, c, d, e, f in self.read(
                "SELECT id, started_at, updated_at, windows_decoded, jobs_completed, outcome "
                "FROM runs ORDER BY id"
            )
        ]
