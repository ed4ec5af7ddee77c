"""Tasks and an engine that exist only for the executor contract tests.

A module of its own (not the test module) so that decode workers can import it by name: the
local engine's fork server starts with the test process's ``sys.path``, and Ray is told to
pickle this module by value.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from seeknetic_prep.executors.base import Event, Executor, Task, to_event
from seeknetic_prep.executors.registry import EngineFactory
from seeknetic_prep.pipeline.tasks import DecodeTask


@dataclass(frozen=True)
class CrashTask(DecodeTask):
    """A decode task whose worker dies by SIGKILL before it says anything: what a segfault in
    a decoder looks like to an engine."""

    def messages(self) -> Iterator[tuple[str, Any]]:
        os.kill(os.getpid(), signal.SIGKILL)
        yield from ()


class ThreadsExecutor(Executor):
    """A small third engine: one thread runs ``task.run(send)`` for each task in turn, and at
    most two events wait for the caller (its backpressure). Registered through an entry point
    written by the test, as an installed package would register one."""

    capacity = 2

    def __init__(self) -> None:
        self._tasks: queue.Queue[Task | None] = queue.Queue()
        self._events: queue.Queue[Event] = queue.Queue(maxsize=2)
        self._count = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._count

    def submit(self, task: Task) -> None:
        with self._lock:
            self._count += 1
        self._tasks.put(task)

    def _loop(self) -> None:
        while (task := self._tasks.get()) is not None:
            def send(message: tuple[str, Any], task: Task = task) -> None:
                while not self._closed.is_set():
                    try:
                        self._events.put(to_event(task, *message), timeout=0.1)
                        return
                    except queue.Full:
                        continue
                raise SystemExit  # closed while the caller was not pulling

            try:
                task.run(send)
            except SystemExit:
                return

    def events(self, timeout: float) -> list[Event]:
        out: list[Event] = []
        try:
            out.append(self._events.get(timeout=timeout))
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            pass
        with self._lock:
            self._count -= sum(1 for e in out if type(e).__name__ != "WindowReady")
        return out

    def close(self) -> None:
        self._closed.set()
        self._tasks.put(None)
        self._thread.join(timeout=10)


class ThreadsEngine(EngineFactory):
    def create(self, spec: Any, *, client: Any, node_qps: float | None) -> Executor:
        return ThreadsExecutor()


ENGINE = ThreadsEngine()
