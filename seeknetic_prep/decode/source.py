"""Where PyAV meets the bytes: open a source as a container, find its streams, word FFmpeg's
failures as ours.

A source is a path today; a binary file-like object (``read`` and ``seek``, as object storage
hands out) goes in through the same door, because :func:`open_container` is the only place that
calls ``av.open``. Every open failure is translated here, once, into
:class:`~seeknetic_prep.errors.MediaError` naming the source and the cause in one line.

A decoder reads one source twice at the same time (the frame pass and the audio pass each own
a container), so a file-like source is read through a :class:`_Cursor` per container: each
keeps its own position over the shared object, as two opens of one path do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import av
import av.error

from seeknetic_prep.errors import MediaError

__all__ = ["Source", "audio_channels", "demux_only", "open_container", "reason", "set_video_threads",
           "source_name", "source_size", "video_stream"]

Source = str | os.PathLike[str] | IO[bytes]
"""A file's path, or a binary file-like object with ``read`` and ``seek``."""

_OPEN_OPTIONS: dict[str, Any] = {"metadata_errors": "replace"}
"""PyAV decodes every container and stream metadata string at open, strictly as UTF-8 by
default: one title written as Latin-1 by an old Windows tool (``Caf\\xe9``) raised
``UnicodeDecodeError`` out of ``av.open``. We never use the metadata; a bad byte becomes U+FFFD."""
_FRAME_THREADS_MAX_PIXELS = 2 * 1920 * 1088
"""Above this picture size, slice threads only: each frame thread keeps its own picture pool
(a 4K 10-bit picture is 25 MB), which took a 4K HEVC file past 300 MB of RSS; HEVC's
wavefront rows (x265 writes them by default) still spread such pictures over the cores."""
_ONE_THREAD_DECODE_PIXELS = 320 * 240
"""Up to this picture size one decoding thread: on the 320 x 180 fixtures frame threads cost
more to start and feed (a frame of delay each) than they save, 10-25% of the frame pass."""


def _is_path(source: Source) -> bool:
    return isinstance(source, str | os.PathLike)


def source_name(source: Source) -> str:
    """How messages and :class:`~seeknetic_prep.decode.probe.MediaInfo` name the source: its
    path, or a file object's ``name`` (``<stream>`` when it has none)."""
    if _is_path(source):
        return str(Path(source))  # type: ignore[arg-type]
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str | os.PathLike) else "<stream>"


def source_size(source: Source) -> int:
    """The source's size in bytes, after checking there is something to read.

    Raises:
        MediaError: missing, not a file, or empty.
    """
    if not _is_path(source):
        size = _Cursor(source).seek(0, os.SEEK_END)  # type: ignore[arg-type]
    else:
        path = Path(source)  # type: ignore[arg-type]
        if not path.exists():
            raise MediaError(path, "missing: no such file")
        if not path.is_file():
            raise MediaError(path, "not a file")
        size = path.stat().st_size
    if size == 0:
        raise MediaError(source_name(source), "empty: the file has 0 bytes")
    return size


def open_container(source: Source, *, hwaccel: Any = None) -> Any:
    """``source`` opened by PyAV for reading (with NVDEC when ``hwaccel`` is given).

    Raises:
        MediaError: FFmpeg cannot read it (``not media``, or a cut mp4/mov whose index is lost),
            or NVDEC cannot open it.
    """
    target: Any = str(source) if _is_path(source) else _Cursor(source)  # type: ignore[arg-type]
    extra = {} if hwaccel is None else {"hwaccel": hwaccel}
    try:
        return av.open(target, "r", **_OPEN_OPTIONS, **extra)
    except av.error.FFmpegError as exc:
        name = source_name(source)
        if hwaccel is not None:
            raise MediaError(name, f"NVDEC cannot open it ({reason(exc)}); use --decode cpu") from exc
        if _looks_like_iso_media(source):
            # An mp4/mov whose index (moov) is at the end: cut short, or still being written.
            raise MediaError(
                name, f"truncated or incomplete mp4/mov: its index cannot be read ({reason(exc)})"
            ) from exc
        raise MediaError(name, f"not media: FFmpeg cannot read it ({reason(exc)})") from exc


