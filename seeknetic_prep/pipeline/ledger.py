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

Each step returns the outcomes it led to (:mod:`seeknetic_prep.pipeline.tally`: a job or a
file finished, a file planned) and hands them to ``record``: the driver's
:class:`~seeknetic_prep.pipeline.tally.Tally` turns them into the summary and the progress
display. The ledger itself counts nothing and displays nothing. Thread-safe: the upload and
poll threads call it concurrently with the driver.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from seeknetic_prep.decode.hw import DecodeMode
from seeknetic_prep.decode.profile import ResizeMode, Service
from seeknetic_prep.pipeline.tally import (
    FileFinished,
    FilePlanned,
    JobFinished,
    Outcome,
    RunCounts,
    WindowDecoded,
)
from seeknetic_prep.pipeline.tasks import DecodeTask, FilePlan, unit_request_id
from seeknetic_prep.state.store import FileRow, Store, Unit

__all__ = ["Admission", "Ledger", "Work"]

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


class _Contents:
    """What the ledger knows of each content in flight (by fingerprint): its paths (one
    content under several), windows, units not yet terminal, why it died if it did, and how
    many of its units failed; and so how its files end. The ledger's lock guards it."""

    def __init__(self) -> None:
        self.paths: dict[str, list[str]] = {}
        self.windows: dict[str, int] = {}
        self.dead: dict[str, str] = {}  # fingerprint -> why its content cannot be used
        self.unit_failures: dict[str, int] = {}
        # Bookkeeping only for contents in flight: flat for a folder of any size.
        self.pending: dict[str, set[str]] = {}  # fingerprint -> request ids not yet terminal
        self.fp_of: dict[str, str] = {}  # request id -> fingerprint, for pending units
        self.decoders: dict[str, str] = {}  # pending content -> the decoder recorded for it

    def track(self, fp: str, request_ids: Sequence[str]) -> set[str]:
        """The content's units not yet terminal, ``request_ids`` among them."""
        ids = self.pending.setdefault(fp, set())
        for rid in request_ids:
            ids.add(rid)
            self.fp_of[rid] = fp
        return ids

    def settle(self, request_id: str, status: str, error: str | None) -> list[Outcome]:
        """A pending unit ended; the outcomes (none if it was not pending: said once)."""
        fp = self.fp_of.pop(request_id, None)
        if fp is None or request_id not in self.pending.get(fp, set()):
            return []
        self.pending[fp].discard(request_id)
        out: list[Outcome] = [JobFinished(request_id, status) if status == "completed"
                              else self.count_failure(fp, request_id, error or "failed", now=True)]
        if not self.pending[fp]:
            out += self.forget(fp)
        return out

    def forget(self, fp: str) -> list[Outcome]:
        """The content is out of flight (its units ended, or left as they are for the next
        run); how its files end."""
        for rid in self.pending.pop(fp, set()):
            self.fp_of.pop(rid, None)
        self.decoders.pop(fp, None)
        return self.finish(fp)

    def count_failure(self, fp: str, request_id: str, error: str, *, now: bool) -> JobFinished:
        self.unit_failures[fp] = self.unit_failures.get(fp, 0) + 1
        return JobFinished(request_id, "failed", error, now=now)

    def finish(self, fp: str, paths: Sequence[str] | None = None) -> list[Outcome]:
        """The content's files (all its paths, or just ``paths``) are finished."""
        error = self.dead.get(fp)
        ok = error is None and not self.unit_failures.get(fp)
        if error is None and not ok:
            error = f"{self.unit_failures[fp]} job(s) failed"
        return [FileFinished(path, ok=ok, windows=self.windows.get(fp, 0), error=error, noted=fp in self.dead)
                for path in (self.paths.get(fp, []) if paths is None else paths)]


