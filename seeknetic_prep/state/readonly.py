"""The run state of an out folder, opened read-only.

``seeknetic-prep plan`` looks at what an out folder already has while a run may be writing it:
it must change nothing (no migration, no WAL switch, no lock), and it must work on a folder the
user cannot write. Its queries are typed, as the :class:`~seeknetic_prep.state.store.Store`'s
are: SQL stays in this package.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seeknetic_prep.decode.profile import Window
from seeknetic_prep.errors import StateError
from seeknetic_prep.state.opening import open_readonly
from seeknetic_prep.state.store import path_bytes

__all__ = ["StateView"]


class StateView:
    """The run state of an out folder, opened read-only: a run may be writing it, and a plan
    must change nothing (no migration, no WAL switch). Its ``sqlite3`` errors become
    :class:`StateError` here. What ``plan`` reads, and a start on reading an out folder
    one may not write (issue 18's read-only out dirs)."""

    def __init__(self, db: Path) -> None:
        self.path = db
        self._db = open_readonly(db)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return [tuple(r) for r in self._db.execute(sql, params).fetchall()]
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: read failed ({exc}).") from exc

    def known(self, path: str, st: os.stat_result) -> tuple[str, int] | None:
        """``(fingerprint, duration_ms)`` of a file recorded usable and unchanged since (the
        same absolute path, size, mtime and inode: the run's own test for skipping a file)."""
        rows = self._rows(
            "SELECT fingerprint, duration_ms FROM files WHERE path=? AND size=? AND mtime_ns=? AND inode=? "
            "AND status='ok' AND fingerprint IS NOT NULL AND duration_ms > 0",
            (path_bytes(path), st.st_size, st.st_mtime_ns, st.st_ino))
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    def units(self, fingerprint: str) -> dict[tuple[int, str], tuple[Window, str, str]]:
        """A content's units: (window index, service) -> (window, status, request id)."""
        return {(idx, svc): (Window(idx, start, end), status, rid) for idx, svc, start, end, status, rid in
                self._rows("SELECT window_index, service, start_ms, end_ms, status, request_id FROM units "
                           "WHERE fingerprint=?", (fingerprint,))}

    def counts(self) -> dict[str, int]:
        return {str(s): int(n) for s, n in self._rows("SELECT status, COUNT(*) FROM units GROUP BY status")}

    def close(self) -> None:
        self._db.close()
