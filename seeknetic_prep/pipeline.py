"""The folder run: every window of every file embedded and tagged exactly once, resumably.

Stages and the values that cross them::

    discover (main)            paths
    plan_file (process pool)   path -> FilePlan (fingerprint, duration, windows)
    decode_windows (pool)      path + windows -> EncodedWindow (frame times + upload bodies)
    upload + submit (threads)  body -> r2 keys -> job        (state committed after each ack)
    poll (threads)             request_id -> embedding | tags | error
    results.jsonl              regenerated from the state database

``plan_file`` and ``decode_windows`` (:mod:`seeknetic_prep.stages`) are plain functions over
plain, picklable values, so any executor (a process pool here, Ray later) can run them. Each window is decoded
once for both services; the bodies are serialized in the worker, so upload threads only send
bytes. Queues between the stages are bounded (a few decode tasks in flight, a few windows
waiting for upload), so memory stays flat for a folder of any size while decoding overlaps
uploading.

Resume comes from the :class:`~seeknetic_prep.store.Store`, not from output files: for each
unit, ``completed``/``failed`` are left alone, ``submitted`` is polled, ``uploaded`` is
submitted with its stored keys, ``planned`` is decoded and uploaded. A unit that existed before
this run is looked up with ``async_status`` before it is submitted, so a submission whose
acknowledgement was lost to a crash is never repeated.

Progress is reported through a :class:`Progress` object (no-op by default): the library never
prints and never looks at a terminal.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import Client
from .discover import VIDEO_EXTENSIONS, discover
from .errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    SeekneticPrepError,
    ServerError,
)
from .results import write_results
from .stages import (
    DecodeTask,
    EncodedWindow,
    FilePlan,
    decode_windows,
    plan_file,
    unit_request_id,
    worker_init,
)
from .store import Store, Unit

__all__ = ["Progress", "RunOptions", "RunSummary", "run_folder"]

SERVICES = ("embedding", "tagging")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # planning reports why


def _retry_id(unit: Unit, attempt: int) -> str:
    return unit_request_id(unit.fingerprint, (unit.window_index, unit.start_ms, unit.end_ms),
                           unit.service, attempt)


# ---------------------------------------------------------------------- options, progress, summary


@dataclass(frozen=True)
class RunOptions:
    """How a run works. ``workers=0`` decodes in a thread of the main process (debugging)."""

    services: tuple[str, ...] = SERVICES
    workers: int | None = None
    uploaders: int = 4
    # Each task seeks to its first window and decodes from the keyframe before it, so small
    # tasks decode more with long GOPs (2 windows: +15% CPU on an 8 s GOP 1080p clip); but a
    # task's windows are uploaded only when it ends, so big ones leave a longer upload tail.
    # 4 measured best of 2, 4 and 6 (wall) on the bench folder.
    windows_per_task: int = 4
    retry_failed: bool = False
    extensions: frozenset[str] = VIDEO_EXTENSIONS
    resize: str = "crop"
    job_timeout_s: float = 3600.0
    poll_s: float = 0.3
    max_poll_s: float = 5.0
    max_transient_streak: int = 8

    @property
    def worker_count(self) -> int:
        """Decode processes: ``workers``, or one per core when not given."""
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    def __post_init__(self) -> None:
        bad = [s for s in self.services if s not in SERVICES]
        if bad or not self.services:
            raise InvalidArgumentError(
                f"Invalid services {','.join(self.services)!r}: must be one or more of embedding, tagging."
            )
        if self.workers is not None and self.workers < 0:
            raise InvalidArgumentError(f"Invalid workers {self.workers}: must be >= 0.")
        if self.uploaders < 1:
            raise InvalidArgumentError(f"Invalid uploaders {self.uploaders}: must be >= 1.")
        if self.windows_per_task < 1:
            raise InvalidArgumentError(f"Invalid windows_per_task {self.windows_per_task}: must be >= 1.")


class Progress:
    """Callbacks a run makes as it goes; override what you display. Calls are serialized."""

    def files_found(self, count: int) -> None:
        """Discovery is done: ``count`` candidate files will be worked on."""

    def file_planned(self, path: str, *, windows: int, to_decode: int, jobs: int) -> None:
        """A file was probed: ``windows`` in all, ``to_decode`` still to decode, ``jobs`` units
        still to finish (resumed runs skip what is done)."""

    def windows_decoded(self, count: int) -> None:
        """``count`` more windows were decoded."""

    def job_finished(self, request_id: str, status: str) -> None:
        """A unit reached ``completed`` or ``failed``."""

    def file_finished(self, path: str, *, ok: bool, windows: int, error: str | None) -> None:
        """Every unit of a file is terminal (or it could not be preprocessed)."""


@dataclass
class RunSummary:
    out: Path
    results_path: Path
    files_ok: int = 0
    files_failed: int = 0
    files_unfinished: int = 0
    windows: int = 0
    windows_decoded: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    jobs_pending: int = 0
    elapsed_s: float = 0.0
    stopped_by: str | None = None  # "auth", "quota", "interrupt", "unreachable"
    stop_message: str | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all completed; 2 auth; 3 quota; 1 failures; 130 interrupted (precedence 2, 3, 1)."""
        if self.stopped_by == "auth":
            return 2
        if self.stopped_by == "quota":
            return 3
        if self.stopped_by == "interrupt":
            return 130
        if self.files_failed or self.jobs_failed or self.jobs_pending:
            return 1
        return 0

    def line(self) -> str:
        rate = self.windows_decoded / self.elapsed_s if self.elapsed_s > 0 else 0.0
        text = (
            f"files: {self.files_ok} ok, {self.files_failed} failed"
            + (f", {self.files_unfinished} unfinished" if self.files_unfinished else "")
            + f"; windows: {self.windows} ({self.windows_decoded} decoded now); "
            f"jobs: {self.jobs_completed} completed, {self.jobs_failed} failed"
            + (f", {self.jobs_pending} pending" if self.jobs_pending else "")
            + f"; {self.elapsed_s:.1f} s, {rate:.2f} windows/s"
        )
        return text


