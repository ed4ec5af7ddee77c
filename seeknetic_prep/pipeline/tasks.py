"""The plain values a run passes between its stages and engines: what a file's plan is, what a
decode task asks for, what a decoded window carries, and the request ids of units.

Light on purpose (no PyAV, no SQLite): the driver, the ledger and every engine import these, and
a value must pickle unchanged to a worker process or a Ray node. The functions that do the work
over these values live in :mod:`seeknetic_prep.pipeline.worker`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seeknetic_prep.decode.profile import Window
from seeknetic_prep.errors import MediaError
from seeknetic_prep.pipeline.payloads import request_id_for

if TYPE_CHECKING:
    from seeknetic_prep.decode.media import MediaInfo

__all__ = [
    "DecodeTask",
    "EncodedWindow",
    "FilePlan",
    "is_environmental",
    "retry_request_id",
    "unit_request_id",
]


def unit_request_id(fingerprint: str, window: tuple[int, int, int], service: str, *,
                    resize: str = "crop") -> str:
    """The first request id of one unit: :func:`seeknetic_prep.pipeline.payloads.request_id_for` (the
    ids ``prep`` writes too, a non-default resize included); see :func:`retry_request_id`."""
    return request_id_for(fingerprint, Window(*window), service, resize)  # type: ignore[arg-type]


def retry_request_id(unit: Any, attempt: int) -> str:
    """The request id of a ``--retry-failed`` attempt of a stored unit: its first id (whatever
    resize made it) with ``-r<attempt>``, because a job id is the server's forever and a
    retried unit needs a new one."""
    return re.sub(r"-r\d+$", "", unit.request_id) + f"-r{attempt}"


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


@dataclass(frozen=True)
class DecodeTask:
    path: str
    fingerprint: str
    windows: tuple[tuple[int, int, int], ...]
    request_ids: tuple[tuple[int, str, str], ...]  # (window index, service, request_id)
    resize: str = "crop"
    decode: str = "auto"  # see seeknetic_prep.decode.hw: "auto", "cpu" or "cuda"
    info: MediaInfo | None = None  # the plan's probe: the decode opens the file, probes it no more


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
