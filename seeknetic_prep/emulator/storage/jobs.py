"""Job rows: created once per request_id (a repeat returns the same job), then advanced by the
worker (:mod:`seeknetic_prep.emulator.jobs`) from ``pending`` to ``completed`` or ``failed``.

Creation reads and writes in one write transaction, so two submissions of one request_id at the
same moment make one job; a job's schedule is its ``created_at`` row, so a restart resumes it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from seeknetic_prep.emulator.problems import Problem
from seeknetic_prep.emulator.storage.db import Database

__all__ = ["JobRow", "Jobs"]


@dataclass(frozen=True)
class JobRow:
    owner: str
    request_id: str
    task_type: str
    status: str
    source: dict[str, Any]
    fingerprint: str
    created_at: float
    updated_at: float
    result: Any
    error_message: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRow:
        return cls(
            owner=row["owner"],
            request_id=row["request_id"],
            task_type=row["task_type"],
            status=row["status"],
            source=json.loads(row["source"]),
            fingerprint=row["fingerprint"],
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            result=None if row["result"] is None else json.loads(row["result"]),
            error_message=row["error_message"],
        )

    def tensor_keys(self) -> set[str]:
        """The uploaded objects a tensor job reads (its ``video_kwargs`` too: nothing else needs it)."""
        if self.source.get("mode") != "tensor":
            return set()
        return {str(k) for k in self.source.get("keys", {}).values()}


class Jobs:
    """Create, read and advance jobs; safe to share between threads."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def submit(
        self,
        *,
        owner: str,
        request_id: str,
        task_type: str,
        source: dict[str, Any],
        fingerprint: str,
        quota: int | None,
    ) -> tuple[JobRow, bool]:
        """Create the job, or return the one this request_id already names.

        Returns:
            ``(job, created)``; ``created`` is False for an idempotent repeat.

        Raises:
            Problem: 409 when the request_id names a job of another type or with other inputs;
                402 when the owner's quota of submissions is spent.
        """
        with self._db.transaction():
            existing = self.get(owner, request_id)
            if existing is not None:
                _check_repeat(existing, task_type, fingerprint)
                return existing, False
            if quota is not None:
                used = int(self._db.rows("SELECT COUNT(*) FROM jobs WHERE owner = ?", (owner,))[0][0])
                if used >= quota:
                    raise Problem(
                        402,
                        f"Quota spent: this API key may submit {quota} async jobs and has "
                        f"submitted {used}.",
                    )
            now = time.time()
            self._db.execute(
                "INSERT INTO jobs (owner, request_id, task_type, status, source, fingerprint, "
                "created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
                (owner, request_id, task_type, json.dumps(source), fingerprint, now, now),
            )
            job = self.get(owner, request_id)
        assert job is not None
        return job, True

    def get(self, owner: str, request_id: str) -> JobRow | None:
        row = self._db.row("SELECT * FROM jobs WHERE owner = ? AND request_id = ?", (owner, request_id))
        return None if row is None else JobRow.from_row(row)

    def unfinished(self) -> list[JobRow]:
        rows = self._db.rows(
            "SELECT * FROM jobs WHERE status IN ('pending', 'processing') ORDER BY created_at"
        )
        return [JobRow.from_row(r) for r in rows]

    def set_status(self, job: JobRow, status: str) -> None:
        self._db.execute(
            "UPDATE jobs SET status = ?, updated_at = ? WHERE owner = ? AND request_id = ?",
            (status, time.time(), job.owner, job.request_id),
        )

    def finish(self, job: JobRow, *, result: Any = None, error_message: str | None = None) -> None:
        status = "failed" if error_message is not None else "completed"
        self._db.execute(
            "UPDATE jobs SET status = ?, updated_at = ?, result = ?, error_message = ? "
            "WHERE owner = ? AND request_id = ?",
            (
                status,
                time.time(),
                None if result is None else json.dumps(result),
                error_message,
                job.owner,
                job.request_id,
            ),
        )


def _check_repeat(existing: JobRow, task_type: str, fingerprint: str) -> None:
    """A submission naming an existing job must be the same job: 409 otherwise."""
    request_id = existing.request_id
    if existing.task_type != task_type:
        raise Problem(
            409,
            f"request_id {request_id!r} already names a {existing.task_type} job; "
            f"a {task_type} job needs another request_id.",
        )
    if existing.fingerprint != fingerprint:
        raise Problem(
            409,
            f"request_id {request_id!r} already names a {task_type} job with other "
            "inputs; resubmit the same inputs or use another request_id.",
        )
