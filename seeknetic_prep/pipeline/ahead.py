"""What a decode worker opens ahead for its next task while it runs this one.

A task on an object in a bucket starts with round trips: a plan reads its fingerprint's ten
ranges before its probe can begin, a decode task fetches what opening the container reads
(header, index, first packets) and the starts of its windows' spans before its first frame.
50 ms from the store that is 0.3-0.6 s a task with the worker's core idle; for a bucket of
short clips, a third of the run. The local engine hands a busy worker its next remote task
(:class:`~seeknetic_prep.executors.local.ProcessExecutor`), and the worker's inbox thread
does that I/O here while the decoder works: the task then starts from an open reader whose
blocks are here, and a plan from its fingerprint and the blocks its probe reads (where an
MP4's index says they lie: :func:`~seeknetic_prep.sources.remote.warm_probe`).

Only I/O and hashing run ahead, never PyAV: a crash of the process is still the running
task's, as the engine blames it. What fails ahead is dropped and met again by the task
itself, with the error it reports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from seeknetic_prep.pipeline.tasks import DecodeTask, PlanTask
from seeknetic_prep.sources.urls import is_url

if TYPE_CHECKING:
    from seeknetic_prep.sources.reader import RangeReader

__all__ = ["Opened", "handed", "open_ahead", "open_plan", "open_task", "take"]


@dataclass
class Opened:
    """A remote task's object, opened ahead: its reader, and for a plan its version tag and
    fingerprint."""

    path: str
    reader: RangeReader
    tag: int = 0
    fingerprint: str | None = None


_ready: Opened | None = None
"""What was opened ahead for the task running now (set by :func:`handed`)."""


def open_task(task: DecodeTask) -> RangeReader:
    """A decode task's object as its decoder reads it: its opening fetched at once, large
    requests inside its windows' spans (the plan's layout; without one, read ahead as the reads
    go)."""
    from seeknetic_prep.sources.remote import ObjectInfo, open_object  # fsspec: only for URLs

    # The plan's probe knows the size: no metadata request per task (a changed object then
    # reads short, fails as unreadable, and the next run sees its new listing and plans it again).
    known = ObjectInfo(task.path, task.info.size_bytes) if task.info is not None else None
    return open_object(task.path, known, shared=True, expect=task.spans or None, warm=task.opening)


def open_plan(url: str, listed: tuple[int, int] | None) -> tuple[RangeReader, int]:
    """A plan's object, opened for its fingerprint (no request yet), and its version tag
    number: size and tag from the listing (``listed``), else one metadata request."""
    from seeknetic_prep.sources.remote import ObjectInfo, object_info, open_for_fingerprint  # fsspec

    if listed is None:
        info = object_info(url)
        tag = info.tag_number
    else:
        size, tag = listed
        info = ObjectInfo(url, size)
    return open_for_fingerprint(url, info, shared=True), tag  # its head and tail serve the tasks after it


def open_ahead(task: object) -> Opened | None:
    """Do the first round trips of ``task`` now, if it reads an object in a store: never
    raises (what fails here, the task meets again and reports)."""
    if not isinstance(task, PlanTask | DecodeTask) or not is_url(task.path):
        return None
    try:
        if isinstance(task, DecodeTask):
            return Opened(task.path, open_task(task))
        reader, tag = open_plan(task.path, task.listed)
    except Exception:
        return None
    from seeknetic_prep.sources.remote import fingerprint_object, warm_probe

    try:
        opened = Opened(task.path, reader, tag, fingerprint_object(reader))
        warm_probe(reader)  # and what its probe reads, where the MP4's index says it lies
        return opened
    except Exception:
        reader.close()
        return None


@contextlib.contextmanager
def handed(opened: Opened | None) -> Iterator[None]:
    """Within the block, :func:`take` gives ``opened`` to the task it was opened for; what the
    task did not take is closed afterwards."""
    global _ready
    _ready = opened
    try:
        yield
    finally:
        _ready = None
        if opened is not None:
            opened.reader.close()  # closing twice is harmless: the task's ``with`` closed it too


def take(path: str) -> Opened | None:
    """What was opened ahead for the running task on ``path``, once; ``None`` if nothing was."""
    global _ready
    if _ready is None or _ready.path != path:
        return None
    found, _ready = _ready, None
    return found