class Ledger:
    """The exactly-once rules over ``store`` for a run of ``services``; outcomes go to ``record``."""

    def __init__(self, store: Store, *, services: Sequence[Service],
                 record: Callable[[list[Outcome]], None] = lambda outcomes: None) -> None:
        self.store = store
        self.record = record
        self.services = tuple(services)
        self._lock = threading.RLock()
        self._c = _Contents()
        self._claimed: set[str] = set()
        self._lookup: set[str] = set()

    # ------------------------------------------------------------------ planning

    def admit(self, path: str, plan: FilePlan, *, resize: ResizeMode, windows_per_task: int,
              decode: DecodeMode = "auto") -> Admission:
        """Record a probed file and return what its content still needs.

        Chunks are fixed by window index, not by what is left to do, so a window is always
        decoded in the same company: a resumed run uploads the very tensors an uninterrupted
        run would have (decoding a window after a seek need not match decoding it in sequence).
        """
        fp = plan.fingerprint
        media = None if plan.info is None else {**plan.info.record(), "mtime_ns": plan.mtime_ns}
        with self._lock:
            dead = self._c.dead.get(fp)
        # A content that failed for good stays failed under every path, this run or a later one.
        dead = dead or self.store.content_failure(fp)
        self.store.record_file(path, status="failed" if dead else "ok", fingerprint=fp, size=plan.size,
                               duration_ms=plan.duration_ms, mtime_ns=plan.mtime_ns, inode=plan.inode,
                               media=media, error=dead, inherit_decoder=True)
        out: list[Outcome] = []
        with self._lock:
            if fp in self._c.paths:  # the same content under another path: worked on once
                self._c.paths[fp].append(path)
                if not self._c.pending.get(fp):
                    out += self._c.finish(fp, [path])
                self.record(out)
                return Admission([], [], [])
            self._c.paths[fp] = [path]
            self._c.windows[fp] = len(plan.windows)
        # A unit made before this run, or in a state new beside an earlier run's results, may be
        # on the server already: looked up before it is submitted.
        existed = self.store.has_units(fp) or self.store.earlier_results
        self.store.plan_units([
            (fp, idx, svc, start, end, unit_request_id(fp, (idx, start, end), svc, resize=resize))
            for idx, start, end in plan.windows for svc in self.services
        ])
        if dead:  # a service added since fails with the content: nothing of it is decoded again
            with self._lock:
                self._c.dead[fp] = dead
            self.store.fail_fingerprint(fp, dead)
        units = _sort([u for u in self.store.units_of(fp) if u.service in self.services])
        admission = Admission([], [Work(u.request_id, u.service, fp, r2_keys=u.r2_keys, lookup=True)
                                   for u in units.submit], [(u.request_id, u.service) for u in units.poll])
        with self._lock:
            ids = self._c.track(fp, [u.request_id for u in units.pending])
            if existed:  # a unit made before this run may be on the server: looked up first
                self._lookup.update(u.request_id for us in units.to_decode.values() for u in us)
            out += [self._c.count_failure(fp, u.request_id, u.error or "failed", now=False)
                    for u in units.failed]
            out.append(FilePlanned(path, len(plan.windows), len(units.to_decode), len(ids),
                                   new_windows=len(plan.windows), done_jobs=units.done))
            if not ids:
                out += self._c.forget(fp)
        self.record(out)
        for w in admission.submit:
            self.claim(w.request_id)
        admission.tasks = _decode_tasks(path, plan, units.to_decode, windows_per_task, resize=resize,
                                        decode=decode)
        return admission

    def known(self, path: str, row: FileRow) -> int:
        """Count a file the store says is unchanged and finished, without probing it again;
        return its windows. Its failures, if any, are read back so the summary names them."""
        fp = row.fingerprint
        assert fp is not None
        tally = self.store.tally(fp, self.services)
        failed = ([(u.request_id, u.error or "failed") for u in self.store.units_of(fp)
                   if u.status == "failed" and u.service in self.services] if tally.get("failed") else [])
        out: list[Outcome] = []
        with self._lock:
            if row.status == "failed" and row.error:  # failed by its content, for good: say why
                self._c.dead.setdefault(fp, row.error)
            new = fp not in self._c.paths
            if new:
                self._c.paths[fp] = [path]
                self._c.windows[fp] = tally["windows"]
                out += [self._c.count_failure(fp, rid, error, now=False) for rid, error in failed]
            else:
                self._c.paths[fp].append(path)
            out.append(FilePlanned(path, tally["windows"], 0, 0, new_windows=tally["windows"] if new else 0,
                                   done_jobs=tally.get("completed", 0) if new else 0))
            out += self._c.finish(fp, [path])
        self.record(out)
        return tally["windows"]

    def file_failed(self, path: str, error: str) -> None:
        """A file that could not be planned (not media, missing, ...)."""
        self.store.record_file(path, status="failed", error=error)
        self.record([FileFinished(path, ok=False, windows=0, error=error, noted=True)])

    def content_failed(self, fingerprint: str, error: str, *, environmental: bool) -> None:
        """Decoding found the content unusable: its files fail, and its unsent units with them.

        An ``environmental`` failure (the file went missing or unreadable mid-run) leaves the
        units as they are, so the next run tries the file again; a failure of the content
        itself fails them for good (until ``--retry-failed`` or the file changes).
        """
        with self._lock:
            if fingerprint in self._c.dead:
                return
            self._c.dead[fingerprint] = error
            paths = list(self._c.paths.get(fingerprint, []))
        for path in paths:
            self.store.record_file(path, status="failed", fingerprint=fingerprint, error=error)
        if environmental:
            with self._lock:
                self.record(self._c.forget(fingerprint))
            return
        self.store.fail_fingerprint(fingerprint, error)
        failed = [u.request_id for u in self.store.units_of(fingerprint) if u.status == "failed"]
        for rid in failed:
            self._finish(rid, "failed", None)

    def is_dead(self, fingerprint: str) -> bool:
        with self._lock:
            return fingerprint in self._c.dead

    # ------------------------------------------------------------------ exactly once

    def claim(self, request_id: str) -> bool:
        """Take the upload/submit of a unit for this run; False if it is taken, finished, or
        its content failed (the caller drops the item)."""
        with self._lock:
            fp = self._c.fp_of.get(request_id)
            if fp is None or fp in self._c.dead or request_id in self._claimed:
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

    def window_decoded(self, fingerprint: str, decoder: str) -> None:
        """A window was decoded, by ``decoder`` (cpu or cuda): said once per content a run,
        for the results' per-file ``decoder`` column."""
        self.record([WindowDecoded()])
        with self._lock:
            first = self._c.decoders.get(fingerprint) != decoder
            if fingerprint in self._c.pending:  # kept while the content is in flight only
                self._c.decoders[fingerprint] = decoder
        if first:
            self.store.record_decoder(fingerprint, decoder)

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
            return sum(len(ids) for ids in self._c.pending.values())

    def close_counts(self) -> None:
        """Say what is still pending at the end of a run."""
        with self._lock:
            unfinished = sum(len(self._c.paths.get(fp, [])) for fp, ids in self._c.pending.items() if ids)
            self.record([RunCounts(self.pending_jobs, unfinished)])

    def _finish(self, request_id: str, status: str, error: str | None) -> None:
        with self._lock:
            out = self._c.settle(request_id, status, error)
            if out:
                self._claimed.discard(request_id)
                self._lookup.discard(request_id)
                self.record(out)


