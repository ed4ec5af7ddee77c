"""Run queries: each run's bookkeeping, and what one run finished, for its results part.

A run is a row of ``runs`` (:meth:`RunQueries.start_run`); the units it makes terminal carry
its id (``units.finished_run``) and so do the paths it records or changes (``files.run_id``).
That is what lets the end of a run read only what the run did
(:func:`seeknetic_prep.results.part_rows.append_results_part`): its cost follows the run, not the
history. The reads here are exactly the ones the results parts need, typed, so no SQL lives
outside this package.
"""

from __future__ import annotations

import time

from seeknetic_prep.state.connection import Connection
from seeknetic_prep.state.rows import RunRow, Throughput, WindowRow

__all__ = ["RunQueries"]


class RunQueries(Connection):
    """The ``runs`` table, and the per-run reads of ``units`` that results are written from."""

    def start_run(self) -> int:
        """A new run: the units it finishes and the paths it records are tagged with its id,
        which :func:`seeknetic_prep.results.part_rows.append_results_part` reads back."""
        now = time.time()
        with self._lock:
            self._run_id = self._insert("INSERT INTO runs (started_at, updated_at) VALUES (?, ?)", (now, now))
            return self._run_id

    def update_run(self, run_id: int, *, windows_decoded: int, jobs_completed: int,
                   outcome: str | None = None) -> None:
        self._write_many([(
            "UPDATE runs SET updated_at=?, windows_decoded=?, jobs_completed=?, outcome=? WHERE id=?",
            (time.time(), windows_decoded, jobs_completed, outcome, run_id),
        )])

    def runs(self) -> list[RunRow]:
        """Every run, oldest first."""
        return [RunRow.of(r) for r in self._read(f"SELECT {RunRow.COLUMNS} FROM runs ORDER BY id")]

    def throughput(self) -> Throughput:
        """Windows decoded and jobs completed per second, over every run so far."""
        return Throughput.of(self.runs())

    # ------------------------------------------------------------------ what a run finished

    def runs_with_results(self) -> set[int]:
        """Every run that finished a unit or recorded a path (run 0: a database from v1)."""
        return {int(r) for (r,) in self._read(
            "SELECT DISTINCT finished_run FROM units WHERE finished_run IS NOT NULL "
            "UNION SELECT DISTINCT run_id FROM files WHERE run_id IS NOT NULL"
        )}

    def windows_finished_in(self, run_id: int) -> dict[str, set[int]]:
        """Content fingerprint -> the windows of it that run ``run_id`` made terminal."""
        wanted: dict[str, set[int]] = {}
        for fp, idx in self._read(
            "SELECT DISTINCT fingerprint, window_index FROM units WHERE finished_run=?", (run_id,)
        ):
            wanted.setdefault(fp, set()).add(idx)
        return wanted

    def finished_windows(self, fingerprint: str) -> set[int]:
        """The windows of a content with a terminal unit (completed or failed), in any run."""
        return {int(i) for (i,) in self._read(
            "SELECT DISTINCT window_index FROM units WHERE fingerprint=? "
            "AND status IN ('completed', 'failed')", (fingerprint,))}

    def window_rows(self, fingerprint: str, windows: list[int]) -> list[WindowRow]:
        """Both services' units of these windows of a content, by window then service, with
        their results (the embedding's bytes too: this read is the one that loads them)."""
        marks = ", ".join("?" * len(windows))
        return [WindowRow.of(r) for r in self._read(
            f"SELECT {WindowRow.COLUMNS} FROM units WHERE fingerprint=? AND window_index IN ({marks}) "
            "ORDER BY window_index, service",
            (fingerprint, *windows),
        )]
