"""The state database's schema, and how an older database is brought up to it.

The schema is versioned with ``PRAGMA user_version`` and upgraded by the ``MIGRATIONS`` list,
the way sqlite-utils records its steps: migration ``n`` takes a database from version ``n`` to
``n + 1`` inside one transaction. A step is SQL, or a function when rows must be rewritten.

Version 2 (issue 11) exists for scale:

- an embedding leaves ``units.result`` (about 22.7 KB of JSON) for ``units.embedding``, a
  float32 blob (4 KB); ``result`` keeps the rest (tags, model name) as small JSON. The blob is
  the row's last column, in its overflow page, so reading a unit's progress never touches it
  (a table of its own would cost ~0.7 KB more per window: its key, its index, a half-empty
  overflow page).
- ``units.finished_run`` names the run that made a unit terminal, and ``files.run_id`` the run
  that recorded a path or changed it, so the end of a run reads only what that run did.
- ``files.path`` becomes a BLOB: the path's bytes (``os.fsencode``), so a name that is not
  UTF-8 is stored exactly, and ``size``, ``mtime_ns`` and ``inode`` let a rerun skip a finished
  file with one indexed lookup.

Version 4 (issue 18.9) keeps each embedding in the state only until a results part holds it
(:mod:`seeknetic_prep.state.blobs`), a unit's upload keys only until its job completed, and
frame times as float64 bytes (96 bytes for 12, not ~196 of JSON; older rows stay JSON, read
alike): a window's state went from 5.6 KB to about 1.3 KB. ``meta`` records that an older
state's embeddings were handed over to its parts once. The switch to ``auto_vacuum=INCREMENTAL``
that lets the file shrink needs a ``VACUUM``, which cannot run inside a migration's
transaction: it follows that hand-over
(:meth:`~seeknetic_prep.state.blobs.BlobQueries.handed_over`), when the file is smallest.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "embedding_blob", "split_result"]

Migration = str | Callable[[sqlite3.Connection], None]

_V1 = """
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
"""

_V2_SQL = """
ALTER TABLE units ADD COLUMN finished_run INTEGER;
ALTER TABLE units ADD COLUMN embedding BLOB;
CREATE INDEX units_finished_run ON units(finished_run);
CREATE TABLE files_v2 (
    path BLOB PRIMARY KEY,
    fingerprint TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    inode INTEGER,
    duration_ms INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    run_id INTEGER,
    updated_at REAL NOT NULL
);
INSERT INTO files_v2 (path, fingerprint, size, duration_ms, status, error, run_id, updated_at)
    SELECT CAST(path AS BLOB), fingerprint, size, duration_ms, status, error, 0, updated_at FROM files;
DROP TABLE files;
ALTER TABLE files_v2 RENAME TO files;
CREATE INDEX files_fingerprint ON files(fingerprint);
CREATE INDEX files_run ON files(run_id);
UPDATE units SET finished_run = 0 WHERE status IN ('completed', 'failed');
"""


def embedding_blob(values: Any) -> bytes:
    """A list of floats as the little-endian float32 bytes the ``results`` table keeps."""
    return np.asarray(values, dtype="<f4").tobytes()


def split_result(result: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """An API result -> (embedding blob, JSON of whatever else it held: tags, model name)."""
    embedding = result.get("embedding")
    rest = {k: v for k, v in result.items() if k != "embedding"}
    return (
        embedding_blob(embedding) if embedding is not None else None,
        json.dumps(rest, sort_keys=True) if rest else None,
    )


def _v2(db: sqlite3.Connection) -> None:
    """Move v1's JSON embeddings into blobs; paths become bytes (v1 stored them as typed, so
    a relative v1 path stays relative: a new run records the absolute one beside it)."""
    for statement in _split_sql(_V2_SQL):
        db.execute(statement)
    rows = db.execute("SELECT request_id, result FROM units WHERE result IS NOT NULL")
    for rid, text in rows.fetchall():
        blob, rest = split_result(json.loads(text))
        db.execute("UPDATE units SET embedding=?, result=? WHERE request_id=?", (blob, rest, rid))


_V3 = """
ALTER TABLE files ADD COLUMN media TEXT;
"""
"""Version 3: what each file is (its probe: size, codecs, display size, rate, ...), as JSON,
for the results' per-file columns (:data:`seeknetic_prep.results.parts.MEDIA_COLUMNS`)."""

_V4 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
UPDATE units SET r2_keys = NULL WHERE status = 'completed';
"""
"""Version 4: small facts about the state itself (``embeddings_in_parts``: an older state's
embeddings were handed over to its parts; see :mod:`seeknetic_prep.state.blobs`); a completed
unit's upload keys go (they serve only to submit its job)."""

MIGRATIONS: tuple[Migration, ...] = (_V1, _v2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)


def apply(db: sqlite3.Connection, number: int) -> None:
    """Run migration ``number`` (0-based) on ``db``, inside the caller's transaction."""
    step = MIGRATIONS[number]
    if callable(step):
        step(db)
    else:
        for statement in _split_sql(step):
            db.execute(statement)


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
