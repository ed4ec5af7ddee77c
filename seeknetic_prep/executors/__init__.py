"""Engines that run the plan and decode stages: see :mod:`.base` for the interface.

``make_executor("local", workers=W)`` gives the default pool of W processes (0: one thread in
this process). Other engines (Ray) plug in behind the same :class:`~.base.Executor`.
"""

from __future__ import annotations

from seeknetic_prep.executors.base import (
    Event,
    Executor,
    Planned,
    PlanTask,
    Task,
    TaskDone,
    TaskFailed,
    WindowReady,
)

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


def make_local_executor(workers: int, gpu_workers: int = 0) -> Executor:
    """The local engine: ``workers`` CPU decode processes beside ``gpu_workers`` NVDEC ones,
    or one in-process thread when both are 0."""
    from seeknetic_prep.executors.local import InlineExecutor, ProcessExecutor

    if workers == 0 and gpu_workers == 0:
        return InlineExecutor()
    return ProcessExecutor(workers, gpu_workers=gpu_workers)
