"""Thumbnails kept when windows are decoded, so ``report`` never opens a source again.

``report`` used to decode every shown file a second time for its thumbnails (13-25 s on a folder
whose run took 21 s, and nothing at all once the sources moved). The decode workers already hold
each window's 12 frames, so they encode three small JPEGs of the frames the model saw (first,
middle, last; :data:`THUMB_FRAMES`) for a few milliseconds a window, and the run keeps them here.

They live in ``<out>/thumbs.sqlite``, not in the run state: they are a cache for people (~7 KB a
window), and the state stays small (its size per window is a target of its own). Writes are
batched and committed every :data:`_BATCH` windows and on close; a ``kill -9`` loses at most the
last batch, and ``report`` falls back to decoding the few windows it then lacks.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from seeknetic_prep.errors import StateError
from seeknetic_prep.state.opening import connect_readonly

__all__ = ["THUMB_FRAMES", "THUMB_PX", "ThumbStore", "join_jpegs", "split_jpegs"]

THUMB_FRAMES = (0, 6, 11)
"""Which of a window's 12 frames its strip shows: first, middle, last."""
THUMB_PX = 96
"""Thumbnail side: the 224 x 224 model input, scaled down."""
FILE = "thumbs.sqlite"
_BATCH = 64


def join_jpegs(jpegs: Sequence[bytes]) -> bytes:
    """Several JPEGs as one blob: each behind its 4-byte big-endian length."""
    return b"".join(len(j).to_bytes(4, "big") + j for j in jpegs)


def split_jpegs(blob: bytes) -> list[bytes]:
    """The JPEGs :func:`join_jpegs` joined (a torn blob yields what is whole)."""
    out, at = [], 0
    while at + 4 <= len(blob):
        n = int.from_bytes(blob[at:at + 4], "big")
        if at + 4 + n > len(blob):
            break
        out.append(blob[at + 4:at + 4 + n])
        at += 4 + n
    return out


class ThumbStore:
    """``<out>/thumbs.sqlite``: each window's thumbnails by (fingerprint, window index)."""

    def __init__(self, out: Path, *, readonly: bool = False) -> None:
        self.path = Path(out) / FILE
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int, bytes]] = []
        try:
            if readonly:
                self._db = connect_readonly(self.path)
            else:
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS thumbs (fingerprint TEXT NOT NULL, "
                                 "window_index INTEGER NOT NULL, jpegs BLOB NOT NULL, "
                                 "PRIMARY KEY (fingerprint, window_index))")
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot open the thumbnails ({exc}).") from exc

    def put(self, fingerprint: str, window_index: int, jpegs: bytes) -> None:
        """Keep a window's thumbnails (committed with the next batch)."""
        with self._lock:
            self._pending.append((fingerprint, window_index, jpegs))
            if len(self._pending) >= _BATCH:
                self._flush()

    def get(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], list[bytes]]:
        """The thumbnails kept for these (fingerprint, window index) keys."""
        wanted = list(dict.fromkeys(keys))
        out: dict[tuple[str, int], list[bytes]] = {}
        with self._lock:
            self._flush()
            try:
                for fp, idx in wanted:
                    row = self._db.execute("SELECT jpegs FROM thumbs WHERE fingerprint=? AND window_index=?",
                                           (fp, idx)).fetchone()
                    if row is not None:
                        out[(fp, idx)] = split_jpegs(bytes(row[0]))
            except sqlite3.Error:
                return out  # a cache: what could not be read is decoded again
        return out

    def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO thumbs VALUES (?, ?, ?)", batch)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:  # a full disk: the report decodes these windows instead
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StateError(f"{self.path}: cannot keep thumbnails ({exc}).") from exc

    def close(self) -> None:
        with self._lock:
            try:
                self._flush()
            finally:
                self._db.close()

    @staticmethod
    def exists(out: Path) -> bool:
        return (Path(out) / FILE).is_file()