@dataclass
class _Sorted:
    """A content's units by what each needs, as their recorded status says."""

    done: int = 0  # completed: counted
    failed: list[Unit] = field(default_factory=list)  # failed for good: counted
    pending: list[Unit] = field(default_factory=list)  # every other unit: the three lists below
    poll: list[Unit] = field(default_factory=list)  # submitted
    submit: list[Unit] = field(default_factory=list)  # uploaded
    to_decode: dict[int, list[Unit]] = field(default_factory=dict)  # by window index


def _sort(units: Sequence[Unit]) -> _Sorted:
    """Put each unit where its status says: counted when terminal, polled when submitted,
    submitted when uploaded, else decoded."""
    out = _Sorted()
    for u in units:
        if u.status == "completed":
            out.done += 1
        elif u.status == "failed":
            out.failed.append(u)
        else:
            out.pending.append(u)
            if u.status == "submitted":
                out.poll.append(u)
            elif u.status == "uploaded":
                out.submit.append(u)
            else:
                out.to_decode.setdefault(u.window_index, []).append(u)
    return out


def _decode_tasks(path: str, plan: FilePlan, to_decode: dict[int, list[Unit]], step: int, *,
                  resize: ResizeMode, decode: DecodeMode) -> list[DecodeTask]:
    """The decode tasks of a file: its windows in chunks of ``step`` by window index, each
    chunk that holds a window still to decode."""
    chunks: dict[int, list[tuple[int, int, int]]] = {}
    for bound in plan.windows:
        chunks.setdefault(bound[0] // step, []).append(bound)
    tasks = []
    for chunk in chunks.values():
        wanted = [u for idx, _, _ in chunk for u in to_decode.get(idx, [])]
        if wanted:
            layout = plan.layout
            tasks.append(DecodeTask(
                path=path, fingerprint=plan.fingerprint, windows=tuple(chunk),
                request_ids=tuple((u.window_index, cast(Service, u.service), u.request_id) for u in wanted),
                resize=resize, decode=decode, info=plan.info,
                opening=layout.opening if layout else (),
                spans=layout.spans_of(idx for idx, _, _ in chunk) if layout else None,
            ))
    return tasks
