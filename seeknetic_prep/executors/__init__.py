"""Engines that run the plan and decode stages: see :mod:`.base` for the interface.

``make_executor("local", workers=W)`` gives the default pool of W processes (0: one thread in
this process). Other engines (Ray) plug in behind the same :class:`~.base.Executor`.
"""

from __future__ import annotations

from .base import Event, Executor, Planned, PlanTask, Task, TaskDone, TaskFailed, WindowReady

__all__ = [
    "Event",
    "Executor",
    "PlanTask",
    "Planned",
    "Task",
    "TaskDone",
    "TaskFailed",
    "WindowReady",
    "make_local_executor",
]


def make_local_executor(workers: int) -> Executor:
    """The local engine: ``workers`` decode processes, or one in-process thread for 0."""
    from .local import InlineExecutor, ProcessExecutor

    return InlineExecutor() if workers == 0 else ProcessExecutor(workers)
