"""The stage functions of a run: plain, picklable functions over plain values.

``plan_file`` (path -> fingerprint, duration, windows) and ``encode_windows`` (path + windows ->
frame times + serialized upload bodies, one window at a time as decoded) hold no state and
touch neither the network nor the state database, so any engine of
:mod:`seeknetic_prep.executors` runs them unchanged (a local process pool, a thread, Ray). Their
errors are our own (:class:`~seeknetic_prep.errors.MediaError` and kin), which pickle with
their attributes, so a worker's error reaches the caller with its real type.
"""

from __future__ import annotations

import os
import re
import signal
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import MediaError, SeekneticPrepError

if TYPE_CHECKING:
    from .media import MediaInfo

__all__ = [
    "DecodeTask",
    "EncodedWindow",
    "FilePlan",
    "decode_windows",
    "encode_windows",
    "is_environmental",
    "plan_file",
    "retry_request_id",
    "unit_request_id",
    "worker_init",
]


def unit_request_id(fingerprint: str, window: tuple[int, int, int], service: str, *,
                    resize: str = "crop") -> str:
    """The first request id of one unit: :func:`seeknetic_prep.payloads.request_id_for` (the
    ids ``prep`` writes too, a non-default resize included); see :func:`retry_request_id`."""
    from .payloads import request_id_for
    from .profile import Window

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
    decode: str = "auto"  # see seeknetic_prep.hwdecode: "auto", "cpu" or "cuda"
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


def plan_file(path: str) -> FilePlan:
    """Fingerprint, probe and plan one file.

    Raises:
        MediaError: the file is not usable video (the message names it and the cause).
    """
    from .media import probe
    from .payloads import file_fingerprint
    from .sampling import plan_windows

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block; a device is no video
            raise MediaError(path, f"not a regular file ({_kind(st.st_mode)}).")
        fp = file_fingerprint(path)
        info = probe(path)
        windows = plan_windows(int(info.duration_ms))
    except FileNotFoundError as exc:
        raise MediaError(path, "missing: no such file") from exc
    except OSError as exc:
        raise MediaError(path, f"unreadable: {exc.strerror or exc}") from exc
    except SeekneticPrepError:
        raise
    except Exception as exc:
        raise _internal_error(path, exc) from exc
    return FilePlan(path, fp, st.st_size, int(info.duration_ms),
                    tuple((w.index, w.start_ms, w.end_ms) for w in windows),
                    mtime_ns=st.st_mtime_ns, inode=st.st_ino, info=info)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a plain file"


def encode_windows(task: DecodeTask) -> Iterator[EncodedWindow]:
    """Decode the task's windows in one pass; yield each, serialized for every service asked,
    as soon as it is decoded (so its upload starts while the next one decodes).

    Raises:
        MediaError: decoding failed (truncated or undecodable content); windows before the
            failure were already yielded.
    """
    from .payloads import upload_body_bytes
    from .preprocess import iter_segments
    from .profile import Window

    wanted: dict[int, list[tuple[str, str]]] = {}
    for index, service, rid in task.request_ids:
        wanted.setdefault(index, []).append((service, rid))
    try:
        windows = [Window(*w) for w in task.windows]
        for seg in iter_segments(task.path, windows, resize=task.resize,  # type: ignore[arg-type]
                                 decode=task.decode, info=task.info):  # type: ignore[arg-type]
            asked = wanted.get(seg.index, [])
            bodies = upload_body_bytes(seg, asked)  # type: ignore[arg-type]
            pairs = zip(asked, bodies, strict=True)
            yield EncodedWindow(seg.index, seg.start_ms, seg.end_ms,
                                tuple(float(t) for t in seg.frame_times_ms),
                                tuple((svc, rid, body) for (svc, rid), body in pairs))
    except FileNotFoundError as exc:
        raise MediaError(task.path, "missing: no such file") from exc
    except OSError as exc:
        raise MediaError(task.path, f"unreadable: {exc.strerror or exc}") from exc
    except SeekneticPrepError:
        raise
    except Exception as exc:
        raise _internal_error(task.path, exc) from exc


def _internal_error(path: str, exc: Exception) -> MediaError:
    """A surprise while planning or decoding one file (a bug, or a library raising what it
    should not, as PyAV's ``UnicodeDecodeError`` on a Latin-1 title did) as that file's
    failure: every engine runs the stages, so one odd file fails alone, with one line that
    names the exception, instead of stopping the run (and every rerun) with a traceback."""
    detail = " ".join(str(exc).split())
    return MediaError(path, f"internal error: {type(exc).__name__}" + (f": {detail}" if detail else ""))


def decode_windows(task: DecodeTask) -> list[EncodedWindow]:
    """:func:`encode_windows` as a list (for engines that cannot stream)."""
    return list(encode_windows(task))


def worker_init(decode_threads: int = 0, gpu: bool = True) -> None:
    """Set up a decode worker process: ``decode_threads`` FFmpeg threads per decoder (0: FFmpeg
    decides, which is every core: right for one worker, oversubscription for many); ``gpu``:
    whether ``decode="auto"`` may use NVDEC here (the CPU workers of a mixed pool may not)."""
    # Ctrl-C reaches the whole process group; only the main process decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import hwdecode, media, payloads, preprocess  # noqa: F401  (now, not in the first task)
    from .malloc import keep_freed_buffers

    keep_freed_buffers()  # each window's bodies are megabytes, freed and made again
    media.set_thread_cap(decode_threads)
    hwdecode.allow_gpu(gpu)


def is_environmental(error: Exception) -> bool:
    """Whether a file's failure depends on the machine rather than on its bytes (missing,
    unreadable, not a regular file right now): such a file is tried again by the next run,
    while a file whose content is bad is not, unless it changed."""
    cause = getattr(error, "cause", "")
    return isinstance(error, MediaError) and str(cause).startswith(("missing", "unreadable", "not a regular"))
