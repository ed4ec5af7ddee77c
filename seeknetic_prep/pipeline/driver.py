"""The folder run: every window of every file embedded and tagged exactly once, resumably.

One-way stages joined by bounded queues, each in a module of its own::

    discover          paths                        (:mod:`.discover`, sorted biggest first)
    plan + decode     path -> plan -> windows      (an engine of :mod:`.executors`)
    ledger            what is left, exactly once   (:mod:`.ledger`, over :mod:`seeknetic_prep.state`)
    upload + submit   body -> r2 keys -> job       (:mod:`.upload`, threads)
    poll              request_id -> result         (:mod:`.poll`, threads)
    results           the run's finished rows      (:func:`~seeknetic_prep.results.finalize.finalize_run`)

This module only wires them: :class:`_Run` feeds the engine (files are probed ahead of the
decoders, so progress totals are known early), hands each event to :class:`~.route.Router`
(the ledger first, then the next stage), and decides when the run is over. Windows stream out
of the decoders one by one; :meth:`~.upload.UploadStage.put` blocks while the upload queue is
full, and an engine does not run ahead of a driver that stops pulling, so memory stays flat for
a folder of any size.

A stop (Ctrl-C or SIGTERM, a 401, spent quota, an API gone for good, a stage thread that died
by an unexpected error) is a flag the driver checks: the state is committed step by step, so
stopping is just ending the workers, writing the results of what finished, and returning.
Further Ctrl-Cs while that happens are ignored, so the ending is never cut short; it is bounded
in time, so nothing needs a second one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from seeknetic_prep.api.client import Client
from seeknetic_prep.api.pacing import ByteBucket, mbps_to_bytes
from seeknetic_prep.errors import (
    AuthenticationError,
    EngineLostError,
    QuotaExceededError,
    StateError,
    StopReason,
    UnreachableError,
)
from seeknetic_prep.executors import Executor, PlanTask, make_executor
from seeknetic_prep.executors.registry import engine
from seeknetic_prep.pipeline.gone import sweep_gone
from seeknetic_prep.pipeline.inputs import file_size, find_videos
from seeknetic_prep.pipeline.ledger import Ledger
from seeknetic_prep.pipeline.poll import PollStage
from seeknetic_prep.pipeline.route import Router, Stopping
from seeknetic_prep.pipeline.spec import Progress, RunOptions, RunSummary, pin_settings
from seeknetic_prep.pipeline.tally import Tally, Totals
from seeknetic_prep.pipeline.tasks import DecodeTask, retry_request_id
from seeknetic_prep.pipeline.upload import UploadStage
from seeknetic_prep.results.finalize import finalize_run
from seeknetic_prep.sources import Found, client_modules, is_url, redact
from seeknetic_prep.state.store import Store
from seeknetic_prep.state.thumbs import ThumbStore
from seeknetic_prep.util.procs import preload_also

__all__ = ["Progress", "RunOptions", "RunSummary", "run_folder"]

class _Run:
    def __init__(self, found: Sequence[Found], out: Path, client: Client, options: RunOptions,
                 progress: Progress, executor: Executor) -> None:
        self.found = found
        self.client = client
        self.opt = options
        self.progress = progress
        self.executor = executor
        self.summary = RunSummary(out=out, results_path=out / "parts")
        self.store = Store(out / "state.sqlite")
        self.thumbs = ThumbStore(out)
        self.tally = Tally(self.summary, progress)
        self.ledger = Ledger(self.store, services=options.services, record=self.tally.apply)
        self.stop = threading.Event()
        self.no_submit = threading.Event()
        self.lock = threading.Lock()
        self.interrupts = 0
        self.run_id = 0
        self.beat = 0.0
        self.polls = PollStage(client, self.ledger, threads=options.poll_threads,
                               stop=self.stop, halt=self.halt, poll_s=options.poll_s,
                               max_poll_s=options.max_poll_s, job_timeout_s=options.job_timeout_s)
        self.uploads = UploadStage(client, self.ledger, threads=options.upload_threads, stop=self.stop,
                                   no_submit=self.no_submit, poll=self.polls.add, halt=self.halt,
                                   unreachable_after_s=options.unreachable_after_s,
                                   max_jobs=options.max_jobs, max_uploads=options.max_uploads)
        client.on_event = lambda kind, detail: _api_event(progress, kind, detail)
        if client.link is not None:
            progress.upload_link(client.link)
        self.totals = Totals(progress)
        self.router = Router(store=self.store, ledger=self.ledger, totals=self.totals, uploads=self.uploads,
                             polls=self.polls, thumbs=self.thumbs, options=options,
                             listed={p: (size, tag) for p, size, tag in found if size is not None})
        self.backend_gone: Callable[[], str | None] | None = None
        self.inputs: Sequence[str] = ()  # the paths as given: what is gone is judged under them

    # -------------------------------------------------------------- stopping

    def halt(self, reason: StopReason | str, message: str) -> None:
        """Stop the run for ``reason``; the most serious reason decides the exit code."""
        reason = StopReason(reason)
        with self.lock:
            if self.summary.stopped_by is None or reason.rank > self.summary.stopped_by.rank:
                self.summary.stopped_by = reason
                self.summary.stop_message = message
        self.stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.halt(StopReason.INTERRUPT, "interrupted")
        elif self.interrupts == 2:
            os.write(sys.stderr.fileno(), b"seeknetic-prep: already stopping, saving state (a moment)\n")

    def _check(self) -> None:
        if self.stop.is_set():
            raise Stopping
        if self.backend_gone is not None and (gone := self.backend_gone()):
            self.halt(StopReason.BACKEND_GONE, gone)
            raise Stopping
        now = time.monotonic()
        since = self.client.failing_since
        if since is not None and now - since > self.opt.unreachable_after_s:
            self.halt(StopReason.UNREACHABLE, f"every call failed for {now - since:.0f} s")
            raise Stopping
        if now - self.beat > 2.0:  # so `status` has throughput even after a kill -9
            self.beat = now
            self.store.update_run(self.run_id, windows_decoded=self.summary.windows_decoded,
                                  jobs_completed=self.tally.completed_now)

    # -------------------------------------------------------------- main

    def execute(self) -> RunSummary:
        started = time.monotonic()
        with _signals_to(self._on_signal), self.client.cancelled_by(self.stop):  # a stop ends every wait
            try:
                self._execute()
            finally:
                self.client.on_event = None
                self.summary.elapsed_s = time.monotonic() - started
                self._close_out()
        return self.summary

    def _execute(self) -> None:
        try:
            self.run_id = self.store.start_run()
            self.summary.files_gone = sweep_gone(
                self.store, self.inputs, [p for p, _, _ in self.found], extensions=self.opt.extensions,
                unlisted=[p for p, n, _ in self.found if n is None and is_url(p)])
            if self.opt.retry_failed:
                self.store.retry_failed(retry_request_id)
            self._drive()
        except AuthenticationError as exc:
            self.halt(StopReason.AUTH, str(exc))
        except QuotaExceededError as exc:
            self.halt(StopReason.QUOTA, str(exc))
        except EngineLostError as exc:  # its files stay as they were: the next run decodes them
            self.halt(StopReason.BACKEND_GONE, str(exc))
        except KeyboardInterrupt:  # a Ctrl-C before our handler was in place
            self.halt(StopReason.INTERRUPT, "interrupted")
        except Stopping:
            pass
        finally:
            self.stop.set()
            self.executor.close()
            self.uploads.join(timeout=3.0)
            self.polls.join(timeout=3.0)

    def _close_out(self) -> None:
        self.ledger.close_counts()
        try:
            if self.run_id:
                self.store.update_run(
                    self.run_id, windows_decoded=self.summary.windows_decoded,
                    jobs_completed=self.tally.completed_now,
                    outcome=self.summary.stopped_by.value if self.summary.stopped_by else "finished",
                )
            # The run's own Parquet part (and those of killed runs), and search sees its windows.
            part = finalize_run(self.store, self.summary.out, self.run_id, services=self.opt.services)
            self.summary.results_path = part or self.summary.out / "parts"
        finally:
            self.store.close()
            with contextlib.suppress(StateError):  # see Router.keep_thumbs
                self.thumbs.close()

    def _drive(self) -> None:
        sized = sorted(((file_size(Path(p)) if n is None else n, p) for p, n, _ in self.found), reverse=True)
        # Biggest first, as a scheduler of unequal jobs should: the long file no longer starts
        # last and runs alone on one worker while the others idle.
        found = [p for _, p in sized]
        self.totals.found({p: n for n, p in sized})
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
                    if not self.router.skip_known(path):
                        ex.submit(PlanTask(path, listed=self.router.listed.get(path)))
                elif backlog:
                    task = backlog.popleft()
                    if self.ledger.is_dead(task.fingerprint):
                        continue
                    if task.path not in started:
                        started.add(task.path)
                        self.progress.file_started(redact(task.path))
                    ex.submit(task)
                else:
                    break
            if ex.in_flight == 0:
                if self.uploads.busy == 0 and self.polls.busy == 0:
                    if self.no_submit.is_set():
                        self.halt(self.uploads.quota_reason, self.uploads.quota_message or "quota spent")
                        raise Stopping
                    if not files and not backlog:
                        return  # units still pending (none here normally) wait for the next run
                time.sleep(0.05)
                continue
            for event in ex.events(timeout=0.1):
                self.router.route(event, backlog)


def _api_event(progress: Progress, kind: str, detail: str) -> None:
    """An event of the client's retry engine, to the progress: its kind, and for a retry why
    (``the link stalled; try 2 in 0.5 s`` -> ``the link stalled``; ``POST /x: 503 ...`` ->
    ``HTTP 503``)."""
    progress.api_event(kind)
    if kind == "retry":
        head = detail.split(";", 1)[0]
        status = re.search(r": (\d{3})\b", head)
        progress.api_retry(f"HTTP {status.group(1)}" if status else head.strip()[:40])


@contextlib.contextmanager
def _signals_to(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` within the block (only the main thread may set
    handlers: a run in another thread keeps the process's), then back to what they were."""
    restore: list[tuple[int, Any]] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (int(signal.SIGINT), int(signal.SIGTERM)):
            restore.append((sig, signal.signal(sig, handler)))
    try:
        yield
    finally:
        for sig, old in restore:
            signal.signal(sig, old)


