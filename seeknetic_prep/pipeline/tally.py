"""What the ledger decided, as values, and the one place that counts them.

The ledger (:mod:`seeknetic_prep.pipeline.ledger`) owns the exactly-once rules and nothing
else: each of its steps returns the :data:`Outcome` values it led to (a job finished, a file
finished, ...). :class:`Tally`, owned by the driver, turns them into the run's summary and the
progress callbacks; :class:`Totals` keeps the progress bar's totals honest while files are
still being probed. So the rules can be tested on their outcomes alone, and the counting rules
(what counts as a failed file, how many failures are kept) live here once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from seeknetic_prep.pipeline.spec import Progress, RunSummary

__all__ = [
    "FileFinished", "FilePlanned", "JobFinished", "Outcome", "RunCounts", "Tally", "Totals", "WindowDecoded",
]

_KEPT_FAILURES = 1000  # the summary names this many failures; `status` has all of them


@dataclass(frozen=True)
class FilePlanned:
    """A file was admitted: ``windows`` in all (``new_windows`` of them new to this run's
    totals), ``to_decode`` still to decode, ``jobs`` units still to finish, ``done_jobs``
    found completed in the state (a resumed run)."""

    path: str
    windows: int
    to_decode: int
    jobs: int
    new_windows: int
    done_jobs: int = 0


@dataclass(frozen=True)
class JobFinished:
    """A unit is terminal: ``completed`` or ``failed``. ``now``: it finished in this run (a
    unit found terminal in the state is counted, not announced)."""

    request_id: str
    status: str
    error: str | None = None
    now: bool = True


@dataclass(frozen=True)
class FileFinished:
    """Every unit of a file is terminal, or it could not be used. ``noted``: its error belongs
    in the summary's failures (the file's own failure, not one of its jobs')."""

    path: str
    ok: bool
    windows: int
    error: str | None = None
    noted: bool = False


@dataclass(frozen=True)
class WindowDecoded:
    """One more window was decoded."""


@dataclass(frozen=True)
class RunCounts:
    """At the end of a run: what is still pending."""

    jobs_pending: int
    files_unfinished: int


Outcome = FilePlanned | JobFinished | FileFinished | WindowDecoded | RunCounts


class Tally:
    """The run's counts and display, from outcomes. Thread-safe: the upload and poll threads
    report through the ledger while the driver does."""

    def __init__(self, summary: RunSummary, progress: Progress) -> None:
        self.summary = summary
        self.progress = progress
        self.completed_now = 0
        self._lock = threading.RLock()

    def apply(self, outcomes: Iterable[Outcome]) -> None:
        with self._lock:
            for outcome in outcomes:
                self._one(outcome)

    def _one(self, o: Outcome) -> None:
        s = self.summary
        if isinstance(o, WindowDecoded):
            s.windows_decoded += 1
            self.progress.windows_decoded(1)
        elif isinstance(o, JobFinished):
            if o.status == "completed":
                s.jobs_completed += 1
                self.completed_now += o.now
            else:
                s.jobs_failed += 1
                self._note(o.request_id, o.error or "failed")
            if o.now:
                self.progress.job_finished(o.request_id, o.status)
        elif isinstance(o, FileFinished):
            if o.ok:
                s.files_ok += 1
            else:
                s.files_failed += 1
                if o.noted and o.error:
                    self._note(o.path, o.error)
            self.progress.file_finished(o.path, ok=o.ok, windows=o.windows, error=o.error)
        elif isinstance(o, FilePlanned):
            s.windows += o.new_windows
            s.jobs_completed += o.done_jobs
            self.progress.file_planned(o.path, windows=o.windows, to_decode=o.to_decode, jobs=o.jobs)
        else:
            s.jobs_pending, s.files_unfinished = o.jobs_pending, o.files_unfinished

    def _note(self, where: str, error: str) -> None:
        if len(self.summary.failures) < _KEPT_FAILURES:
            self.summary.failures.append((where, error))
        else:
            self.summary.failures_not_kept += 1


class Totals:
    """The progress totals: exact once every file is accounted for (probed, failed, or known
    from the state), estimated by bytes until then (windows scale with bytes far better than
    with files)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.sizes: dict[str, int] = {}
        self.bytes_total = self.bytes_planned = self.files_planned = self.jobs_planned = 0

    def found(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.bytes_total = sum(sizes.values())

    def probed(self, path: str, *, jobs: int = 0) -> None:
        self.files_planned += 1
        self.bytes_planned += self.sizes.get(path, 0)
        self.jobs_planned += jobs
        exact = self.files_planned >= len(self.sizes)
        estimate = self.jobs_planned
        if not exact and self.bytes_planned:
            estimate = round(estimate * self.bytes_total / self.bytes_planned)
        self.progress.totals(files=len(self.sizes), jobs=estimate, exact=exact)
