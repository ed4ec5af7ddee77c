"""The stage functions of a run: plain, picklable functions over plain values.

``plan_file`` (path -> fingerprint, duration, windows) and ``decode_windows`` (path + windows ->
frame times + serialized upload bodies) hold no state and touch neither the network nor the
state database, so any executor can run them: the process pool of
:mod:`seeknetic_prep.pipeline` today, an engine such as Ray later, without a rewrite. Their
errors are our own (:class:`~seeknetic_prep.errors.MediaError` and kin), which pickle with
their attributes, so a worker's error reaches the caller with its real type.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass

from .errors import MediaError

__all__ = [
    "DecodeTask",
    "EncodedWindow",
    "FilePlan",
    "decode_windows",
    "plan_file",
    "unit_request_id",
    "worker_init",
]


def unit_request_id(fingerprint: str, window: tuple[int, int, int], service: str, attempt: int = 0) -> str:
    """The request id of one unit: :func:`seeknetic_prep.payloads.request_id_for` (the ids
    ``prep`` writes too), plus ``-r<attempt>`` for a ``--retry-failed`` attempt, because a job id
    is the server's forever and a retried unit needs a new one."""
    from .payloads import request_id_for
    from .profile import Window

    rid = request_id_for(fingerprint, Window(*window), service)  # type: ignore[arg-type]
    return rid if attempt == 0 else f"{rid}-r{attempt}"


@dataclass(frozen=True)
class FilePlan:
    path: str
    fingerprint: str
    size: int
    duration_ms: int
    windows: tuple[tuple[int, int, int], ...]  # (index, start_ms, end_ms)


@dataclass(frozen=True)
class DecodeTask:
    path: str
    fingerprint: str
    windows: tuple[tuple[int, int, int], ...]
    request_ids: tuple[tuple[int, str, str], ...]  # (window index, service, request_id)
    resize: str = "crop"


@dataclass(frozen=True)
class EncodedWindow:
    index: int
    start_ms: int
    end_ms: int
    frame_times_ms: tuple[float, ...]
    bodies: tuple[tuple[str, str, bytes], ...]  # (service, request_id, JSON body)


def plan_file(path: str) -> FilePlan:
    """Fingerprint, probe and plan one file.

    Raises:
        MediaError: the file is not usable video (the message names it and the cause).
    """
    from .media import probe
    from .payloads import file_fingerprint
    from .sampling import plan_windows

    try:
        fp = file_fingerprint(path)
        size = os.path.getsize(path)
        info = probe(path)
        windows = plan_windows(int(info.duration_ms))
    except OSError as exc:
        raise MediaError(path, f"cannot read ({exc.strerror or exc}).") from exc
    return FilePlan(path, fp, size, int(info.duration_ms),
                    tuple((w.index, w.start_ms, w.end_ms) for w in windows))


def decode_windows(task: DecodeTask) -> list[EncodedWindow]:
    """Decode the task's windows in one pass and serialize each for every service asked.

    Raises:
        MediaError: decoding failed (truncated or undecodable content).
    """
    from .payloads import upload_body
    from .preprocess import iter_segments
    from .profile import Window

    wanted: dict[int, list[tuple[str, str]]] = {}
    for index, service, rid in task.request_ids:
        wanted.setdefault(index, []).append((service, rid))
    out: list[EncodedWindow] = []
    try:
        windows = [Window(*w) for w in task.windows]
        for seg in iter_segments(task.path, windows, resize=task.resize):  # type: ignore[arg-type]
            bodies = tuple(
                (service, rid,
                 json.dumps(upload_body(seg, service=service, request_id=rid)).encode())  # type: ignore[arg-type]
                for service, rid in wanted.get(seg.index, ())
            )
            out.append(EncodedWindow(seg.index, seg.start_ms, seg.end_ms,
                                     tuple(float(t) for t in seg.frame_times_ms), bodies))
    except OSError as exc:
        raise MediaError(task.path, f"cannot read ({exc.strerror or exc}).") from exc
    return out


def worker_init() -> None:
    # Ctrl-C reaches the whole process group; only the main process decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Import the decoder now, while the pool is being set up, not inside the first task.
    from . import payloads, preprocess  # noqa: F401
