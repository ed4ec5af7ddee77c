"""Engines that run the plan and decode stages: see :mod:`.base` for the interface.

``make_executor("local", spec)`` gives the default pool of ``spec.workers`` processes (0: one
thread in this process); ``make_executor("ray", spec)`` a Ray cluster's nodes. Engines come
from :mod:`.registry` (built in, or declared by an installed package as an entry point in the
``seeknetic_prep.executors`` group), all behind the same :class:`~.base.Executor`.
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
from seeknetic_prep.executors.registry import executor_names, make_executor

__all__ = [
    "Event",
    "Executor",
    "PlanTask",
    "Planned",
    "Task",
    "TaskDone",
    "TaskFailed",
    "WindowReady",
    "executor_names",
    "make_executor",
]
