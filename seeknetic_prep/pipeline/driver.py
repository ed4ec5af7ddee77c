"""The folder run: every window of every file embedded and tagged exactly once, resumably.

One-way stages joined by bounded queues, each in a module of its own::

    discover          paths                        (:mod:`.discover`, sorted biggest first)
    plan + decode     path -> plan -> windows      (an engine of :mod:`.executors`)
    ledger            what is left, exactly once   (:mod:`.ledger`, over :mod:`.store`)
    upload + submit   body -> r2 keys -> job       (:mod:`.uploading`, threads)
    poll              request_id -> result         (:mod:`.polling`, threads)
    results           the run's finished rows      (:func:`~seeknetic_prep.results.finalize.finalize_run`)

This module only wires them: :class:`_Run` feeds the engine (files are probed ahead of the
decoders, so progress totals are known early), routes each event to the ledger and the next
stage, and decides when the run is over. Windows stream out of the decoders one by one;
:meth:`~.uploading.UploadStage.put` blocks while the upload queue is full, and an engine does
not run ahead of a driver that stops pulling, so memory stays flat for a folder of any size.

A stop (Ctrl-C or SIGTERM, a 401, spent quota, an API gone for good) is a flag the driver
checks: the state is committed step by step, so stopping is just ending the workers, writing
the results of what finished, and returning. Further Ctrl-Cs while that happens are ignored,
so the ending is never cut short; it is bounded in time, so nothing needs a second one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from seeknetic_prep.api.client import Client
from seeknetic_prep.errors import AuthenticationError, InvalidArgumentError, QuotaExceededError
from seeknetic_prep.executors import (
    Event,
    Executor,
    Planned,
    PlanTask,
    TaskDone,
    TaskFailed,
    WindowReady,
    make_local_executor,
)
from seeknetic_prep.pipeline.discover import count_files, discover
from seeknetic_prep.pipeline.ledger import Ledger, Work
from seeknetic_prep.pipeline.poll import PollStage
from seeknetic_prep.pipeline.spec import Progress, RunOptions, RunSummary
from seeknetic_prep.pipeline.tasks import DecodeTask, is_environmental, retry_request_id
from seeknetic_prep.pipeline.upload import UploadStage
from seeknetic_prep.results.finalize import finalize_run
from seeknetic_prep.state.store import Store

__all__ = ["Progress", "RunOptions", "RunSummary", "run_folder"]

_RANK = {"auth": 4, "interrupt": 3, "quota": 2, "unreachable": 1}


class _Stop(Exception):
    pass


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # planning reports why


class _Run:
    def __init__(self, found: Sequence[Path], out: Path, client: Client, options: RunOptions,
                 progress: Progress, executor: Executor) -> None:
        self.found = found
        self.client = client
        self.opt = options
        self.progress = progress
        self.executor = executor
        self.summary = RunSummary(out=out, results_path=out / "parts")
        self.store = Store(out / "state.sqlite")
        self.ledger = Ledger(self.store, self.summary, progress, services=options.services)
        self.stop = threading.Event()
        self.no_submit = threading.Event()
        self.lock = threading.Lock()
        self.interrupts = 0
        self.run_id = 0
        self.beat = 0.0
        self.polls = PollStage(client, self.ledger, threads=max(1, options.uploaders // 2),
                               stop=self.stop, halt=self.halt, poll_s=options.poll_s,
                               max_poll_s=options.max_poll_s, job_timeout_s=options.job_timeout_s)
        self.uploads = UploadStage(client, self.ledger, threads=options.uploaders, stop=self.stop,
                                   no_submit=self.no_submit, poll=self.polls.add, halt=self.halt,
                                   unreachable_after_s=options.unreachable_after_s)
        client.on_event = lambda kind, _detail: progress.api_event(kind)
        self.files_total = 0
        self.files_planned = 0
        self.bytes_total = 0
        self.bytes_planned = 0
        self.sizes: dict[str, int] = {}
        self.jobs_planned = 0

    # -------------------------------------------------------------- stopping

    def halt(self, reason: str, message: str) -> None:
        """Stop the run for ``reason``; the most serious reason decides the exit code."""
        with self.lock:
            if _RANK[reason] > _RANK.get(self.summary.stopped_by or "", 0):
                self.summary.stopped_by = reason
                self.summary.stop_message = message
        self.stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.halt("interrupt", "interrupted")
        elif self.interrupts == 2:
            os.write(sys.stderr.fileno(), b"seeknetic-prep: already stopping, saving state (a moment)\n")

    def _check(self) -> None:
        if self.stop.is_set():
            raise _Stop
        now = time.monotonic()
        since = self.client.failing_since
        if since is not None and now - since > self.opt.unreachable_after_s:
            self.halt("unreachable", f"every call failed for {now - since:.0f} s")
            raise _Stop
        if now - self.beat > 2.0:  # so `status` has throughput even after a kill -9
            self.beat = now
            self.store.update_run(self.run_id, windows_decoded=self.ledger.decoded,
                                  jobs_completed=self.ledger.completed_now)

    # -------------------------------------------------------------- main

    def execute(self) -> RunSummary:
        started = time.monotonic()
        restore: list[tuple[int, Any]] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (int(signal.SIGINT), int(signal.SIGTERM)):
                restore.append((sig, signal.signal(sig, self._on_signal)))
        cancel = self.client.cancelled_by(self.stop)  # a stop ends every wait and retry at once
        cancel.__enter__()
        try:
            self.run_id = self.store.start_run()
            if self.opt.retry_failed:
                self.store.retry_failed(retry_request_id)
            self._drive()
        except AuthenticationError as exc:
            self.halt("auth", str(exc))
        except QuotaExceededError as exc:
            self.halt("quota", str(exc))
        except KeyboardInterrupt:  # a Ctrl-C before our handler was in place
            self.halt("interrupt", "interrupted")
        except _Stop:
            pass
        finally:
            self.stop.set()
            self.executor.close()
            self.uploads.join(timeout=3.0)
            self.polls.join(timeout=3.0)
            cancel.__exit__(None, None, None)
            self.client.on_event = None
            self.summary.elapsed_s = time.monotonic() - started
            try:
                self._close_out()
            finally:
                for sig, old in restore:
                    signal.signal(sig, old)
        return self.summary

    def _close_out(self) -> None:
        self.ledger.close_counts()
        try:
            if self.run_id:
                self.store.update_run(
                    self.run_id, windows_decoded=self.ledger.decoded,
                    jobs_completed=self.ledger.completed_now,
                    outcome=self.summary.stopped_by or "finished",
                )
            # The run's own Parquet part (and those of killed runs), and search sees its windows.
            part = finalize_run(self.store, self.summary.out, self.run_id, services=self.opt.services)
            self.summary.results_path = part or self.summary.out / "parts"
        finally:
            self.store.close()

    def _drive(self) -> None:
        sized = sorted(((_size(p), str(p)) for p in self.found), reverse=True)
        # Biggest first, as a scheduler of unequal jobs should: the long file no longer starts
        # last and runs alone on one worker while the others idle.
        found = [p for _, p in sized]
        self.sizes = {p: n for n, p in sized}
        self.bytes_total = sum(self.sizes.values())
        self.files_total = len(found)
        self.progress.files_found(len(found))
        files = deque(found)
        backlog: deque[DecodeTask] = deque()
        started: set[str] = set()
        ex = self.executor
        while True:
            self._check()
            while ex.in_flight < ex.capacity and not self.no_submit.is_set():
                if files and len(backlog) < self.opt.plan_ahead:
                    path = files.popleft()
                    if not self._skip_known(path):
                        ex.submit(PlanTask(path))
                elif backlog:
                    task = backlog.popleft()
                    if self.ledger.is_dead(task.fingerprint):
                        continue
                    if task.path not in started:
                        started.add(task.path)
                        self.progress.file_started(task.path)
                    ex.submit(task)
                else:
                    break
            if ex.in_flight == 0:
                if self.uploads.busy == 0 and self.polls.busy == 0:
                    if self.no_submit.is_set():
                        self.halt("quota", self.uploads.quota_message or "quota spent")
                        raise _Stop
                    if not files and not backlog:
                        return  # units still pending (none here normally) wait for the next run
                time.sleep(0.05)
                continue
            for event in ex.events(timeout=0.1):
                self._route(event, backlog)

    def _skip_known(self, path: str) -> bool:
        """A file whose path, size, mtime and inode match a finished row is counted from the
        state with one indexed lookup: no fingerprint, no probe (a no-op resume stays cheap)."""
        try:
            st = os.stat(path)
        except OSError:
            return False  # planning says why
        row = self.store.known_file(path, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino,
                                    services=self.opt.services)
        if row is None:
            return False
        self.ledger.known(path, row)
        self._probed(path)
        return True

    def _route(self, event: Event, backlog: deque[DecodeTask]) -> None:
        if isinstance(event, WindowReady):
            window, fp = event.window, event.task.fingerprint
            if window.wanted:
                self.ledger.window_decoded()
            for service, rid, body in window.bodies:
                if self.ledger.claim(rid):
                    self._put(Work(rid, service, fp, body=body, frame_times_ms=window.frame_times_ms,
                                   lookup=self.ledger.needs_lookup(rid)))
            for service, rid, keys in window.uploaded:
                if self.ledger.claim(rid):
                    self.ledger.uploaded(rid, keys, window.frame_times_ms)
                    self._put(Work(rid, service, fp, r2_keys=keys, lookup=self.ledger.needs_lookup(rid)))
        elif isinstance(event, Planned):
            admission = self.ledger.admit(event.task.path, event.plan, resize=self.opt.resize,
                                          windows_per_task=self.opt.windows_per_task,
                                          decode=self.opt.decode)
            backlog.extend(admission.tasks)
            for work in admission.submit:
                self._put(work)
            for rid in admission.poll:
                self.polls.add(rid)
            self.jobs_planned += sum(len(t.request_ids) for t in admission.tasks)
            self.jobs_planned += len(admission.submit) + len(admission.poll)
            self._probed(event.task.path)
        elif isinstance(event, TaskFailed):
            task = event.task
            if isinstance(task, PlanTask):
                self.ledger.file_failed(task.path, str(event.error))
                self._probed(task.path)
            else:
                self.ledger.content_failed(task.fingerprint, str(event.error),
                                           environmental=is_environmental(event.error))
        else:
            assert isinstance(event, TaskDone)

    def _probed(self, path: str) -> None:
        """One more file is accounted for (probed, failed, or known from the state): update the
        progress totals, estimated by bytes until every file is."""
        self.files_planned += 1
        self.bytes_planned += self.sizes.get(path, 0)
        exact = self.files_planned >= self.files_total
        jobs = self.jobs_planned
        if not exact and self.bytes_planned:  # windows scale with bytes far better than with files
            jobs = round(jobs * self.bytes_total / self.bytes_planned)
        self.progress.totals(files=self.files_total, jobs=jobs, exact=exact)

    def _put(self, work: Work) -> None:
        if not self.uploads.put(work):
            raise _Stop


def _settled(out: Path, opt: RunOptions) -> None:
    """Fix the settings that change what is uploaded (the resize mode) for ``out``, once.

    Units are named by content and window; a second run on the same folder with another resize
    would find them done with the other pictures. Refuse it instead, in one line.
    """
    path = out / "settings.json"
    want = {"resize": opt.resize}
    try:
        have = json.loads(path.read_text())
    except FileNotFoundError:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(want) + "\n")
        return
    except ValueError:
        have = {}
    if have.get("resize", "crop") != opt.resize:
        raise InvalidArgumentError(
            f"Invalid --resize {opt.resize}: {out} was made with --resize {have.get('resize')}; "
            "use that, or another --out.")


def run_folder(
    paths: Iterable[str | Path],
    *,
    out: str | Path,
    client: Client,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> RunSummary:
    """Embed and tag every window of every video under ``paths``; resumable from ``out``.

    Args:
        paths: files and folders (folders are walked recursively).
        out: output folder: ``state.sqlite`` and ``results.jsonl``.
        client: the API client (its key is checked first, with one cheap request). A run
            that stops early cancels it (its waits and retries give up).
        options: workers, uploaders, services, ...
        progress: callbacks; none by default.
        executor: the engine that plans and decodes; default the local process pool of
            ``options.workers`` processes. The run closes it.

    Returns:
        The summary; ``summary.exit_code`` is what the CLI exits with. Ctrl-C and SIGTERM
        (in the main thread) stop the run with its state kept and ``stopped_by ==
        "interrupt"``.

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
        if not os.path.lexists(p):
            raise InvalidArgumentError(f"Invalid path {str(p)!r}: no such file or folder.")
    opt = options or RunOptions()
    found = list(discover(plist, extensions=opt.extensions))  # paths only: small
    if not found:
        others = count_files(plist)
        looked = ", ".join(sorted(opt.extensions)[:6]) + (", ..." if len(opt.extensions) > 6 else "")
        raise InvalidArgumentError(
            f"no video files under {', '.join(str(p) for p in plist)} (looked for {looked}); "
            f"{others} other file(s) skipped. Use --extensions to pick up other names.")
    # The engine starts now, so its workers' start-up overlaps the key check.
    engine = executor or make_local_executor(opt.worker_count, opt.gpu_worker_count)
    try:
        client.check_auth()  # a wrong key stops here: one request, before any state or decoding
        _settled(out_dir, opt)
        run = _Run(found, out_dir, client, opt, progress or Progress(), engine)
    except BaseException:
        engine.close()
        raise
    return run.execute()