def run_folder(
    paths: Iterable[str | Path],
    *,
    out: str | Path,
    client: Client,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    backend_gone: Callable[[], str | None] | None = None,
) -> RunSummary:
    """Embed and tag every window of every video under ``paths``; resumable from ``out``.

    Args:
        paths: files and folders (folders are walked recursively), and URLs (``s3://``,
            ``gs://``, ``az://``, ``https://``: prefixes are listed recursively); see
            :mod:`seeknetic_prep.sources`.
        out: output folder: ``state.sqlite``, ``parts/`` (the Parquet results) and ``search/``.
        client: the API client (its key is checked first, with one cheap request). A run
            that stops early cancels it (its waits and retries give up).
        options: workers, uploaders, services, ...
        progress: callbacks; none by default.
        executor: the engine that plans and decodes; default ``options.executor``'s (the
            local process pool of ``options.workers`` processes). The run closes it.
        backend_gone: asked a few times a second; a message means the API's server is gone
            for good (``run --local``'s emulator child died): the run stops at once with
            ``stopped_by == "backend_gone"`` (exit 1, state kept) instead of retrying for
            ``unreachable_after_s``.

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
    opt = options or RunOptions()
    inputs = [str(p) for p in paths]
    found = find_videos(inputs, opt.extensions)
    preload_also(client_modules(p for p, _, _ in found))  # a store's client: once, not per worker
    # The engine starts now, so its workers' start-up overlaps the key check.
    if executor is None:  # the engine's nodes get their share of the one --qps budget
        _, node_qps = engine(opt.executor).share_qps(opt.qps)
        executor = make_executor(opt.executor, opt, client=client.worker_config(), node_qps=node_qps)
    with _upload_cap(client, executor, opt):
        return _checked_run(found, out_dir, client, opt, progress, executor, backend_gone, inputs)


@contextlib.contextmanager
def _upload_cap(client: Client, executor: Executor, opt: RunOptions) -> Iterator[None]:
    """One ``--max-upload-mbps`` for the run: the engine's shared cap if its nodes upload, else
    the driver's; the client's own cap is back afterwards (one client can serve many runs)."""
    cap = executor.upload_bandwidth or (
        ByteBucket(mbps_to_bytes(opt.max_upload_mbps)) if opt.max_upload_mbps else None)
    if cap is None:
        yield
        return
    try:
        uncapped = client.limit_upload(cap)
    except BaseException:  # a client whose transport cannot pace
        executor.close()
        raise
    try:
        yield
    finally:
        client.limit_upload(uncapped)


def _checked_run(found: list[Found], out_dir: Path, client: Client, opt: RunOptions,
                 progress: Progress | None, executor: Executor,
                 backend_gone: Callable[[], str | None] | None, inputs: list[str]) -> RunSummary:
    """The key check, then the run (the engine closed if the check fails)."""
    try:
        try:
            client.check_auth()  # a wrong key stops here: one request, before any state or decoding
        except UnreachableError:
            if backend_gone is not None and (gone := backend_gone()):  # say why, not "cannot reach"
                raise UnreachableError(f"{gone} before it answered (its message is above); nothing "
                                       f"was done", request_id=None) from None
            raise
        pin_settings(out_dir, opt)
        run = _Run(found, out_dir, client, opt, progress or Progress(), executor)
        run.backend_gone = backend_gone
        run.inputs = inputs
    except BaseException:
        executor.close()
        raise
    return run.execute()
