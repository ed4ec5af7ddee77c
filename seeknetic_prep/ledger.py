"""The ledger: what is left to do, and the exactly-once rules, over the state store.

Every stage asks the ledger before it acts and tells it after; nothing else decides whether a
unit (one window of one content for one service) may be uploaded, submitted or polled, so the
rules live here once, whatever engine decodes:

* a unit is worked on by at most one upload/submit item per run (:meth:`Ledger.claim`): a
  window decoded twice (a task retried after its worker died, a Ray task re-run on another
  node) is uploaded at most twice (harmless, uploads are idempotent) but submitted once;
* a unit that existed before this run, or whose submission may have reached the server
  without an answer, is looked up with ``async_status`` before it is submitted
  (:meth:`Ledger.needs_lookup`);
* each step is committed to the store only after the server acknowledged it, so a crash at any
  point leaves a state a rerun can finish without repeating a submission.

It also keeps the run's counts (:class:`~seeknetic_prep.runspec.RunSummary`) and tells the
progress display when a job or a file is finished. Thread-safe: the upload and poll threads
call it concurrently with the driver.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .runspec import Progress, RunSummary
from .stages import DecodeTask, FilePlan, unit_request_id
from .store import FileRow, Store, Unit

__all__ = ["Admission", "Ledger", "Work"]

_KEPT_FAILURES = 1000


@dataclass
class Work:
    """One unit's upload/submit item: ``body`` to upload, or the ``r2_keys`` it already has."""

    request_id: str
    service: str
    fingerprint: str
    body: bytes | None = None
    frame_times_ms: tuple[float, ...] = ()
    r2_keys: dict[str, str] | None = None
    lookup: bool = False


@dataclass
class Admission:
    """What a newly planned file needs: decode tasks, uploaded units to submit, jobs to poll."""

    tasks: list[DecodeTask]
    submit: list[Work]
    poll: list[tuple[str, str]]  # (request id, service)


