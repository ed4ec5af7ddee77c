"""The worker side of a run: plain, picklable functions over the values of
:mod:`seeknetic_prep.pipeline.tasks`, run by any engine of :mod:`seeknetic_prep.executors`
unchanged (a local process pool, a thread, Ray).

``plan_file`` (path -> fingerprint, duration, windows), ``estimate_file`` (the same from the
container's header only, for ``plan``) and ``encode_windows`` (path + windows -> frame times +
serialized upload bodies, one window at a time as decoded) hold no state and
touch neither the network nor the state database. Their errors are our own
(:class:`~seeknetic_prep.errors.MediaError` and kin), which pickle with their attributes, so a
worker's error reaches the caller with its real type. This module loads PyAV: the driver never
imports it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, cast

import av
import av.error
import cv2
import numpy as np

from seeknetic_prep.decode.preprocess import iter_segments
from seeknetic_prep.decode.probe import MediaInfo, probe
from seeknetic_prep.decode.profile import Segment, Service, Window
from seeknetic_prep.decode.sampling import plan_windows
from seeknetic_prep.decode.spans import window_spans
from seeknetic_prep.errors import MediaError, SeekneticPrepError
from seeknetic_prep.pipeline import ahead
from seeknetic_prep.pipeline.payloads import file_fingerprint, upload_body_bytes
from seeknetic_prep.pipeline.tasks import ByteLayout, DecodeTask, EncodedWindow, FileEstimate, FilePlan
from seeknetic_prep.sources.urls import is_url, redact
from seeknetic_prep.state.thumbs import THUMB_FRAMES, THUMB_PX, join_jpegs
from seeknetic_prep.util.malloc import keep_freed_buffers

if TYPE_CHECKING:
    from seeknetic_prep.sources.reader import RangeReader

__all__ = ["configure", "decode_windows", "encode_windows", "estimate_file", "plan_file", "plan_object",
           "worker_init"]


@dataclass
class _Settings:
    threads: int = 0
    gpu_allowed: bool = True


_settings = _Settings()
"""This worker process's decode settings (:func:`configure`), handed to every decoder it opens:
the process is where they belong (its share of the cores, whether it is a GPU worker), and the
decoder takes them as arguments."""


def plan_file(path: str, *, listed: tuple[int, int] | None = None) -> FilePlan:
    """Fingerprint, probe and plan one file (or object: a URL is read with range requests;
    ``listed``: its size and version tag number from the run's listing).

    Raises:
        MediaError: the file is not usable video (the message names it and the cause).
    """
    if is_url(path):
        return _plan_remote(path, listed)
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


def estimate_file(path: str, *, fingerprint: bool) -> FileEstimate:
    """What :func:`plan_file` finds, from the container's header alone: no frame decoded, no
    tail demuxed (the exact duration a run finds can differ by a frame or so). A file whose
    header cannot be read (or holds no duration) gets the full :func:`probe`, so its error is
    the one a run would report. ``fingerprint``: also fingerprint it (~2.5 MB read).

    Never raises our errors: a file that cannot be used comes back with ``error`` set.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return FileEstimate(path, 0, 0, 0, None, error="missing: no such file")
    except OSError as exc:
        return FileEstimate(path, 0, 0, 0, None, error=f"unreadable: {exc.strerror or exc}")
    ident = (st.st_size, st.st_mtime_ns, st.st_ino)
    try:
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block; a device is no video
            raise MediaError(path, f"not a regular file ({_kind(st.st_mode)}).")
        fp = file_fingerprint(path) if fingerprint else None
        duration_ms = _header_duration_ms(path)
        if duration_ms is None:
            duration_ms = int(probe(path).duration_ms)
    except FileNotFoundError:
        return FileEstimate(path, *ident, None, error="missing: no such file")
    except OSError as exc:
        return FileEstimate(path, *ident, None, error=f"unreadable: {exc.strerror or exc}")
    except MediaError as exc:
        return FileEstimate(path, *ident, None, error=exc.cause)
    except SeekneticPrepError as exc:
        return FileEstimate(path, *ident, None, error=str(exc))
    except Exception as exc:
        return FileEstimate(path, *ident, None, error=_internal_error(path, exc).cause)
    return FileEstimate(path, *ident, duration_ms, fingerprint=fp)


_STILL = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails


def _header_duration_ms(path: str) -> int | None:
    """The video's length as the container's header declares it (the video stream's own
    duration, else the container's, else frames / rate), or ``None`` when the header cannot
    be read or declares none (the caller probes such a file in full). ~1-5 ms a file, against
    ~10 ms for :func:`probe`, which decodes a frame and demuxes the last seconds.

    (This belongs beside :func:`probe` in ``decode/media.py``, the one module meant to touch
    PyAV; it is here while the decoder is being refactored.)
    """
    try:
        container = av.open(path, "r", metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError):
        return None
    with container:
        vs = next((s for s in container.streams.video if not s.disposition & _STILL), None)
        if vs is None:
            return None
        if vs.duration and vs.time_base:
            seconds = float(vs.duration * vs.time_base)
        elif container.duration:
            seconds = container.duration / 1e6
        elif vs.frames and vs.average_rate:
            seconds = float(vs.frames / vs.average_rate)
        else:
            return None
    duration_ms = round(seconds * 1000)
    return duration_ms if duration_ms > 0 else None


def _plan_remote(url: str, listed: tuple[int, int] | None) -> FilePlan:
    """A URL's plan: its size and version tag from the listing (else one metadata request),
    then :func:`plan_object`. The version tag stands in for the mtime, so a rerun skips the
    object from its listing alone. (An object replaced since its listing reads short and fails
    as unreadable, or plans under its old tag: the next run's listing plans it again.)"""
    opened = ahead.take(url)  # its fingerprint read while the worker's last task ran, if it was
    if opened is not None:
        reader, tag, fingerprint = opened.reader, opened.tag, opened.fingerprint
    else:
        (reader, tag), fingerprint = ahead.open_plan(url, listed), None
    with reader, _remote_errors(url, reader):
        return plan_object(url, reader, tag, fingerprint=fingerprint)


def plan_object(url: str, reader: RangeReader, tag: int = 0, *, fingerprint: str | None = None) -> FilePlan:
    """The plan of the object ``reader`` reads (``tag``: its version tag number): its
    fingerprint (the ranges requested at once; ``fingerprint``: read already, :mod:`.ahead`),
    then the probe, which reads the first and last MiB again from the reader and what an MP4's
    index says it reads besides (fetched at once first), then the byte layout its tasks read
    by."""
    from seeknetic_prep.sources.remote import fingerprint_object, warm_probe

    fp = fingerprint
    if fp is None:  # else read ahead (:mod:`.ahead`), and with it what the probe reads
        fp = fingerprint_object(reader)
        warm_probe(reader)
    reader.seek(0)
    probed = probe(cast(IO[bytes], reader))
    windows = plan_windows(int(probed.duration_ms))
    return FilePlan(url, fp, reader.size, int(probed.duration_ms),
                    tuple((w.index, w.start_ms, w.end_ms) for w in windows),
                    mtime_ns=tag, inode=0, info=probed, layout=_layout(reader, probed, windows))


def _layout(reader: RangeReader, info: MediaInfo, windows: Sequence[Window]) -> ByteLayout:
    """Where the object's bytes lie for its tasks: what opening its container reads (recorded
    on one more opening, from the blocks the probe fetched: no request) and each window's
    packets, from the index that opening reads."""
    reader.seek(0)
    with reader.recorded() as opening:
        spans = window_spans(cast(IO[bytes], reader), info, windows)
    return ByteLayout(tuple(opening), tuple((w.index, tuple(s)) for w, s in zip(windows, spans, strict=True)))


@contextlib.contextmanager
def _remote_errors(url: str, reader: RangeReader) -> Iterator[None]:
    """A failed range request (a 503, a reset connection) reaches FFmpeg as a failed read, and
    FFmpeg words it as bad data: name the request's failure instead, as an environmental one
    (the next run tries the object again), never as bad content."""
    try:
        yield
    except SeekneticPrepError as exc:
        if reader.error is None:
            raise
        raise MediaError(redact(url), f"unreadable: {reader.error}") from exc
    except OSError as exc:
        raise MediaError(redact(url), f"unreadable: {reader.error or exc}") from exc
    except Exception as exc:
        if reader.error is None:
            raise _internal_error(redact(url), exc) from exc
        raise MediaError(redact(url), f"unreadable: {reader.error}") from exc


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

    wanted: dict[int, list[tuple[Service, str]]] = {}
    for index, service, rid in task.request_ids:
        wanted.setdefault(index, []).append((service, rid))
    if is_url(task.path):
        yield from _encode_remote(task, wanted)
        return
    try:
        windows = [Window(*w) for w in task.windows]
        for seg in iter_segments(task.path, windows, resize=task.resize, decode=task.decode,
                                 info=task.info, threads=_settings.threads,
                                 gpu_allowed=_settings.gpu_allowed):
            yield _encoded(seg, wanted.get(seg.index, []))
    except FileNotFoundError as exc:
        raise MediaError(task.path, "missing: no such file") from exc
    except OSError as exc:
        raise MediaError(task.path, f"unreadable: {exc.strerror or exc}") from exc
    except SeekneticPrepError:
        raise
    except Exception as exc:
        raise _internal_error(task.path, exc) from exc


def _encode_remote(task: DecodeTask, wanted: dict[int, list[tuple[Service, str]]]) -> Iterator[EncodedWindow]:
    """:func:`encode_windows` for a URL: the decoder reads the object through range requests,
    from a reader opened while the worker's last task ran (:mod:`.ahead`) when there is one."""
    opened = ahead.take(task.path)
    reader = opened.reader if opened is not None else ahead.open_task(task)
    with reader, _remote_errors(task.path, reader):
        windows = [Window(*w) for w in task.windows]
        segments = iter_segments(cast(IO[bytes], reader), windows, resize=task.resize, decode=task.decode,
                                 info=task.info, threads=_settings.threads,
                                 gpu_allowed=_settings.gpu_allowed)
        for seg in segments:
            yield _encoded(seg, wanted.get(seg.index, []))


def _encoded(seg: Segment, asked: list[tuple[Service, str]]) -> EncodedWindow:
    bodies = upload_body_bytes(seg, asked)
    pairs = zip(asked, bodies, strict=True)
    return EncodedWindow(seg.index, seg.start_ms, seg.end_ms, tuple(float(t) for t in seg.frame_times_ms),
                         tuple((svc, rid, body) for (svc, rid), body in pairs),
                         thumbs=thumbnails(seg) if asked else b"", decoder=seg.decoder)


def thumbnails(seg: Segment) -> bytes:
    """Three small JPEGs of the frames the model sees (first, middle, last), for the report:
    ~1 ms a window here, while the frames are in memory, instead of decoding the file again."""
    frames = seg.video[0]  # (12, 3, 224, 224) uint8 RGB
    jpegs = []
    for i in THUMB_FRAMES:
        rgb = np.ascontiguousarray(frames[i].transpose(1, 2, 0))
        small = cv2.resize(rgb, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            jpegs.append(jpeg.tobytes())
    return join_jpegs(jpegs)


def _internal_error(path: str, exc: Exception) -> MediaError:
    """A surprise while planning or decoding one file (a bug, or a library raising what it
    should not, as PyAV's ``UnicodeDecodeError`` on a Latin-1 title did) as that file's
    failure: every engine runs these, so one odd file fails alone, with one line that names the
    exception, instead of stopping the run (and every rerun) with a traceback."""
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
    keep_freed_buffers()  # each window's bodies are megabytes, freed and made again
    configure(decode_threads=decode_threads, gpu=gpu)
    if "seeknetic_prep.sources.remote" in sys.modules:  # preloaded for a run over URLs
        from seeknetic_prep.sources.remote import warm_clients

        warm_clients()  # the store's client now, while the driver checks the key


def configure(*, decode_threads: int = 0, gpu: bool = True) -> None:
    """The decode settings of this process's later :func:`encode_windows` calls:
    ``decode_threads`` FFmpeg threads per decoder (0: FFmpeg decides); ``gpu``: whether
    ``decode="auto"`` may use NVDEC."""
    _settings.threads, _settings.gpu_allowed = max(0, int(decode_threads)), bool(gpu)
