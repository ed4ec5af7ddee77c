"""Deleting the tensors of finished jobs (unless the emulator runs with ``keep_tensors``).

A finished job's result is in SQLite, and a window's tensors are megabytes, so they go once no
unfinished job names them. The files go first, then the rows (with a ``dropped_uploads`` marker,
so a later job naming them gets a 404 that says why); a crash in between leaves rows whose files
are gone, which the sweep at start-up (:meth:`Retention.drop_finished_tensors`) completes before
the first request is served.
"""

from __future__ import annotations

import time

from seeknetic_prep.emulator.storage.db import Database
from seeknetic_prep.emulator.storage.jobs import JobRow
from seeknetic_prep.emulator.storage.uploads import Uploads

__all__ = ["Retention"]


class Retention:
    """When uploads are deleted, and what is remembered of them after."""

    def __init__(self, db: Database, uploads: Uploads) -> None:
        self._db = db
        self._uploads = uploads

    def was_dropped(self, owner: str, key: str) -> bool:
        """Whether ``key`` was deleted after the jobs that named it finished."""
        row = self._db.row("SELECT 1 FROM dropped_uploads WHERE owner = ? AND r2_key = ?", (owner, key))
        return row is not None

    def drop_job_tensors(self, job: JobRow) -> int:
        """Delete the tensors ``job`` read, unless an unfinished job still names them.

        Call only once ``job``'s result is committed. Returns the number of objects deleted.
        Each request_id's files go under its upload lock, so an upload of the same id at
        the same moment either lands before (and is deleted with the rest) or after (and stays).
        """
        keys = job.tensor_keys()
        if not keys:
            return 0
        marks = ", ".join("?" * len(keys))
        busy = {str(r[0]) for r in self._db.rows(
            "SELECT k.value FROM jobs j, json_each(j.source, '$.keys') k WHERE j.owner = ? "
            f"AND j.status IN ('pending', 'processing') AND k.value IN ({marks})",
            (job.owner, *sorted(keys)),
        )}
        by_request: dict[str, list[str]] = {}
        for key in keys - busy:
            by_request.setdefault(key.split("/")[1], []).append(key)
        dropped = 0
        for request_id, group in sorted(by_request.items()):
            with self._uploads.locked(job.owner, request_id):
                dropped += self._drop(job.owner, request_id, group)
        return dropped

    def _drop(self, owner: str, request_id: str, keys: list[str]) -> int:
        rows = self._db.rows(
            f"SELECT name, r2_key FROM uploads WHERE owner = ? AND request_id = ? "
            f"AND r2_key IN ({', '.join('?' * len(keys))})",
            (owner, request_id, *keys),
        )
        if not rows:
            return 0
        # Files first: a crash now leaves rows the start-up sweep finishes.
        self._uploads.delete_files(owner, request_id, [row["name"] for row in rows])
        now = time.time()
        with self._db.transaction():
            for row in rows:
                self._db.execute(
                    "DELETE FROM uploads WHERE owner = ? AND request_id = ? AND name = ?",
                    (owner, request_id, row["name"]),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO dropped_uploads (owner, r2_key, dropped_at) VALUES (?, ?, ?)",
                    (owner, row["r2_key"], now),
                )
                self._uploads.forget(owner, row["r2_key"])
        return len(rows)

    def drop_finished_tensors(self) -> int:
        """The start-up sweep: drop what finished jobs left (a crash mid-drop, or a data
        directory last served with ``keep_tensors``). Returns the number of objects deleted."""
        rows = self._db.rows(
            "SELECT j.* FROM jobs j WHERE j.status IN ('completed', 'failed') AND EXISTS "
            "(SELECT 1 FROM json_each(j.source, '$.keys') k JOIN uploads u "
            "ON u.owner = j.owner AND u.r2_key = k.value)"
        )
        return sum(self.drop_job_tensors(JobRow.from_row(r)) for r in rows)
