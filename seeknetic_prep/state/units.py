"""Unit queries: plan a window's jobs, move them along, read where they stand.

A unit is one (content fingerprint, window, service) and moves::

    planned -> uploaded -> submitted -> completed
        \\          \\           \\-----> failed
         \\          \\----------------> failed
          \\--------------------------> failed

so after a crash a rerun knows what the server already has: completed units are left alone,
submitted ones are polled, uploaded ones are submitted with their stored r2 keys. The
transitions are buffered (see :mod:`.connection` for why losing the last ones is safe), and
each only moves forward: a completed unit stays completed whatever a late thread says.

A result is split on the way in (:func:`~seeknetic_prep.state.schema.split_result`): the
embedding as a float32 blob in the row's last column, which reads of progress never select (so
they never load one), the rest as small JSON. The embedding leaves the state once a results part
holds it (:mod:`.blobs`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from seeknetic_prep.state.connection import Connection
from seeknetic_prep.state.rows import Unit, UnitStatus, result_dict, safe_text, times_blob
from seeknetic_prep.state.schema import split_result

__all__ = ["UnitQueries"]


class UnitQueries(Connection):
    """The ``units`` table: planning, the transitions, and reads of progress."""

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
            (json.dumps(r2_keys), times_blob(frame_times_ms), time.time(), request_id),
        ))

    def mark_submitted(self, request_id: str) -> None:
        self._queue((
            "UPDATE units SET status='submitted', updated_at=? "
            "WHERE request_id=? AND status IN ('planned', 'uploaded')",
            (time.time(), request_id),
        ))

    def mark_completed(self, request_id: str, result: dict[str, Any]) -> None:
        """Keep a job's result: ``embedding`` as float32, ``tags`` and the rest as JSON. The
        uploaded tensors' keys go: they serve only to submit the job (~310 bytes a window)."""
        blob, rest = split_result(result)
        self._queue((
            "UPDATE units SET status='completed', embedding=?, result=?, error=NULL, r2_keys=NULL, "
            "finished_run=?, updated_at=? WHERE request_id=? AND status != 'completed'",
            (blob, rest, self._run_id, time.time(), request_id),
        ))

    def mark_failed(self, request_id: str, error: str) -> None:
        self._queue((
            "UPDATE units SET status='failed', error=?, finished_run=?, updated_at=? "
            "WHERE request_id=? AND status != 'completed'",
            (safe_text(error), self._run_id, time.time(), request_id),
        ))

    def fail_fingerprint(self, fingerprint: str, error: str) -> None:
        """Fail every unit of a content that turned out unusable mid-decode."""
        self._write_many([(
            "UPDATE units SET status='failed', error=?, finished_run=?, updated_at=? "
            "WHERE fingerprint=? AND status IN ('planned', 'uploaded')",
            (safe_text(error), self._run_id, time.time(), fingerprint),
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

    # ------------------------------------------------------------------ reading

    def tally(self, fingerprint: str, services: Sequence[str] = ("embedding", "tagging")) -> dict[str, int]:
        """A content's windows and its units by status, in one indexed query: what a rerun
        needs to report a file :meth:`known_file` let it skip (``units_of`` only if some failed).

        >>> store.tally(fp)  # doctest: +SKIP
        {'windows': 2, 'completed': 4}
        """
        marks = ", ".join("?" * len(services))
        rows = self._read(
            f"SELECT status, COUNT(*) FROM units WHERE fingerprint=? "
            f"AND service IN ({marks}) GROUP BY status",
            (fingerprint, *services),
        )
        windows = self._read(
            f"SELECT COUNT(DISTINCT window_index) FROM units WHERE fingerprint=? AND service IN ({marks})",
            (fingerprint, *services),
        )[0][0]
        return {"windows": int(windows), **{status: int(n) for status, n in rows}}

    def units_of(self, fingerprint: str) -> list[Unit]:
        """A content's units, without their results (cheap: no embedding is read)."""
        return [Unit.of(r) for r in self._read(
            f"SELECT {Unit.COLUMNS} FROM units WHERE fingerprint=? ORDER BY window_index, service",
            (fingerprint,),
        )]

    def has_units(self, fingerprint: str) -> bool:
        """Whether a unit of this content was planned before (without loading any result)."""
        return bool(self._read("SELECT 1 FROM units WHERE fingerprint=? LIMIT 1", (fingerprint,)))

    def units_with_status(self, *statuses: UnitStatus) -> list[Unit]:
        marks = ", ".join("?" * len(statuses))
        return [Unit.of(r) for r in self._read(
            f"SELECT {Unit.COLUMNS} FROM units WHERE status IN ({marks}) ORDER BY fingerprint, window_index",
            statuses,
        )]

    def unit(self, request_id: str) -> Unit | None:
        """One unit, with its result when it has one."""
        rows = self._read(f"SELECT {Unit.COLUMNS} FROM units WHERE request_id=?", (request_id,))
        return Unit.of(rows[0], self.result(request_id)) if rows else None

    def result(self, request_id: str) -> dict[str, Any] | None:
        """A completed job's result as the API gave it (the embedding back as floats), while
        the state holds it: once the run's results part is written, the embedding is there only
        (:mod:`seeknetic_prep.state.blobs`; read it with
        :func:`seeknetic_prep.results.embeddings.find_embeddings`)."""
        rows = self._read("SELECT embedding, result FROM units WHERE request_id=? AND status='completed'",
                          (request_id,))
        return result_dict(*rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        """Units by status."""
        return {s: n for s, n in self._read("SELECT status, COUNT(*) FROM units GROUP BY status")}
