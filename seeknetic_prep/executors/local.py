"""The engines of one machine: a pool of decode processes (the default) and one thread.

:class:`ProcessExecutor` owns its worker processes directly instead of using
``concurrent.futures.ProcessPoolExecutor``, for three reasons that matter to a long run:

* **streaming**: a worker sends each window down its own pipe as soon as it is decoded, and a
  pipe holds only a few KB, so a worker whose window is not pulled waits (backpressure reaches
  the decoders, memory stays bounded by ``workers`` windows);
* **blame**: each worker runs one task at a time and the pool knows which, so a worker that
  dies (a crash in a decoder, the OOM killer) fails only its own task; that task is tried once
  more on a fresh worker before it is reported as ``crashed``; the others carry on;
* **clean exits**: no hidden manager thread joined at interpreter exit, so any number of
  Ctrl-C ends promptly, and :meth:`close` kills every worker it started;
* **round trips ahead**: a task on an object in a bucket starts with round trips (a plan's
  fingerprint, a decode task's opening), the worker's core idle meanwhile. A busy worker is
  handed its next such task while it runs this one, and opens it ahead
  (:mod:`seeknetic_prep.pipeline.ahead`: I/O only, so a crash is still the running task's).

CPU workers are forked from a ``forkserver`` that has imported the decoding modules once; NVDEC
workers are started with ``spawn`` (CUDA breaks in a child forked from a process that touched
it; the fork server never does, but that path was measured only with ``spawn``). A spawned
worker imports numpy, PyAV and the decoder anew, ~0.3 s of CPU each: 5 CPU-seconds for 16
workers, paid at the start of every run and for every replacement of a crashed worker.
Workers ignore SIGINT: the main process decides how to stop.
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection as mpc
import os
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seeknetic_prep.api.pacing import put_unless
from seeknetic_prep.errors import MediaError
from seeknetic_prep.executors.base import Event, Executor, PlanTask, Task, TaskFailed, WindowReady, to_event
from seeknetic_prep.executors.registry import EngineFactory
from seeknetic_prep.pipeline.tasks import Message
from seeknetic_prep.sources.urls import is_url
from seeknetic_prep.util.procs import worker_context

if TYPE_CHECKING:
    from seeknetic_prep.api.client import ClientConfig
    from seeknetic_prep.pipeline.spec import RunSpec

__all__ = ["InlineExecutor", "ProcessExecutor", "decode_threads_for"]

_CRASH_RETRIES = 1


def decode_threads_for(workers: int) -> int:
    """FFmpeg threads per decoder so that ``workers`` processes fill the cores without
    oversubscribing them (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


_PRELOAD = ["seeknetic_prep.executors.local", "seeknetic_prep.pipeline.worker"]


def _worker_main(tasks: mpc.Connection, results: mpc.Connection, threads: int, gpu: bool) -> None:
    from seeknetic_prep.pipeline import ahead
    from seeknetic_prep.pipeline.worker import worker_init  # PyAV: workers only, never the driver

    worker_init(threads, gpu)
    outbox = _Outbox(results)
    inbox = _Inbox(tasks, ahead.open_ahead)
    while (item := inbox.get()) is not None:
        task, opened = item
        try:
            with ahead.handed(opened):
                task.run(outbox.put)
        except _PoolGone:
            return
        except Exception:  # a bug: surface it in the main process, with its traceback
            with contextlib.suppress(_PoolGone):
                outbox.put(("bug", traceback.format_exc()))
        finally:
            inbox.busy = False


class _Inbox:
    """A worker's tasks, read from its pipe by a thread of their own, which opens a task that
    arrives while another runs (``open_ahead``) before handing it on: the next task's first
    round trips overlap this one's decoding. ``None`` ends the worker (the pool closed it)."""

    def __init__(self, pipe: mpc.Connection, open_ahead: Callable[[Task], object]) -> None:
        self._pipe = pipe
        self._open_ahead = open_ahead
        self._queue: queue.Queue[tuple[Task, Any] | None] = queue.Queue()
        self.busy = False
        threading.Thread(target=self._read, daemon=True, name="seeknetic-inbox").start()

    def get(self) -> tuple[Task, Any] | None:
        item = self._queue.get()
        self.busy = item is not None
        return item

    def _read(self) -> None:
        while True:
            try:
                task = self._pipe.recv()
            except (EOFError, OSError):
                task = None
            if task is None:
                self._queue.put(None)
                return
            # an idle worker starts the task at once: opening it here would only race it
            waits = self.busy or not self._queue.empty()
            self._queue.put((task, self._open_ahead(task) if waits else None))


class _PoolGone(Exception):
    pass


class _Outbox:
    """A worker's messages, written to its pipe by a thread of their own.

    A window is megabytes, and the pipe takes them only as fast as the main process reads,
    which it does between its other work; written from the decoding thread, each one stalled
    the decoder (0.3 s a worker over a 48-window 2-core run). Here the decoder goes on with the
    next window while the last one drains. The queue holds one message, so a worker is at most
    one window ahead of its pipe and backpressure still reaches it. Order is kept: ``done``
    follows the task's windows.
    """

    def __init__(self, pipe: mpc.Connection) -> None:
        self._pipe = pipe
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._gone = threading.Event()
        threading.Thread(target=self._drain, daemon=True, name="seeknetic-outbox").start()

    def put(self, message: Any) -> None:
        if not put_unless(self._queue, message, self._gone, 0.5):
            raise _PoolGone

    def _drain(self) -> None:
        while True:
            message = self._queue.get()
            try:
                self._pipe.send(message)
            except (BrokenPipeError, EOFError, OSError):
                self._gone.set()  # the pool is gone: the decoding thread stops at its next put
                return


@dataclass
class _Worker:
    process: Any
    tasks: mpc.Connection
    results: mpc.Connection
    task: Task | None = None
    next: Task | None = None
    """Sent while ``task`` runs, opened ahead there: it runs next (a remote task only)."""
    gpu: bool = False
    since: float = 0.0
    """When ``task`` started."""


class ProcessExecutor(Executor):
    """``workers`` CPU decode processes, each with ``threads`` FFmpeg threads (default: cores
    split evenly), and ``gpu_workers`` more that may decode on NVDEC (``decode="auto"``; see
    :mod:`seeknetic_prep.decode.hw`), fed from the same queue. Workers start at construction, so
    their start-up overlaps whatever the caller does next (a key check, a local server's start).
    """

    def __init__(self, workers: int, *, threads: int | None = None, gpu_workers: int = 0) -> None:
        if workers < 0 or gpu_workers < 0 or workers + gpu_workers < 1:
            raise ValueError(f"Invalid workers {workers} + {gpu_workers}: need at least one.")
        self._threads = decode_threads_for(max(1, workers)) if threads is None else threads
        self._workers: list[_Worker] = [self._start(gpu=k < gpu_workers)
                                        for k in range(gpu_workers + workers)]
        self._queue: deque[Task] = deque()
        self._attempts: dict[Task, int] = {}
        self._closed = False
        self.capacity = 2 * len(self._workers)  # one running per worker, one waiting to start

    def _start(self, *, gpu: bool) -> _Worker:
        ctx = worker_context(_PRELOAD, gpu=gpu)
        task_r, task_w = ctx.Pipe(duplex=False)
        res_r, res_w = ctx.Pipe(duplex=False)
        threads = 1 if gpu else self._threads
        process = ctx.Process(target=_worker_main, args=(task_r, res_w, threads, gpu),
                                    daemon=True, name="seeknetic-decode")
        process.start()
        task_r.close()
        res_w.close()
        return _Worker(process, task_w, res_r, gpu=gpu)

    @property
    def in_flight(self) -> int:
        return len(self._queue) + sum((w.task is not None) + (w.next is not None) for w in self._workers)

    def submit(self, task: Task) -> None:
        if self._closed:
            raise RuntimeError("submit on a closed executor")
        self._queue.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        for w in self._workers:
            if not self._queue:
                return
            if w.task is None:
                task = self._queue.popleft()
                try:
                    w.tasks.send(task)
                except OSError:  # it died while idle (the OOM killer): the task never reached it
                    self._queue.appendleft(task)  # not a crash of this task: no attempt counted
                    self._replace(w)  # the fresh worker takes it at the next dispatch
                    continue
                w.task, w.since = task, time.monotonic()
        # Every worker is busy: the next remote task goes to the one busy longest, to be opened
        # there ahead (a local one waits here: a disk has no round trips to hide).
        while self._queue and is_url(self._queue[0].path):
            ready = [w for w in self._workers if w.next is None and w.task is not None]
            if not ready:
                return
            w = min(ready, key=lambda w: w.since)
            task = self._queue.popleft()
            try:
                w.tasks.send(task)
            except OSError:  # it died: the sentinel says so, and its running task is dealt with
                self._queue.appendleft(task)
                return
            w.next = task

    def events(self, timeout: float) -> list[Event]:
        self._dispatch()
        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            return []
        handles: dict[Any, _Worker] = {}
        for w in busy:
            handles[w.results] = w
            handles[w.process.sentinel] = w
        out: list[Event] = []
        for ready in mpc.wait(list(handles), timeout):
            w = handles[ready]
            if w.task is None:
                continue
            if ready is w.results:
                self._receive(w, out)
            elif not w.results.poll():  # died, and nothing it sent is left to read
                self._died(w, out)
        self._dispatch()
        return out

    def _receive(self, w: _Worker, out: list[Event]) -> None:
        task = w.task
        assert task is not None
        try:
            kind, payload = w.results.recv()
        except (EOFError, OSError):
            self._died(w, out)
            return
        if kind != "window":  # it ended: the worker goes on with its next, if it has one
            w.task, w.next, w.since = w.next, None, time.monotonic()
            self._attempts.pop(task, None)
        out.append(to_event(task, kind, payload))  # a "bug" message raises here, in the driver

    def _died(self, w: _Worker, out: list[Event]) -> None:
        task = w.task
        assert task is not None
        if w.next is not None:  # it never started: no attempt counted
            self._queue.appendleft(w.next)
        w.task = w.next = None
        code = w.process.exitcode
        self._replace(w)
        tries = self._attempts.get(task, 0)
        if tries < _CRASH_RETRIES:
            self._attempts[task] = tries + 1
            self._queue.appendleft(task)
            return
        self._attempts.pop(task, None)
        path = task.path
        what = "probing" if isinstance(task, PlanTask) else "decoding"
        out.append(TaskFailed(task, MediaError(
            path, f"the decoder process died while {what} this file (exit code {code}), twice"),
            crashed=True))

    def _replace(self, w: _Worker) -> None:
        _stop_process(w)
        fresh = self._start(gpu=w.gpu)
        w.process, w.tasks, w.results = fresh.process, fresh.tasks, fresh.results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        for w in self._workers:
            _stop_process(w)


def _stop_process(w: _Worker) -> None:
    for conn in (w.tasks, w.results):
        with contextlib.suppress(OSError):
            conn.close()
    p = w.process
    if p.is_alive():
        p.kill()  # mid-decode work has no state worth saving; the ledger has it all
    p.join(timeout=5.0)
    with contextlib.suppress(ValueError):
        p.close()


class InlineExecutor(Executor):
    """One task at a time on a thread of this process (``--workers 0``): for debugging and
    profiling, with the same streaming and the same bound (two windows waiting)."""

    capacity = 2

    def __init__(self) -> None:
        self._tasks: queue.Queue[Task | None] = queue.Queue()
        self._events: queue.Queue[Event] = queue.Queue(maxsize=2)
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bug: str | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True, name="decode-inline")
        self._thread.start()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._count

    def submit(self, task: Task) -> None:
        with self._lock:
            self._count += 1
        self._tasks.put(task)

    def _put(self, event: Event) -> None:
        if not put_unless(self._events, event, self._stop, 0.1):
            raise _Cancelled

    def _loop(self) -> None:
        while not self._stop.is_set():
            task = self._tasks.get()
            if task is None:
                return
            def send(message: Message, task: Task = task) -> None:
                self._put(to_event(task, *message))

            try:
                task.run(send)
            except _Cancelled:
                return
            except Exception:  # a bug: surface it in the driver rather than hang
                self._bug = traceback.format_exc()
                return

    def events(self, timeout: float) -> list[Event]:
        if self._bug is not None:
            raise RuntimeError(f"the decode thread hit a bug:\n{self._bug}")
        out: list[Event] = []
        try:
            out.append(self._events.get(timeout=timeout))
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            pass
        with self._lock:
            self._count -= sum(not isinstance(e, WindowReady) for e in out)
        return out

    def close(self) -> None:
        self._stop.set()
        self._tasks.put(None)
        self._thread.join(timeout=5.0)


class _Cancelled(Exception):
    pass


class LocalEngine(EngineFactory):
    """``--executor local``: ``spec.worker_count`` CPU decode processes beside
    ``spec.gpu_worker_count`` NVDEC ones, or one in-process thread when both are 0."""

    def create(self, spec: RunSpec, *, client: ClientConfig | None, node_qps: float | None) -> Executor:
        workers, gpu_workers = spec.worker_count, spec.gpu_worker_count
        if workers == 0 and gpu_workers == 0:
            return InlineExecutor()
        return ProcessExecutor(workers, gpu_workers=gpu_workers)


ENGINE = LocalEngine()