def demux_only(container: Any, keep: Any) -> None:
    """Have the demuxer skip every stream but ``keep``: ``demux(stream)`` alone still reads the
    others' packets and drops them. A pass that needs one stream then reads only its bytes;
    where the streams lie apart in the file (an MP4 whose audio was written after most of the
    video) the audio pass of a window 40 s in had read 27.6 MB of video for 0.2 MB of audio,
    and through range requests every byte is a byte fetched. Their own packets are unchanged."""
    for stream in container.streams:
        if stream.index != keep.index:
            stream.discard = av.stream.Discard.all


def _looks_like_iso_media(source: Source) -> bool:
    try:
        if _is_path(source):
            with Path(source).open("rb") as fh:  # type: ignore[arg-type]
                head = fh.read(12)
        else:
            head = _Cursor(source).read(12)  # type: ignore[arg-type]
    except OSError:
        return False
    return head[4:8] == b"ftyp"


def reason(exc: BaseException) -> str:
    """FFmpeg's own words without the errno and the path (the message names the file once)."""
    return str(getattr(exc, "strerror", None) or exc).strip()


def video_stream(name: str, container: Any) -> Any:
    """The container's first real video stream.

    Raises:
        MediaError: there is none (cover art in a music file is a one-picture "video" stream:
            not video).
    """
    still = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails
    for stream in container.streams.video:
        if not stream.disposition & still:
            return stream
    kinds = sorted({s.type for s in container.streams if s.type != "video"})
    kinds += ["cover art"] if container.streams.video else []
    raise MediaError(name, f"no video stream (the file holds {' and '.join(kinds) or 'nothing'})")


def set_video_threads(vs: Any, threads: int) -> None:
    """Thread the video decoder for the frame pass, before it opens (it cannot change after).

    ``threads`` caps FFmpeg's threads (0: no cap, FFmpeg takes one per core). Small pictures
    get one thread whatever the cap; above 2 x 1080p slice threads only, for memory.
    """
    cc = vs.codec_context
    coded_pixels = int(cc.width) * int(cc.height)
    if 0 < coded_pixels <= _ONE_THREAD_DECODE_PIXELS or threads == 1:
        cc.thread_count = 1
        return
    cc.thread_type = "SLICE" if coded_pixels > _FRAME_THREADS_MAX_PIXELS else "AUTO"
    if threads:
        cc.thread_count = threads


def audio_channels(stream: Any) -> int:
    """The audio stream's channel count, its decoder made safe to run (call before decoding).

    PyAV 17-18 hands out a codec context's channel layout as a shallow copy that frees the
    layout's channel map when it is garbage: for a custom-order layout (PCM 7.1 or 6.1 in MOV
    whose ``chan`` atom names a layout tag) the decoder's own copy is then freed a second time,
    and every decoded frame carries one more such copy: glibc aborts the process (SIGABRT).
    So the layout is read once here and the context's is replaced, before the decoder opens,
    by a plain one with the same channel count (the standard layout for it, else unordered):
    frames then carry no channel map. The mono mix averages all channels, so which channel is
    where changes no sample.
    """
    cc = stream.codec_context
    layout = cc.layout  # the copy: it frees the custom map once, when this function returns
    channels = int(layout.nb_channels)
    if channels and not cc.is_open:
        try:
            cc.layout = av.AudioLayout(f"{channels}c")
        except ValueError:  # no standard layout for this count (9, 11, ...)
            cc.layout = av.AudioLayout(f"{channels} channels")
    return channels


class _Cursor:
    """A read position of its own over a shared binary file object.

    Seeks the object before every read, so two containers (the frame pass and the audio pass)
    can read one file object in turn without moving each other's place.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        self._raw.seek(self._pos)
        data = self._raw.read(n)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            self._pos = self._raw.seek(0, os.SEEK_END) + offset
        else:
            self._pos = offset + (self._pos if whence == os.SEEK_CUR else 0)
        return self._pos

    def tell(self) -> int:
        return self._pos