# ---------------------------------------------------------------------- the run


@dataclass
class _Work:
    request_id: str
    service: str
    fingerprint: str
    body: bytes | None = None
    frame_times_ms: tuple[float, ...] = ()
    r2_keys: dict[str, str] | None = None
    lookup: bool = False


class _Stop(Exception):
    pass


class _Run:
    def __init__(self, paths: Sequence[str | Path], out: Path, client: Client,
                 options: RunOptions, progress: Progress, executor: cf.Executor | None = None) -> None:
        self.paths = paths
        self.out = out
        self.client = client
        self.opt = options
        self.progress = progress
        self.store = Store(out / "state.sqlite")
        self.summary = RunSummary(out=out, results_path=out / "results.jsonl")
        self.lock = threading.RLock()
        self.stop = threading.Event()  # stop everything now
        self.no_submit = threading.Event()  # quota spent: upload what is decoded, submit nothing
        self.work: queue.Queue[_Work] = queue.Queue(maxsize=max(2, 2 * options.uploaders))
        self.poll_heap: list[tuple[float, float, float, str]] = []  # (due, interval, deadline, rid)
        self.poll_cv = threading.Condition(self.lock)
        # per fingerprint: request ids not yet terminal, paths, windows, failure
        self.pending: dict[str, set[str]] = {}
        self.fp_of: dict[str, str] = {}
        self.paths_of: dict[str, list[str]] = {}
        self.windows_of: dict[str, int] = {}
        self.failed_fp: dict[str, str] = {}
        self.unit_failures: dict[str, int] = {}
        self.resumed: set[str] = set()  # units that existed before this run: look up first
        self.decoded = 0
        self.transient_streak = 0
        self.polls_in_flight = 0
        self.completed_now = 0  # by this run, for the throughput `status` shows
        self.run_id = 0
        self.beat = 0.0
        self.executor: cf.Executor | None = executor

    # -------------------------------------------------------------- bookkeeping

    def _finish_unit(self, rid: str, status: str, error: str | None = None) -> None:
        with self.lock:
            fp = self.fp_of.get(rid)
            if fp is None or rid not in self.pending.get(fp, set()):
                return
            self.pending[fp].discard(rid)
            del self.fp_of[rid]  # bookkeeping only for units in flight: flat for any folder
            if status == "completed":
                self.summary.jobs_completed += 1
                self.completed_now += 1
            else:
                self.summary.jobs_failed += 1
                self.unit_failures[fp] = self.unit_failures.get(fp, 0) + 1
                if error:
                    self.summary.failures.append((rid, error))
            self.progress.job_finished(rid, status)
            if not self.pending[fp]:
                del self.pending[fp]
                self._finish_fp(fp)

    def _finish_fp(self, fp: str, paths: Sequence[str] | None = None) -> None:
        """Report the content's files (all its paths, or just ``paths``) as finished."""
        error = self.failed_fp.get(fp)
        ok = error is None and not self.unit_failures.get(fp)
        if error is None and not ok:
            error = f"{self.unit_failures[fp]} job(s) failed"
        for path in self.paths_of.get(fp, []) if paths is None else paths:
            if ok:
                self.summary.files_ok += 1
            else:
                self.summary.files_failed += 1
            self.progress.file_finished(path, ok=ok, windows=self.windows_of.get(fp, 0), error=error)

    def _file_failed(self, path: str, error: str) -> None:
        with self.lock:
            self.summary.files_failed += 1
            self.summary.failures.append((path, error))
            self.progress.file_finished(path, ok=False, windows=0, error=error)

    # -------------------------------------------------------------- main

    def execute(self) -> RunSummary:
        started = time.monotonic()
        threads: list[threading.Thread] = []
        try:
            self.run_id = self.store.start_run()
            if self.opt.retry_failed:
                self.store.retry_failed(_retry_id)
            threads = [threading.Thread(target=self._uploader, daemon=True, name=f"upload-{i}")
                       for i in range(self.opt.uploaders)]
            threads += [threading.Thread(target=self._poller, daemon=True, name=f"poll-{i}")
                        for i in range(max(1, self.opt.uploaders // 2))]
            for t in threads:
                t.start()
            if self.executor is None:
                self.executor = _new_executor(self.opt)
            self._schedule()
            self._drain()
        except AuthenticationError as exc:
            self._halt("auth", str(exc))
        except QuotaExceededError as exc:  # only from check_auth; submitters set no_submit
            self._halt("quota", str(exc))
        except KeyboardInterrupt:
            self._halt("interrupt", "interrupted")
        except _Stop:
            pass
        finally:
            self.stop.set()
            with self.poll_cv:
                self.poll_cv.notify_all()
            if self.executor is not None:
                self.executor.shutdown(wait=False, cancel_futures=True)
            for t in threads:
                t.join(timeout=5.0)
            self.summary.elapsed_s = time.monotonic() - started
            self.summary.windows_decoded = self.decoded
            self._close_out()
        return self.summary

    def _halt(self, reason: str, message: str) -> None:
        # auth (exit 2) outranks an interrupt, which outranks quota (exit 3)
        rank = {"auth": 4, "interrupt": 3, "quota": 2, "unreachable": 1}
        with self.lock:
            if rank[reason] > rank.get(self.summary.stopped_by or "", 0):
                self.summary.stopped_by = reason
                self.summary.stop_message = message
        self.stop.set()

    def _close_out(self) -> None:
        with self.lock:
            self.summary.jobs_pending = sum(len(ids) for ids in self.pending.values())
            self.summary.files_unfinished = sum(
                len(self.paths_of.get(fp, [])) for fp, ids in self.pending.items() if ids
            )
        try:
            if self.run_id:
                self.store.update_run(
                    self.run_id, windows_decoded=self.decoded, jobs_completed=self.completed_now,
                    outcome=self.summary.stopped_by or "finished",
                )
            write_results(self.store, self.summary.results_path, services=self.opt.services)
        finally:
            self.store.close()

    def _check(self) -> None:
        if self.stop.is_set():
            raise _Stop
        now = time.monotonic()
        if now - self.beat > 2.0:  # so `status` has throughput even after a kill -9
            self.beat = now
            self.store.update_run(self.run_id, windows_decoded=self.decoded,
                                  jobs_completed=self.completed_now)

    def _schedule(self) -> None:
        """Feed the pool: decode tasks first, then new files; never more than ``cap`` in flight.

        A worker process that dies (a crash in a decoder, the OOM killer) breaks the whole pool
        and every task in flight with it. The pool is then replaced and those tasks run again one
        at a time, so only a task that kills a worker on its own fails its file.
        """
        workers = self.opt.worker_count
        cap = max(2, 2 * max(workers, 1))
        found = list(discover(self.paths, extensions=self.opt.extensions))  # paths only: small
        # Biggest first, as a scheduler of unequal jobs should: the long file no longer starts
        # last and runs alone on one worker while the others idle.
        found.sort(key=_size, reverse=True)
        self.progress.files_found(len(found))
        files = iter(found)
        backlog: deque[DecodeTask] = deque()
        suspects: deque[tuple[str, Any]] = deque()
        pending: dict[cf.Future[Any], tuple[str, Any]] = {}
        files_left = True
        solo = False
        while True:
            self._check()
            while not self.no_submit.is_set() and not solo:
                job: tuple[str, Any]
                if suspects:
                    if pending:
                        break
                    job, solo = suspects.popleft(), True
                elif len(pending) >= cap:
                    break
                elif backlog:
                    task = backlog.popleft()
                    if task.fingerprint in self.failed_fp:
                        continue
                    job = ("decode", task)
                elif files_left:
                    path = next(files, None)
                    if path is None:
                        files_left = False
                        continue
                    job = ("plan", str(path))
                else:
                    break
                pending[self._submit(job)] = job
            if not pending:
                return
            done, _ = cf.wait(list(pending), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in done:
                job = pending.pop(fut)
                try:
                    if job[0] == "plan":
                        self._planned(fut, job[1], backlog)
                    else:
                        self._decoded(fut, job[1])
                except BrokenProcessPool:
                    broken = True
                    if solo:
                        self._crashed(job)
                    else:
                        suspects.append(job)
            if broken:
                suspects.extend(pending.values())  # they died with the pool
                pending.clear()
                self._replace_executor()
            if not pending:
                solo = False
            if self.no_submit.is_set():  # quota: stop decoding; what is queued still uploads
                for fut in pending:
                    fut.cancel()
                return

    def _submit(self, job: tuple[str, Any]) -> cf.Future[Any]:
        assert self.executor is not None
        fn: Any = plan_file if job[0] == "plan" else decode_windows
        try:
            return self.executor.submit(fn, job[1])
        except BrokenProcessPool:  # a worker died while idle
            self._replace_executor()
            return self.executor.submit(fn, job[1])

    def _replace_executor(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = _new_executor(self.opt)

    def _crashed(self, job: tuple[str, Any]) -> None:
        if job[0] == "plan":
            path = job[1]
            error = f"{path}: the decoder process died while probing this file"
            self.store.record_file(path, status="failed", error=error)
            self._file_failed(path, error)
        else:
            task: DecodeTask = job[1]
            self._fail_content(task, f"{task.path}: the decoder process died while decoding this file")

    def _planned(self, fut: cf.Future[Any], path: str, backlog: deque[DecodeTask]) -> None:
        try:
            plan: FilePlan = fut.result()
        except SeekneticPrepError as exc:  # the stage's own error (MediaError, ...)
            self.store.record_file(path, status="failed", error=str(exc))
            self._file_failed(path, str(exc))
            return
        fp = plan.fingerprint
        self.store.record_file(path, status="ok", fingerprint=fp, size=plan.size,
                               duration_ms=plan.duration_ms)
        with self.lock:
            if fp in self.paths_of:  # the same content under another path: done once
                self.paths_of[fp].append(path)
                if not self.pending.get(fp):
                    self._finish_fp(fp, [path])
                return
            self.paths_of[fp] = [path]
            self.windows_of[fp] = len(plan.windows)
            self.summary.windows += len(plan.windows)
        existed = self.store.has_units(fp)
        self.store.plan_units([
            (fp, idx, svc, start, end, unit_request_id(fp, (idx, start, end), svc))
            for idx, start, end in plan.windows for svc in self.opt.services
        ])
        units = [u for u in self.store.units_of(fp) if u.service in self.opt.services]
        to_decode: dict[int, list[Unit]] = {}
        resubmit: list[Unit] = []
        poll: list[Unit] = []
        with self.lock:
            ids = self.pending.setdefault(fp, set())
            for u in units:
                if u.status == "completed":
                    self.summary.jobs_completed += 1
                elif u.status == "failed":
                    self.summary.jobs_failed += 1
                    self.unit_failures[fp] = self.unit_failures.get(fp, 0) + 1
                    self.summary.failures.append((u.request_id, u.error or "failed"))
                else:
                    ids.add(u.request_id)
                    self.fp_of[u.request_id] = fp
                    if u.status == "submitted":
                        poll.append(u)
                    elif u.status == "uploaded":
                        resubmit.append(u)
                    else:
                        to_decode.setdefault(u.window_index, []).append(u)
            self.progress.file_planned(path, windows=len(plan.windows), to_decode=len(to_decode),
                                       jobs=len(ids))
            if not ids:
                del self.pending[fp]
                self._finish_fp(fp)
        for u in poll:
            self._poll_later(u.request_id)
        for u in resubmit:
            self._put(_Work(u.request_id, u.service, fp, r2_keys=u.r2_keys, lookup=True))
        # Chunks are fixed by window index, not by what is left to do, so a window is always
        # decoded in the same company: a resumed run uploads the very tensors an uninterrupted
        # run would have (decoding a window after a seek need not match decoding it in sequence).
        step = self.opt.windows_per_task
        chunks: dict[int, list[tuple[int, int, int]]] = {}
        for bound in plan.windows:
            chunks.setdefault(bound[0] // step, []).append(bound)
        for chunk in chunks.values():
            wanted = [u for idx, _, _ in chunk for u in to_decode.get(idx, [])]
            if wanted:
                backlog.append(DecodeTask(
                    path=path, fingerprint=fp, windows=tuple(chunk),
                    request_ids=tuple((u.window_index, u.service, u.request_id) for u in wanted),
                    resize=self.opt.resize,
                ))
        if existed:
            self.resumed.update(u.request_id for us in to_decode.values() for u in us)

    def _decoded(self, fut: cf.Future[Any], task: DecodeTask) -> None:
        try:
            windows: list[EncodedWindow] = fut.result()
        except SeekneticPrepError as exc:  # the stage's own error (MediaError, ...)
            self._fail_content(task, str(exc))
            return
        needed = sum(1 for w in windows if w.bodies)  # the rest of a chunk was only decoded along
        with self.lock:
            self.decoded += needed
            self.progress.windows_decoded(needed)
        for w in windows:
            for service, rid, body in w.bodies:
                self._put(_Work(rid, service, task.fingerprint, body=body,
                                frame_times_ms=w.frame_times_ms, lookup=rid in self.resumed))

    def _fail_content(self, task: DecodeTask, error: str) -> None:
        """Decoding found the content unusable: the file fails, its unsent units with it."""
        fp = task.fingerprint
        self.store.fail_fingerprint(fp, error)
        with self.lock:
            first = fp not in self.failed_fp
            self.failed_fp[fp] = error
            if first:
                for path in self.paths_of.get(fp, []):
                    self.store.record_file(path, status="failed", fingerprint=fp, error=error)
                    self.summary.failures.append((path, error))
            failed_units = [u for u in self.store.units_of(fp) if u.status == "failed"]
        for u in failed_units:
            self._finish_unit(u.request_id, "failed")

    def _put(self, item: _Work) -> None:
        while True:
            self._check()
            try:
                self.work.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _drain(self) -> None:
        """Wait for the queue to empty and every job to finish (or a stop)."""
        while True:
            self._check()
            with self.lock:
                busy = any(self.pending.values())
            if not busy and self.work.unfinished_tasks == 0:
                return
            if self.no_submit.is_set() and self.work.unfinished_tasks == 0:
                with self.lock:
                    polling = bool(self.poll_heap) or self.polls_in_flight > 0
                if not polling:
                    self._halt("quota", self.summary.stop_message or "quota spent")
                    raise _Stop
            time.sleep(0.05)

    # -------------------------------------------------------------- upload + submit

    def _uploader(self) -> None:
        while not self.stop.is_set():
            try:
                item = self.work.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._process(item)
            except AuthenticationError as exc:
                self._halt("auth", str(exc))
            except QuotaExceededError as exc:
                with self.lock:
                    if self.summary.stopped_by is None:
                        self.summary.stop_message = str(exc)
                self.no_submit.set()
            except (APIConnectionError, ServerError, RateLimitError) as exc:
                self._transient(exc)  # still failing after all retries: the API, not the unit
            except APIError as exc:
                self.store.mark_failed(item.request_id, str(exc))
                self._finish_unit(item.request_id, "failed", str(exc))
            else:
                self.transient_streak = 0
            finally:
                self.work.task_done()

    def _transient(self, exc: APIError) -> None:
        """Leave the unit where it is (a rerun picks it up); stop when the API seems gone."""
        with self.lock:
            self.transient_streak += 1
            streak = self.transient_streak
        if streak >= self.opt.max_transient_streak:
            self._halt("unreachable", f"{streak} calls in a row failed after all retries; last: {exc}")

    def _process(self, item: _Work) -> None:
        if self.stop.is_set() or item.fingerprint in self.failed_fp:
            return
        keys = item.r2_keys
        if item.body is not None:
            keys = self.client.upload_body(item.body, request_id=item.request_id)
            self.store.mark_uploaded(item.request_id, keys, item.frame_times_ms)
        if keys is None:
            raise APIError(f"unit {item.request_id} is uploaded but has no r2 keys",
                           request_id=item.request_id)
        if item.lookup:
            try:
                self.client.get_status(item.request_id)
            except NotFoundError:
                pass
            else:  # the server has the job already: its submission was just not recorded
                self.store.mark_submitted(item.request_id)
                self._poll_later(item.request_id)
                return
        if self.stop.is_set() or self.no_submit.is_set():
            return  # stays uploaded: the next run submits it without a new upload
        if item.service == "embedding":
            tensor = {"video_input_key": keys["video_input"]}
            if "audio_input" in keys:
                tensor["audio_input_key"] = keys["audio_input"]
        else:
            tensor = {"video_input_key": keys["video_input"]}
            if "video_kwargs" in keys:
                tensor["video_kwargs_key"] = keys["video_kwargs"]
        self.client.submit(item.service, tensor=tensor, request_id=item.request_id)  # type: ignore[arg-type]
        self.store.mark_submitted(item.request_id)
        self._poll_later(item.request_id)

    # -------------------------------------------------------------- polling

    def _poll_later(self, rid: str) -> None:
        now = time.monotonic()
        with self.poll_cv:
            heapq.heappush(self.poll_heap, (now + self.opt.poll_s, self.opt.poll_s,
                                            now + self.opt.job_timeout_s, rid))
            self.poll_cv.notify()

    def _poller(self) -> None:
        while not self.stop.is_set():
            with self.poll_cv:
                if not self.poll_heap:
                    self.poll_cv.wait(timeout=0.2)
                    continue
                due, interval, deadline, rid = self.poll_heap[0]
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    self.poll_cv.wait(timeout=min(wait_s, 0.2))
                    continue
                heapq.heappop(self.poll_heap)
                self.polls_in_flight += 1
            try:
                self._poll_one(rid, interval, deadline)
            except AuthenticationError as exc:
                self._halt("auth", str(exc))
            finally:
                with self.poll_cv:
                    self.polls_in_flight -= 1

    def _poll_one(self, rid: str, interval: float, deadline: float) -> None:
        try:
            answer = self.client.get_status(rid)
        except NotFoundError:
            error = f"the server has no job {rid} (404) although it accepted it"
            self.store.mark_failed(rid, error)
            self._finish_unit(rid, "failed", error)
            return
        except AuthenticationError:
            raise
        except APIError as exc:
            self._transient(exc)
            answer = {"status": "unknown"}  # ask again later
        status = answer.get("status")
        if status == "completed":
            result: dict[str, Any] = {
                k: answer[k] for k in ("embedding", "tags", "model_name") if k in answer
            }
            self.store.mark_completed(rid, result)
            self._finish_unit(rid, "completed")
            return
        if status == "failed":
            error = str(answer.get("error_message") or "the job failed without a message")
            self.store.mark_failed(rid, error)
            self._finish_unit(rid, "failed", error)
            return
        now = time.monotonic()
        if now > deadline:
            error = f"job {rid} still {status} after {self.opt.job_timeout_s:g} s"
            self.store.mark_failed(rid, error)
            self._finish_unit(rid, "failed", error)
            return
        nxt = min(self.opt.max_poll_s, interval * 1.5)
        with self.poll_cv:
            heapq.heappush(self.poll_heap, (now + nxt, nxt, deadline, rid))


def _new_executor(opt: RunOptions) -> cf.Executor:
    workers = opt.worker_count
    if workers == 0:
        return cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
    return cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=worker_init,
    )


def _started_executor(opt: RunOptions) -> cf.Executor:
    """A pool whose workers are already starting (spawn + importing the decoder: about a
    second each), so that cost overlaps the key check and a local server's start-up instead of
    delaying the first decode."""
    executor = _new_executor(opt)
    workers = opt.worker_count
    for _ in range(workers):  # each submit to a busy pool launches one more worker
        executor.submit(int)
    return executor


def run_folder(
    paths: Iterable[str | Path],
    *,
    out: str | Path,
    client: Client,
    options: RunOptions | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Embed and tag every window of every video under ``paths``; resumable from ``out``.

    Args:
        paths: files and folders (folders are walked recursively).
        out: output folder: ``state.sqlite`` and ``results.jsonl``.
        client: the API client (its key is checked first, with one cheap request).
        options: workers, uploaders, services, ...
        progress: callbacks; none by default.

    Returns:
        The summary; ``summary.exit_code`` is what the CLI exits with. An interrupt
        (KeyboardInterrupt) is caught: state is kept and ``stopped_by`` is ``"interrupt"``.

    Raises:
        InvalidArgumentError: a path does not exist or an option breaks its rule.
        AuthenticationError: the key is wrong (checked with one request before anything else;
            a 401 later in the run ends it with ``stopped_by == "auth"`` instead).
        APIConnectionError: the API cannot be reached at all.
        StateError: ``out`` holds an unusable state database.

    >>> summary = run_folder(["videos/"], out="seeknetic-out", client=Client())  # doctest: +SKIP
    >>> summary.exit_code
    0
    """
    out_dir = Path(out)
    plist = list(paths)
    for p in plist:
        if not Path(p).exists():
            raise InvalidArgumentError(f"Invalid path {str(p)!r}: no such file or folder.")
    opt = options or RunOptions()
    executor = _started_executor(opt)
    try:
        client.check_auth()  # a wrong key stops here: one request, before any state or decoding
        run = _Run(plist, out_dir, client, opt, progress or Progress(), executor)
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    return run.execute()
