"""What ``report.html`` shows, read from a run's state and parts: the one place the report
touches storage.

:func:`load_run` reads the totals, the throughput and the failed files from the state
(:class:`~seeknetic_prep.state.store.Store`'s typed queries), and the windows from the merged
Parquet parts without their embedding column, in one pass; then it reads the embeddings of
only the windows shown, from the parts' row groups that hold them (the state keeps none once a
part holds it). A change of storage touches this module, not
the page (:mod:`.report`), which is drawn from the :class:`RunData` it returns.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seeknetic_prep.results.embeddings import find_embeddings
from seeknetic_prep.results.part_rows import ensure_parts
from seeknetic_prep.results.parts import TAG_TYPES, compact, list_parts, part_schema
from seeknetic_prep.state.rows import FileRow, Throughput, display_path
from seeknetic_prep.state.store import reading_store

__all__ = ["MAX_FAILURES", "FailedJob", "FileEntry", "RunData", "WindowEntry", "load_run"]

MAX_FAILURES = 100
"""Failed jobs (and failed files) listed by name; the rest are counted."""
_SERVICES = ("embedding", "tagging")


@dataclass
class WindowEntry:
    """One window of one file with what its jobs returned (None where a job did not complete)."""

    index: int
    start_ms: int
    end_ms: int
    frame_times_ms: list[float] | None = None
    tags: dict[str, Any] | None = None
    embedding: np.ndarray | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class FileEntry:
    """A file shown: ``path`` opens it (Python's ``surrogateescape`` form of its bytes, so two
    names that print alike stay two files), :attr:`display` is for the page."""

    path: str
    fingerprint: str | None
    duration_ms: int | None
    windows: list[WindowEntry] = field(default_factory=list)

    @property
    def display(self) -> str:
        return display_path(self.path)


@dataclass(frozen=True)
class FailedJob:
    """A job that failed: on which file and window, which service and request, and why."""

    path: str
    window_index: int
    service: str
    request_id: str
    error: str


@dataclass
class RunData:
    """What the report shows, already capped: ``shown`` holds at most ``max_files`` files."""

    out: Path
    counts: dict[str, int]
    files_ok: int
    failed_files: list[FileRow]
    failed_jobs: list[FailedJob]
    """At most 100; the total is below."""
    failed_jobs_total: int
    throughput: Throughput
    shown: list[FileEntry]


def load_run(out: Path, *, max_files: int) -> RunData:
    """Read a run's state from ``out`` (the one place the report touches storage).

    Streams the terminal units once; keeps windows (with embeddings) only for the first
    ``max_files`` preprocessed files by path, and the first 100 failed jobs.

    Raises:
        InvalidArgumentError: ``out`` holds no run state.
    """

    with reading_store(out) as store:
        if not store.readonly:  # killed runs' parts, damaged ones written again
            ensure_parts(store, Path(out))
        counts, throughput, files = store.counts(), store.throughput(), store.files()
        windows = _Windows(max_files, {f.path: f.duration_ms for f in files})
        if list_parts(Path(out)):
            small = [c for c in part_schema().names if c != "embedding"]
            for row in compact(Path(out), columns=small).to_pylist():  # no embeddings read here
                windows.add(row)
            # Embeddings only for the windows shown, from the row groups that hold them (the
            # state keeps none once a part does): never a whole column.
            found = find_embeddings(list_parts(Path(out)), {key for _, key in windows.embedded})
            for win, key in windows.embedded:
                if key in found:
                    win.embedding = np.frombuffer(found[key], "<f4").copy()
    return RunData(
        out=Path(out),
        counts=counts,
        files_ok=sum(f.status == "ok" for f in files),
        failed_files=[f for f in files if f.status == "failed"],
        failed_jobs=windows.failed_jobs,
        failed_jobs_total=windows.failed_total,
        throughput=throughput,
        shown=list(windows.shown.values()),
    )


class _Windows:
    """One pass over the current rows: the windows of the first ``max_files`` files, and the
    failed jobs of all of them (the first 100 kept, all counted)."""

    def __init__(self, max_files: int, durations: dict[str, int | None]) -> None:
        self.max_files = max_files
        self.durations = durations
        self.shown: dict[str, FileEntry] = {}
        self.failed_jobs: list[FailedJob] = []
        self.failed_total = 0
        self.embedded: list[tuple[WindowEntry, tuple[str, int]]] = []  # windows shown, their content's window

    def add(self, row: dict[str, Any]) -> None:
        if row["window_index"] is None:
            return
        path = os.fsdecode(row["path_bytes"])  # byte-exact: the display form can be ambiguous
        for service in _SERVICES:
            if row.get(f"{service}_status") == "failed":
                self.failed_total += 1
                if len(self.failed_jobs) < MAX_FAILURES:
                    self.failed_jobs.append(FailedJob(row["path"], row["window_index"], service,
                                                      row.get(f"{service}_request_id") or "?",
                                                      row.get(f"{service}_error") or "?"))
        entry = self.shown.get(path)
        if entry is None:
            if len(self.shown) >= self.max_files:
                return
            entry = self.shown[path] = FileEntry(path, row["fingerprint"], self.durations.get(path))
        win = _window_entry(row)
        entry.windows.append(win)
        if row.get("embedding_status") == "completed":
            self.embedded.append((win, (row["fingerprint"], row["window_index"])))


def _window_entry(row: dict[str, Any]) -> WindowEntry:
    """A window as the report shows it: its times, its tags once tagging completed, its errors."""

    win = WindowEntry(row["window_index"], row["start_ms"], row["end_ms"], row["frame_times_ms"])
    win.errors = [f"{svc}: {row.get(f'{svc}_error')}" for svc in _SERVICES
                  if row.get(f"{svc}_status") == "failed"]
    if row.get("tagging_status") == "completed":
        tags = {k: row[k] for k in TAG_TYPES if row.get(k) is not None}
        tags.update(json.loads(row["tags_extra"]) if row.get("tags_extra") else {})
        win.tags = tags
    return win