class Ledger:
    def __init__(self, store: Store, summary: RunSummary, progress: Progress, *,
                 services: Sequence[str]) -> None:
        self.store = store
        self.summary = summary
        self.progress = progress
        self.services = tuple(services)
        self._lock = threading.RLock()
        # Bookkeeping only for contents in flight: flat for a folder of any size.
        self._pending: dict[str, set[str]] = {}  # fingerprint -> request ids not yet terminal
        self._fp_of: dict[str, str] = {}  # request id -> fingerprint, for pending units
        self._paths: dict[str, list[str]] = {}  # fingerprint -> paths (a content under several)
        self._windows: dict[str, int] = {}
        self._dead: dict[str, str] = {}  # fingerprint -> why its content cannot be used
        self._unit_failures: dict[str, int] = {}
        self._claimed: set[str] = set()
        self._lookup: set[str] = set()
        self.completed_now = 0
        self.decoded = 0
        self.failures_dropped = 0

    # ------------------------------------------------------------------ planning

    def admit(self, path: str, plan: FilePlan, *, resize: str, windows_per_task: int,
              decode: str = "auto") -> Admission:
        """Record a probed file and return what its content still needs.

        Chunks are fixed by window index, not by what is left to do, so a window is always
        decoded in the same company: a resumed run uploads the very tensors an uninterrupted
        run would have (decoding a window after a seek need not match decoding it in sequence).
        """
        fp = plan.fingerprint
        self.store.record_file(path, status="ok", fingerprint=fp, size=plan.size,
                               duration_ms=plan.duration_ms, mtime_ns=plan.mtime_ns, inode=plan.inode)
        empty = Admission([], [], [])
        with self._lock:
            if fp in self._paths:  # the same content under another path: worked on once
                self._paths[fp].append(path)
                if not self._pending.get(fp):
                    self._finish_content(fp, [path])
                return empty
            self._paths[fp] = [path]
            self._windows[fp] = len(plan.windows)
            self.summary.windows += len(plan.windows)
        existed = self.store.has_units(fp)
        self.store.plan_units([
            (fp, idx, svc, start, end, unit_request_id(fp, (idx, start, end), svc, resize=resize))
            for idx, start, end in plan.windows for svc in self.services
        ])
        units = [u for u in self.store.units_of(fp) if u.service in self.services]
        to_decode: dict[int, list[Unit]] = {}
        admission = Admission([], [], [])
        with self._lock:
            ids = self._pending.setdefault(fp, set())
            for u in units:
                if u.status == "completed":
                    self.summary.jobs_completed += 1
                elif u.status == "failed":
                    self._count_failure(fp, u.request_id, u.error or "failed")
                else:
                    ids.add(u.request_id)
                    self._fp_of[u.request_id] = fp
                    if u.status == "submitted":
                        admission.poll.append((u.request_id, u.service))
                    elif u.status == "uploaded":
                        admission.submit.append(Work(u.request_id, u.service, fp, r2_keys=u.r2_keys,
                                                     lookup=True))
                    else:
                        to_decode.setdefault(u.window_index, []).append(u)
                        if existed:
                            self._lookup.add(u.request_id)
            self.progress.file_planned(path, windows=len(plan.windows), to_decode=len(to_decode),
                                       jobs=len(ids))
            if not ids:
                del self._pending[fp]
                self._finish_content(fp)
        for w in admission.submit:
            self.claim(w.request_id)
        step = windows_per_task
        chunks: dict[int, list[tuple[int, int, int]]] = {}
        for bound in plan.windows:
            chunks.setdefault(bound[0] // step, []).append(bound)
        for chunk in chunks.values():
            wanted = [u for idx, _, _ in chunk for u in to_decode.get(idx, [])]
            if wanted:
                admission.tasks.append(DecodeTask(
                    path=path, fingerprint=fp, windows=tuple(chunk),
                    request_ids=tuple((u.window_index, u.service, u.request_id) for u in wanted),
                    resize=resize, decode=decode, info=plan.info,
                ))
        return admission

    def known(self, path: str, row: FileRow) -> int:
        """Count a file the store says is unchanged and finished, without probing it again;
        return its windows. Its failures, if any, are read back so the summary names them."""
        fp = row.fingerprint
        assert fp is not None
        tally = self.store.tally(fp, self.services)
        failed = ([(u.request_id, u.error or "failed") for u in self.store.units_of(fp)
                   if u.status == "failed" and u.service in self.services] if tally.get("failed") else [])
        with self._lock:
            if fp in self._paths:
                self._paths[fp].append(path)
            else:
                self._paths[fp] = [path]
                self._windows[fp] = tally["windows"]
                self.summary.windows += tally["windows"]
                self.summary.jobs_completed += tally.get("completed", 0)
                for rid, error in failed:
                    self._count_failure(fp, rid, error)
            self.progress.file_planned(path, windows=tally["windows"], to_decode=0, jobs=0)
            self._finish_content(fp, [path])
        return tally["windows"]

    def file_failed(self, path: str, error: str) -> None:
        """A file that could not be planned (not media, missing, ...)."""
        self.store.record_file(path, status="failed", error=error)
        with self._lock:
            self.summary.files_failed += 1
            self._note_failure(path, error)
        self.progress.file_finished(path, ok=False, windows=0, error=error)

    def content_failed(self, fingerprint: str, error: str, *, environmental: bool) -> None:
        """Decoding found the content unusable: its files fail, and its unsent units with them.

        An ``environmental`` failure (the file went missing or unreadable mid-run) leaves the
        units as they are, so the next run tries the file again; a failure of the content
        itself fails them for good (until ``--retry-failed`` or the file changes).
        """
        with self._lock:
            if fingerprint in self._dead:
                return
            self._dead[fingerprint] = error
            paths = list(self._paths.get(fingerprint, []))
        for path in paths:
            self.store.record_file(path, status="failed", fingerprint=fingerprint, error=error)
        if environmental:
            with self._lock:
                ids = self._pending.pop(fingerprint, set())
                for rid in ids:
                    self._fp_of.pop(rid, None)
                self._finish_content(fingerprint)
            return
        self.store.fail_fingerprint(fingerprint, error)
        failed = [u.request_id for u in self.store.units_of(fingerprint) if u.status == "failed"]
        for rid in failed:
            self._finish(rid, "failed", None)

    def is_dead(self, fingerprint: str) -> bool:
        with self._lock:
            return fingerprint in self._dead

    # ------------------------------------------------------------------ exactly once

    def claim(self, request_id: str) -> bool:
        """Take the upload/submit of a unit for this run; False if it is taken, finished, or
        its content failed (the caller drops the item)."""
        with self._lock:
            fp = self._fp_of.get(request_id)
            if fp is None or fp in self._dead or request_id in self._claimed:
                return False
            self._claimed.add(request_id)
            return True

    def needs_lookup(self, request_id: str) -> bool:
        """Whether the server may already have this job: look it up before submitting."""
        with self._lock:
            return request_id in self._lookup

    def ambiguous(self, request_id: str) -> None:
        """A submission of this unit may have reached the server: look up before any retry."""
        with self._lock:
            self._lookup.add(request_id)

    def window_decoded(self) -> None:
        with self._lock:
            self.decoded += 1
        self.progress.windows_decoded(1)

    def uploaded(self, request_id: str, r2_keys: dict[str, str], frame_times_ms: Sequence[float]) -> None:
        self.store.mark_uploaded(request_id, r2_keys, frame_times_ms)

    def submitted(self, request_id: str) -> None:
        self.store.mark_submitted(request_id)

    def completed(self, request_id: str, result: dict[str, object]) -> None:
        self.store.mark_completed(request_id, result)
        self._finish(request_id, "completed", None)

    def failed(self, request_id: str, error: str) -> None:
        self.store.mark_failed(request_id, error)
        self._finish(request_id, "failed", error)

    # ------------------------------------------------------------------ counts

    @property
    def pending_jobs(self) -> int:
        with self._lock:
            return sum(len(ids) for ids in self._pending.values())

    def close_counts(self) -> None:
        """Fill the summary's pending and unfinished counts at the end of a run."""
        with self._lock:
            self.summary.jobs_pending = self.pending_jobs
            self.summary.files_unfinished = sum(
                len(self._paths.get(fp, [])) for fp, ids in self._pending.items() if ids
            )
            self.summary.windows_decoded = self.decoded

    def _finish(self, request_id: str, status: str, error: str | None) -> None:
        with self._lock:
            fp = self._fp_of.pop(request_id, None)
            if fp is None or request_id not in self._pending.get(fp, set()):
                return
            self._pending[fp].discard(request_id)
            self._claimed.discard(request_id)
            self._lookup.discard(request_id)
            if status == "completed":
                self.summary.jobs_completed += 1
                self.completed_now += 1
            else:
                self._count_failure(fp, request_id, error or "failed")
            self.progress.job_finished(request_id, status)
            if not self._pending[fp]:
                del self._pending[fp]
                self._finish_content(fp)

    def _count_failure(self, fp: str, request_id: str, error: str) -> None:
        self.summary.jobs_failed += 1
        self._unit_failures[fp] = self._unit_failures.get(fp, 0) + 1
        self._note_failure(request_id, error)

    def _note_failure(self, where: str, error: str) -> None:
        if len(self.summary.failures) < _KEPT_FAILURES:
            self.summary.failures.append((where, error))
        else:
            self.failures_dropped += 1

    def _finish_content(self, fp: str, paths: Sequence[str] | None = None) -> None:
        """Report the content's files (all its paths, or just ``paths``) as finished."""
        error = self._dead.get(fp)
        ok = error is None and not self._unit_failures.get(fp)
        if error is None and not ok:
            error = f"{self._unit_failures[fp]} job(s) failed"
        for path in self._paths.get(fp, []) if paths is None else paths:
            if ok:
                self.summary.files_ok += 1
            else:
                self.summary.files_failed += 1
                if error and fp in self._dead:
                    self._note_failure(path, error)
            self.progress.file_finished(path, ok=ok, windows=self._windows.get(fp, 0), error=error)
