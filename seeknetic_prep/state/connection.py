"""The state database's connection: opening and upgrading it, batched writes, guarded reads.

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

The schema is versioned (``PRAGMA user_version``; see :mod:`seeknetic_prep.state.schema`). The
database runs in WAL mode; only the main process of a run writes to it, and one lock serializes
its threads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from seeknetic_prep.errors import StateError
from seeknetic_prep.state.schema import SCHEMA_VERSION, apply

__all__ = ["FLUSH_ROWS", "FLUSH_S", "Connection", "connect_readonly", "open_readonly"]

FLUSH_S = 0.25
FLUSH_ROWS = 500


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
        existed = self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            try:
                self.earlier_results = self._check_new(existed)
            except BaseException:
                self._db.close()
                raise
            if not int(self._db.execute("PRAGMA user_version").fetchone()[0]):  # no table yet:
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # freed pages can leave the file
            self._db.execute("PRAGMA journal_mode=WAL")
            # Builds with SQLITE_SECURE_DELETE zero every freed page (a released embedding's
            # overflow page: 70 of 76 ms for 1,000); FAST zeroes what costs no more I/O, and the
            # incremental vacuum that follows a release overwrites or cuts off the freed pages.
            self._db.execute("PRAGMA secure_delete=FAST")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot open the state database ({exc}).") from exc
        self._wake = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True, name="store-flush")
        self._flusher.start()

    def _check_new(self, existed: bool) -> bool:
        """Refuse what cannot be our state before anything is written to it; say whether a new
        state starts in a folder that already holds an earlier run's results.

        A file that holds no database (zero bytes: a full disk, a bad copy, ``> state.sqlite``)
        beside an earlier run's files would otherwise become a new state, and the run would
        submit every request id again: refused unless the folder is otherwise empty. Another
        program's SQLite database (tables, but no schema version of ours) is always refused.
        """
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version:
            return False
        tables = int(self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
        if tables:
            raise StateError(
                f"{self.path} is not a seeknetic-prep state (another program's SQLite database): "
                "use another --out, or move that file away."
            )
        others = _earlier_files(self.path)
        if existed and others:
            raise StateError(
                f"{self.path} is empty (no database in it) but its folder holds an earlier run's "
                f"files ({', '.join(others[:3])}): a new state there would submit every request "
                "again; restore the file from a backup, or delete it to start over (the next run "
                "then looks up every request on the server first)."
            )
        # `run --local` starts its emulator (<out>/emulator) before it opens the state: that
        # folder alone says nothing of earlier results, and the lookups would slow a first run.
        return any(name != "emulator" for name in others)

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
