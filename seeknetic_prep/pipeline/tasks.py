"""The plain values a run passes between its stages and engines: what a file's plan is, what a
task asks for, what a decoded window carries, and the request ids of units.

Light on purpose (no PyAV, no SQLite): the driver, the ledger and every engine import these, and
a value must pickle unchanged to a worker process or a Ray node. Tasks carry their work, as Ray
Data's ``ReadTask`` does: an engine calls ``task.run(send)`` (or iterates ``task.messages()``)
and never dispatches on the task's type; the work itself is in
:mod:`seeknetic_prep.pipeline.worker`, imported by the task when it runs, on the worker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seeknetic_prep.decode.hw import DecodeMode
from seeknetic_prep.decode.profile import ResizeMode, Service, Window
from seeknetic_prep.errors import MediaError, SeekneticPrepError
from seeknetic_prep.pipeline.payloads import request_id_for
from seeknetic_prep.util.ranges import merged

if TYPE_CHECKING:
    from seeknetic_prep.decode.media import MediaInfo

__all__ = [
    "ByteLayout",
    "DecodeTask",
    "EncodedWindow",
    "FileEstimate",
    "FilePlan",
    "Message",
    "PlanTask",
    "is_environmental",
    "retry_request_id",
    "unit_request_id",
]


def unit_request_id(fingerprint: str, window: tuple[int, int, int], service: Service, *,
                    resize: ResizeMode = "crop") -> str:
    """The first request id of one unit: :func:`seeknetic_prep.pipeline.payloads.request_id_for` (the
    ids ``prep`` writes too, a non-default resize included); see :func:`retry_request_id`."""
    return request_id_for(fingerprint, Window(*window), service, resize)


def retry_request_id(unit: Any, attempt: int) -> str:
    """The request id of a ``--retry-failed`` attempt of a stored unit: its first id (whatever
    resize made it) with ``-r<attempt>``, because a job id is the server's forever and a
    retried unit needs a new one."""
    return re.sub(r"-r\d+$", "", unit.request_id) + f"-r{attempt}"


Spans = tuple[tuple[int, int], ...]
"""Byte ranges ``[start, end)`` of a file, sorted and disjoint."""


@dataclass(frozen=True)
class ByteLayout:
    """Where an object's bytes lie for its decode tasks, as its plan found them (objects in a
    bucket only: on a disk a read costs no round trip). ``opening``: what opening its container
    reads (the header, the index, the first packets FFmpeg looks at), which a task fetches all
    at once instead of one miss after another; ``windows``: each window's packets by window
    index (:func:`~seeknetic_prep.decode.spans.window_spans`), so a task knows where its
    packets lie without opening the container once more to ask its index."""

    opening: Spans = ()
    windows: tuple[tuple[int, Spans], ...] = ()

    def spans_of(self, indexes: Iterable[int]) -> Spans:
        """The byte spans of the windows ``indexes``, sorted, touching ones joined."""
        by_index = dict(self.windows)
        return tuple(merged(span for k in indexes for span in by_index.get(k, ())))


@dataclass(frozen=True)
class FilePlan:
    path: str
    fingerprint: str
    size: int
    duration_ms: int
    windows: tuple[tuple[int, int, int], ...]  # (index, start_ms, end_ms)
    mtime_ns: int = 0  # from the stat taken before fingerprinting: a later change is seen
    inode: int = 0
    info: MediaInfo | None = None  # the probe, handed to the decode tasks (not probed twice)
    layout: ByteLayout | None = None  # an object's, for its tasks' range requests


@dataclass(frozen=True)
class FileEstimate:
    """What ``plan`` learns of a file without decoding it: its ``stat``, its duration as its
    container's header gives it (``None`` when it cannot be used: ``error`` says why, in the
    words a run would use), and its fingerprint when it was asked for."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    duration_ms: int | None
    fingerprint: str | None = None
    error: str | None = None


# ("planned", FilePlan) | ("window", EncodedWindow) | ("done", None) | ("failed", our error)
Message = tuple[str, Any]


class _Task:
    """What every task does for an engine: yield its messages, our errors as ``failed``."""

    def messages(self) -> Iterator[Message]:
        raise NotImplementedError

    def run(self, send: Callable[[Message], None]) -> None:
        """Do the task here, calling ``send`` with each message as it is ready (a window as
        soon as it is decoded). Never raises our errors: they are the task's last message."""
        for message in self.messages():
            send(message)


@dataclass(frozen=True)
class PlanTask(_Task):
    """Fingerprint and probe one file: ``("planned", FilePlan)`` or ``("failed", error)``."""

    path: str
    listed: tuple[int, int] | None = None
    """A URL's size and version tag number as its listing gave them: planned without asking again."""

    def messages(self) -> Iterator[Message]:
        from seeknetic_prep.pipeline import worker  # PyAV: loaded where tasks run, not by the driver

        try:
            plan = worker.plan_file(self.path, listed=self.listed)
        except SeekneticPrepError as exc:  # ours pickle with their type and fields
            yield "failed", exc
            return
        yield "planned", plan


@dataclass(frozen=True)
class DecodeTask(_Task):
    """Decode some windows of one file in one pass: a ``("window", EncodedWindow)`` message for
    each as soon as it is decoded, then ``("done", None)``, or ``("failed", error)``."""

    path: str
    fingerprint: str
    windows: tuple[tuple[int, int, int], ...]
    request_ids: tuple[tuple[int, Service, str], ...]  # (window index, service, request_id)
    resize: ResizeMode = "crop"
    decode: DecodeMode = "auto"
    info: MediaInfo | None = None  # the plan's probe: the decode opens the file, probes no more
    opening: Spans = ()  # an object's bytes that opening it reads: fetched at once
    spans: Spans | None = None  # an object's bytes these windows read (None: not known)

    def messages(self) -> Iterator[Message]:
        from seeknetic_prep.pipeline import worker  # PyAV: loaded where tasks run, not by the driver

        try:
            for window in worker.encode_windows(self):
                yield "window", window
        except SeekneticPrepError as exc:
            yield "failed", exc
            return
        yield "done", None


@dataclass(frozen=True)
class EncodedWindow:
    """One decoded window, ready for the upload stage: its upload ``bodies`` (service,
    request_id, JSON bytes) or, when the engine uploaded it where it was decoded, ``uploaded``
    (service, request_id, r2 keys)."""

    index: int
    start_ms: int
    end_ms: int
    frame_times_ms: tuple[float, ...]
    bodies: tuple[tuple[str, str, bytes], ...]
    uploaded: tuple[tuple[str, str, dict[str, str]], ...] = ()
    thumbs: bytes = b""  # three small JPEGs of its frames, for the report (state.thumbs)
    decoder: str = "cpu"  # cpu or cuda: what decoded it (the results' per-file column)

    @property
    def wanted(self) -> bool:
        """Whether any unit needs this window (the rest of a task is only decoded along)."""
        return bool(self.bodies or self.uploaded)


def is_environmental(error: Exception) -> bool:
    """Whether a file's failure depends on the machine rather than on its bytes (missing,
    unreadable, not a regular file right now): such a file is tried again by the next run,
    while a file whose content is bad is not, unless it changed."""
    cause = getattr(error, "cause", "")
    return isinstance(error, MediaError) and str(cause).startswith(("missing", "unreadable", "not a regular"))
