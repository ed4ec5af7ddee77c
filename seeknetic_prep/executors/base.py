"""The decode seam: one small, streaming interface that every engine implements.

A run hands an :class:`Executor` two kinds of task, both plain picklable values:

* :class:`PlanTask` (a path) -> one :class:`Planned` event (fingerprint, duration, windows);
* :class:`~seeknetic_prep.pipeline.tasks.DecodeTask` (a path and some windows) -> one
  :class:`WindowReady` event per window, *as soon as that window is decoded*, then
  :class:`TaskDone`.

Either can end in :class:`TaskFailed` instead, carrying our own error type (a
:class:`~seeknetic_prep.errors.MediaError` from a bad file) and whether the worker itself died.
Modelled on :class:`concurrent.futures.Executor` (``submit``/``shutdown``) but narrower and
streaming: results are pulled with :meth:`Executor.events`, which is also the backpressure — an
engine must not run ahead of a caller that stops pulling by more than a bounded number of
windows. Engines never touch the state database and never submit a job: exactly-once lives in
:mod:`seeknetic_prep.pipeline.ledger`, whatever runs the decoding. An engine may upload a window itself
(from the machine that decoded it) and hand back its r2 keys instead of its bodies; uploads are
idempotent, submissions are not, so that is safe.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from seeknetic_prep.api.pacing import ByteRate
from seeknetic_prep.errors import SeekneticPrepError
from seeknetic_prep.pipeline.tasks import DecodeTask, EncodedWindow, FilePlan, PlanTask

__all__ = [
    "Event",
    "Executor",
    "PlanTask",
    "Planned",
    "Task",
    "TaskDone",
    "TaskFailed",
    "WindowReady",
    "to_event",
]


Task = PlanTask | DecodeTask


@dataclass(frozen=True)
class Planned:
    task: PlanTask
    plan: FilePlan


@dataclass(frozen=True)
class WindowReady:
    task: DecodeTask
    window: EncodedWindow


@dataclass(frozen=True)
class TaskDone:
    """Every window of a decode task was delivered."""

    task: DecodeTask


@dataclass(frozen=True)
class TaskFailed:
    """The task ended in our own error; ``crashed``: the worker process died running it
    (after the engine's own retry on a fresh worker)."""

    task: Task
    error: SeekneticPrepError
    crashed: bool = False


Event = Planned | WindowReady | TaskDone | TaskFailed


class Executor(abc.ABC):
    """Runs plan and decode tasks somewhere; streams their results back.

    ``capacity`` is how many tasks the engine wants in flight to keep its workers busy; the
    caller submits up to that many and pulls events. Every submitted task ends in exactly one
    ``Planned``, ``TaskDone`` or ``TaskFailed``. Not thread-safe: one driver thread calls it.
    """

    capacity: int = 1
    upload_bandwidth: ByteRate | None = None
    """The ``--max-upload-mbps`` cap this engine's nodes share, when they upload: the driver's
    own uploads draw from it too, so the run has one cap. None: the driver makes its own."""

    @abc.abstractmethod
    def submit(self, task: Task) -> None:
        """Queue ``task``; it starts as soon as a worker is free."""

    @abc.abstractmethod
    def events(self, timeout: float) -> list[Event]:
        """What happened since the last call; waits up to ``timeout`` seconds for something."""

    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        """Tasks submitted that have not ended yet."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop now: cancel what is queued, end the workers, leave no process behind.
        Idempotent; events not yet pulled are dropped."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_event(task: Task, kind: str, payload: object) -> Event:
    """The event for a worker's ``(kind, payload)`` message about ``task``: ``planned``,
    ``window``, ``done`` or ``failed`` (every engine's workers speak this little protocol)."""
    if kind == "planned" and isinstance(task, PlanTask) and isinstance(payload, FilePlan):
        return Planned(task, payload)
    if kind == "window" and isinstance(task, DecodeTask) and isinstance(payload, EncodedWindow):
        return WindowReady(task, payload)
    if kind == "done" and isinstance(task, DecodeTask):
        return TaskDone(task)
    if kind == "failed" and isinstance(payload, SeekneticPrepError):
        return TaskFailed(task, payload)
    raise RuntimeError(f"a decode worker sent {kind!r} about {task}:\n{payload}")
