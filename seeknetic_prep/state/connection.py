"""The state database's connection: batched writes and guarded reads (opened by :mod:`.opening`).

This is the only layer that holds a ``sqlite3`` connection; the query classes built on it
(:mod:`.units`, :mod:`.files`, :mod:`.runs`) hand it SQL and get rows back, and ``sqlite3``
errors become :class:`StateError` here.

**Batched writes, and why losing the last ones is safe.** The unit transitions
(``mark_uploaded``, ``mark_submitted``, ``mark_completed``, ``mark_failed``) are buffered
(:meth:`Connection._queue`) and committed together: every :data:`FLUSH_S` seconds by a
background thread, as soon as :data:`FLUSH_ROWS` are waiting, before any read, before any other
write (``record_file``, ``plan_units``, ...: :meth:`Connection._write_many`), on
:meth:`Connection.flush` and on :meth:`Connection.close`. So a clean exit or a Ctrl-C loses
nothing, and a ``kill -9`` loses at most the last :data:`FLUSH_S` seconds of transitions. That
is safe because of one rule the pipeline keeps: **a unit planned in an earlier run is looked up
on the server (``async_status``) before it is submitted**, and submitted units are polled again.
A lost ``mark_uploaded`` costs a second upload (idempotent), a lost ``mark_submitted`` a lookup
that finds the job, a lost ``mark_completed`` a poll. ``plan_units`` and ``record_file`` are
committed at once, so "was this unit planned before?" is never lost. Buffered writes are
applied in call order.

The schema is versioned (``PRAGMA user_version``; see :mod:`seeknetic_prep.state.schema`,
applied by :func:`~.opening.open_writable`). The database runs in WAL mode; only the main
process of a run writes to it, and one lock serializes its threads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from seeknetic_prep.errors import StateError
from seeknetic_prep.state.opening import open_readonly, open_writable

__all__ = ["FLUSH_ROWS", "FLUSH_S", "Connection"]

FLUSH_S = 0.25
FLUSH_ROWS = 500


class Connection:
    """An open state database: migrations applied, writes batched, reads after a flush.

    Args:
        path: the SQLite file (created with its parent directory if missing).
        readonly: read an existing state without writing anything, not even a journal: for
            the reading commands on an out folder the user cannot write (another account's, a
            read-only mount). No migration: a state of an older schema is refused with what to
            do. Any write raises :class:`StateError`.

    Attributes:
        earlier_results: the state is new (no database was there) but its folder already
            holds an earlier run's files (parts, a search index, an export): the server may
            already have this state's request ids, so each is looked up before it is submitted.

    Raises:
        StateError: the file is not a database, another program's database, an empty file
            beside an earlier run's files, or was written by a newer seeknetic-prep.
    """

    earlier_results: bool

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._closed = False
        self._pending: list[tuple[str, Sequence[Any]]] = []
        self._run_id = 0  # the run in progress (start_run), which tags what it finishes
        if readonly:
            self._db = open_readonly(self.path)
            self.earlier_results = False
            return
        self._db, self.earlier_results = open_writable(self.path)
        self._wake = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True, name="store-flush")
        self._flusher.start()

    def close(self) -> None:
        """Commit what is buffered and close; later writes are dropped (a late thread)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_locked()
            finally:
                self._closed = True
                if not self.readonly:
                    self._wake.set()
                self._db.close()

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
        if self.readonly:
            self._pending = []
            raise StateError(f"{self.path}: opened read-only, nothing can be written.")
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
        """Buffered: committed by the next flush (see the module)."""
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

    def _insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One ``INSERT`` committed now, after what is buffered; the new row's id."""
        with self._lock:
            self._flush_locked()
            if self.readonly:
                raise StateError(f"{self.path}: opened read-only, nothing can be written.")
            try:
                return int(self._db.execute(sql, params).lastrowid or 0)
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: write failed ({exc}).") from exc

    def _maintain(self, sql: str) -> None:
        """A statement run on its own, outside any transaction, after what is buffered, and
        stepped to its end: ``PRAGMA incremental_vacuum`` frees one page per step, and
        ``execute`` steps a statement without result columns once (it freed 1 page of 3 here),
        so ``executescript``, which steps each to the end; ``VACUUM`` refuses a transaction."""
        with self._lock:
            self._flush_locked()
            if self._closed:
                return
            if self.readonly:
                raise StateError(f"{self.path}: opened read-only, nothing can be written.")
            try:
                self._db.executescript(sql)
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: {sql.split()[0]} failed ({exc}).") from exc

    # ------------------------------------------------------------------ reading

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query, after committing what is buffered."""
        with self._lock:
            try:
                self._flush_locked()
                return [tuple(r) for r in self._db.execute(sql, params).fetchall()]
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: read failed ({exc}).") from exc
