"""PyAV at one seam: probe a file, decode the frames on screen at given times, decode its audio.

This is the only module that touches ``av``; every FFmpeg failure is translated here into
:class:`~seeknetic_prep.errors.MediaError` naming the file and the cause in one line.

**Timeline.** Times are milliseconds from the presentation time of the video stream's first
frame (its origin), so a file whose video starts at pts 0 reads as-is and one whose container
clock starts elsewhere (MPEG-TS, trimmed edits) still starts at 0. Audio is placed on the same
clock: an audio stream whose first sample is 2 s after the first video frame starts at 2000 ms.

**Duration** is where the video ends: the end of its last frame (pts + duration), found by
demuxing the file's last seconds, not by trusting the header. When the header declares more
than the data holds (a cut download, a faststart mp4 cut short) the file is refused as
truncated rather than padded with copies of the last good frame.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import soxr
from av.audio.plane import AudioPlane
from av.video.reformatter import VideoReformatter

from seeknetic_prep.decode.profile import SAMPLE_RATE
from seeknetic_prep.errors import InvalidArgumentError, MediaError

__all__ = ["MediaInfo", "decode_audio", "decode_frames_at", "probe", "probe_open", "set_thread_cap"]

_TAIL_SECONDS = 3.0
"""How much of the end of a file is demuxed to find where its content really ends."""
_TRUNCATION_SLACK_S = 0.1
"""How far the data may fall short of the header's duration before the file counts as cut."""
_RESEEK_GAP_MS = 20_000.0
"""Targets further apart than this get a fresh seek instead of decoding the gap."""
_FRAME_THREADS_MAX_PIXELS = 2 * 1920 * 1088
"""Above this picture size, slice threads only: each frame thread keeps its own picture pool
(a 4K 10-bit picture is 25 MB), which took a 4K HEVC file past 300 MB of RSS; HEVC's
wavefront rows (x265 writes them by default) still spread such pictures over the cores."""
_NONREF_SKIP_CODECS = frozenset({"h264", "hevc"})
"""Decoders whose ``skip_frame="NONREF"`` drops only pictures nothing references (checked on
the fixtures, frame by frame), so frames nobody looks at can go undecoded."""
_ONE_THREAD_DECODE_PIXELS = 320 * 240
"""Up to this picture size one decoding thread: on the 320 x 180 fixtures frame threads cost
more to start and feed (a frame of delay each) than they save, 10-25% of the frame pass."""
_ONE_THREAD_SWS_PIXELS = 640 * 480
"""Up to this picture size swscale runs on one thread: starting threads costs more than it saves."""
_LOOKAHEAD_PACKETS = 64
"""Packets held back while their fate is open; past this (no dts in the container) they are
decoded in full, which is always exact."""
_AUDIO_SEEK_LEAD_S = 1.0
"""Audio decoding for a window starts this much earlier: the codec (MDCT overlap, Opus
pre-roll) and the resampler are settled by the window's start."""
_AUDIO_GAP_S = 0.1
"""A jump in audio timestamps larger than this is a hole, filled with silence, not closed up."""
_AUDIO_BATCH_SAMPLES = 8192
"""Source samples gathered before they are mixed down and resampled in one call."""
_AUDIO_INEXACT_SKIP = 3
"""Frames the resampler may wait for one whose sample index is exact, when (re)starting."""

# AVColorSpace (frame metadata) -> swscale's matrix names; unknown/unspecified falls back on size.
_SWS_COLORSPACE = {
    1: "itu709", 4: "fcc", 5: "itu601", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 10: "bt2020"
}
_AVCOL_RANGE_JPEG = 2

_OPEN_OPTIONS: dict[str, Any] = {"metadata_errors": "replace"}
"""PyAV decodes every container and stream metadata string at open, strictly as UTF-8 by
default: one title written as Latin-1 by an old Windows tool (``Caf\\xe9``) raised
``UnicodeDecodeError`` out of ``av.open``. We never use the metadata; a bad byte becomes U+FFFD."""
_SAMPLE_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(t) for name, t in (("u8", np.uint8), ("s16", np.int16), ("s32", np.int32),
                                      ("s64", np.int64), ("flt", np.float32), ("dbl", np.float64))
}
"""numpy dtype of each FFmpeg sample format (packed name; the planar one adds a ``p``)."""


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, as the decoder sees it.

    ``width``/``height`` are the display size (after rotation and sample aspect ratio);
    ``coded_width``/``coded_height`` are the stored picture. ``rotation`` is the display matrix's
    counter-clockwise angle as FFmpeg reports it (an iPhone portrait clip says -90).
    ``duration_ms`` is the end of the last video frame on the timeline (see the module doc).
    """

    path: str
    duration_ms: int
    width: int
    height: int
    rotation: int
    fps: float
    has_audio: bool
    video_codec: str
    pix_fmt: str
    coded_width: int
    coded_height: int
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    origin_s: float
    """The first video frame's presentation time on the container clock: timeline zero."""
    size_bytes: int


def _check_file(path: Path) -> int:
    if not path.exists():
        raise MediaError(path, "missing: no such file")
    if not path.is_file():
        raise MediaError(path, "not a file")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(path, "empty: the file has 0 bytes")
    return size


def _open(path: Path) -> Any:
    try:
        return av.open(str(path), "r", **_OPEN_OPTIONS)
    except av.error.FFmpegError as exc:
        if _looks_like_iso_media(path):
            # An mp4/mov whose index (moov) is at the end: cut short, or still being written.
            raise MediaError(
                path, f"truncated or incomplete mp4/mov: its index cannot be read ({_reason(exc)})"
            ) from exc
        raise MediaError(path, f"not media: FFmpeg cannot read it ({_reason(exc)})") from exc


def _looks_like_iso_media(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp"


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words without the errno and the path (the message names the file once)."""
    return str(getattr(exc, "strerror", None) or exc).strip()


def _video_stream(path: Path, container: Any) -> Any:
    # Cover art in a music file is a one-picture "video" stream: not video.
    still = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails
    for stream in container.streams.video:
        if not stream.disposition & still:
            return stream
    kinds = sorted({s.type for s in container.streams if s.type != "video"})
    kinds += ["cover art"] if container.streams.video else []
    raise MediaError(path, f"no video stream (the file holds {' and '.join(kinds) or 'nothing'})")


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Open a file, check it is usable video, and describe it.

    Decodes one frame (for the rotation and the timeline origin) and demuxes the last seconds
    (for the true duration), so it stays fast whatever the file's length.

    Raises:
        MediaError: missing, empty, not media, no video stream, undecodable or truncated.

    >>> probe("fixtures/rotated90.mp4").rotation  # doctest: +SKIP
    -90
    """
    info, container = _probe(Path(path), for_frames=False)
    container.close()
    return info


def probe_open(
    path: str | os.PathLike[str], *, decode: str = "auto", known: MediaInfo | None = None
) -> tuple[MediaInfo, Any]:
    """:func:`probe`, keeping the open container for the frame pass.

    On a small file opening it again costs as much as decoding a window's frames; hand the
    container to :func:`decode_frames_at` (``container=``), which closes it. Its decoder is
    already threaded the way the frame pass wants (threading cannot change once it is open).
    When ``decode`` picks NVDEC for this codec (:mod:`seeknetic_prep.decode.hw`), the probe runs
    on the CPU and the frame pass gets the file opened again with the ``cuda`` hwaccel.

    ``known`` is this file's :func:`probe` from earlier (a run probes every file when it plans
    it): while the file still has that size it is only opened, not probed again. The probe
    decodes a first frame and demuxes the tail, ~50 ms a 1080p file, as much as a run's whole
    CPU budget outside decoding for a short clip; the frame pass itself depends on nothing
    else, so its output is the same. A file whose size changed is probed afresh.

    Raises:
        MediaError: as :func:`probe`.
        InvalidArgumentError: ``decode="cuda"`` with no CUDA device.
    """
    from seeknetic_prep.decode.hw import hwaccel_for

    p = Path(path)
    container: Any = None
    if known is not None and _check_file(p) == known.size_bytes:
        info = known  # opened below, for the frame pass only
    else:
        info, container = _probe(p, for_frames=True)
    hw = hwaccel_for(decode, info.video_codec)
    if hw is None:
        return info, container if container is not None else _open_for_frames(p)
    if container is not None:
        container.close()
    try:
        container = av.open(str(p), "r", hwaccel=hw, **_OPEN_OPTIONS)
    except av.error.FFmpegError as exc:
        raise MediaError(p, f"NVDEC cannot open it ({_reason(exc)}); use --decode cpu") from exc
    _video_stream(p, container).codec_context.thread_count = 1  # the GPU decodes; one feeder
    return info, container


def _open_for_frames(p: Path) -> Any:
    """The file opened for the frame pass, its decoder threaded as :func:`_describe` would."""
    container = _open(p)
    try:
        vs = _video_stream(p, container)
        _set_threads(vs, int(vs.codec_context.width) * int(vs.codec_context.height))
    except BaseException:
        container.close()
        raise
    return container


def _probe(p: Path, *, for_frames: bool) -> tuple[MediaInfo, Any]:
    size = _check_file(p)
    container = _open(p)
    try:
        info = _describe(p, container, size, for_frames=for_frames)
    except BaseException:
        container.close()
        raise
    return info, container


def _describe(p: Path, container: Any, size: int, *, for_frames: bool) -> MediaInfo:
    vs = _video_stream(p, container)
    if for_frames:
        _set_threads(vs, int(vs.codec_context.width) * int(vs.codec_context.height))
    try:
        first = next(container.decode(vs), None)
    except av.error.FFmpegError as exc:
        raise MediaError(p, f"undecodable video: {_reason(exc)}") from exc
    if first is None or first.pts is None:
        raise MediaError(p, "undecodable video: no frame could be decoded")
    origin = float(first.pts * first.time_base)
    rotation = int(first.rotation)
    end_s = _content_end(p, container, vs, origin, size)
    fps = float(vs.average_rate or vs.guessed_rate or 0) or 0.0
    sar = vs.sample_aspect_ratio
    cw, ch = int(vs.codec_context.width), int(vs.codec_context.height)
    dw = round(cw * sar) if sar and sar > 0 and sar != 1 else cw
    width, height = (ch, dw) if rotation % 180 else (dw, ch)
    audio = container.streams.audio[0] if container.streams.audio else None
    duration_ms = round((end_s - origin) * 1000)
    if duration_ms <= 0:
        raise MediaError(p, f"no content: the video lasts {duration_ms} ms")
    return MediaInfo(
        path=str(p),
        duration_ms=duration_ms,
        width=width,
        height=height,
        rotation=rotation,
        fps=fps,
        has_audio=audio is not None,
        video_codec=str(vs.codec_context.name),
        pix_fmt=str(first.format.name),
        coded_width=cw,
        coded_height=ch,
        audio_codec=None if audio is None else str(audio.codec_context.name),
        audio_rate=None if audio is None else int(audio.rate),
        audio_channels=None if audio is None else _audio_channels(audio),
        origin_s=origin,
        size_bytes=size,
    )


def _audio_channels(stream: Any) -> int:
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


_thread_cap = 0
"""Threads a decoder (and swscale) may use in this process; 0 lets FFmpeg take every core."""


def set_thread_cap(threads: int) -> None:
    """Cap FFmpeg's threads per decoder in this process (0: no cap, one per core).

    A run with W decode processes on C cores gives each ``C // W``: FFmpeg's default of one
    thread per core in every process oversubscribes the machine W times over.
    """
    global _thread_cap
    _thread_cap = max(0, int(threads))


def _set_threads(vs: Any, coded_pixels: int) -> None:
    if 0 < coded_pixels <= _ONE_THREAD_DECODE_PIXELS or _thread_cap == 1:
        vs.codec_context.thread_count = 1
        return
    vs.codec_context.thread_type = "SLICE" if coded_pixels > _FRAME_THREADS_MAX_PIXELS else "AUTO"
    if _thread_cap:
        vs.codec_context.thread_count = _thread_cap


def _content_end(path: Path, container: Any, vs: Any, origin: float, size: int) -> float:
    """Where the last video frame ends, on the container clock, in seconds.

    Demuxes (no decoding) from a few seconds before the declared end. A file cut short stops
    delivering packets where its data stops, well before what its header promised: its
    per-stream durations, its frame count (AVI keeps that even when its index is gone), or
    the container's duration.
    """
    streams = [vs, *container.streams.audio[:1]]
    declared: dict[int, float] = {}
    for s in streams:
        if s.duration:
            declared[s.index] = float((s.start_time or 0) * s.time_base + s.duration * s.time_base)
    if vs.frames and vs.average_rate:
        by_count = float((vs.start_time or 0) * vs.time_base + vs.frames / vs.average_rate)
        declared[vs.index] = max(declared.get(vs.index, by_count), by_count)
    whole = None
    if container.duration and len(container.streams) == len(streams):
        # Only when the streams demuxed are all there is: a subtitle or data track may
        # legitimately run past the picture and the sound.
        whole = (float(container.duration) + float(container.start_time or 0)) / 1e6
    declared_end = max([*declared.values(), *([whole] if whole else [])], default=origin)
    seek_to = declared.get(vs.index, declared_end) - _TAIL_SECONDS
    seek_pts = int(max(seek_to, origin) / vs.time_base)
    # Any packet will do to start demuxing from (nothing is decoded), which saves most of a
    # GOP on a small file. A file that then looks cut short is scanned again from a keyframe,
    # so the verdict and its message are those of the thorough scan.
    try:
        ends, latest = _tail_ends(path, container, streams, vs, seek_pts, any_frame=True)
        complete = _complete(ends, declared, whole, vs, origin)
    except MediaError:
        complete = False
    if not complete:
        ends, latest = _tail_ends(path, container, streams, vs, seek_pts, any_frame=False)
    if vs.index not in ends:
        raise MediaError(path, "truncated: no video data where the header says the video ends")
    if ends[vs.index] <= latest[vs.index]:  # one frame and no stored duration: one frame period
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        ends[vs.index] = latest[vs.index] + (float(1 / rate) if rate else 0.04)
    for idx, want in declared.items():
        got = ends.get(idx, origin)
        if got < want - _TRUNCATION_SLACK_S:
            kind = "video" if idx == vs.index else "audio"
            raise MediaError(
                path,
                f"truncated: the header declares {kind} up to {want - origin:.3f} s but the data "
                f"ends at {got - origin:.3f} s ({size} bytes)",
            )
    got_all = max(ends.values())
    if whole is not None and got_all < whole - _TRUNCATION_SLACK_S:
        raise MediaError(
            path,
            f"truncated: the header declares {whole - origin:.3f} s but the data ends at "
            f"{got_all - origin:.3f} s ({size} bytes)",
        )
    return ends[vs.index]


def _tail_ends(
    path: Path, container: Any, streams: list[Any], vs: Any, seek_pts: int, *, any_frame: bool
) -> tuple[dict[int, float], dict[int, float]]:
    """Per stream: where the content ends, and the latest pts, demuxing from ``seek_pts`` on."""
    ends: dict[int, float] = {}
    latest: dict[int, float] = {}
    times: dict[int, list[float]] = {}
    try:
        # Always seek, even to the start: probing already consumed the first packets.
        container.seek(seek_pts, stream=vs, backward=True, any_frame=any_frame)
        # Demuxed packets carry their stream's time base. int * num / den is the correctly
        # rounded float of the exact product, as float(pts * Fraction) is, without a Fraction
        # per packet (the tail of a small file is most of it: hundreds of packets).
        clock = {s.index: (s.time_base.numerator, s.time_base.denominator) for s in streams}
        for packet in container.demux(streams):
            pts = packet.pts
            if pts is None or packet.size == 0:
                continue
            idx = packet.stream_index
            num, den = clock[idx]
            t = pts * num / den
            seen = times.setdefault(idx, [])
            seen.append(t)
            del seen[:-16]
            # The content ends where the packet with the latest pts stops being shown. (Not the
            # max of pts + duration: with B-frames a packet's duration is a dts step.) Containers
            # that store no packet duration (Matroska audio) get the last pts step.
            if idx not in latest or t >= latest[idx]:
                latest[idx] = t
                duration = packet.duration
                dur = duration * num / den if duration else _interval(seen)
                ends[idx] = t + dur
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"truncated or corrupt near the end: {_reason(exc)}") from exc
    return ends, latest


def _complete(
    ends: dict[int, float], declared: dict[int, float], whole: float | None, vs: Any, origin: float
) -> bool:
    """Whether a tail scan found every stream reaching what the header declares."""
    if vs.index not in ends:
        return False
    if any(ends.get(idx, origin) < want - _TRUNCATION_SLACK_S for idx, want in declared.items()):
        return False
    return whole is None or max(ends.values()) >= whole - _TRUNCATION_SLACK_S


def _interval(times: list[float]) -> float:
    """A frame duration guess for containers that do not store one: the last pts step."""
    steps = sorted(b - a for a, b in itertools.pairwise(sorted(times[-8:])) if b > a)
    return steps[len(steps) // 2] if steps else 0.0


def decode_frames_at(
    info: MediaInfo,
    targets_ms: Sequence[float],
    size: tuple[int, int],
    *,
    container: Any = None,
) -> Generator[tuple[float, np.ndarray], None, None]:
    """For each target time (ascending), the frame on screen then: ``(pts_ms, rgb)``.

    The frame on screen at t is the last frame whose pts <= t, exact for constant and variable
    frame rates. One forward pass: seek to the keyframe before the first target, decode
    forward with frame threading (slice threading above 2 x 1080p, for memory), leave
    unreferenced pictures that no target shows undecoded, keep only the latest decoded frame as
    the candidate, and convert to RGB only the frames chosen. ``rgb`` is ``uint8 (h, w, 3)`` in the *stored*
    orientation, scaled by swscale (area filter when shrinking) so that once rotated upright it
    is ``size = (width, height)``; consecutive targets on one frame share one array.

    ``container`` is one :func:`probe_open` returned for this file; it is closed when the
    generator ends (also unstarted: by the caller's ``close()``).

    Raises:
        MediaError: the file fails to decode, or its frames stop before a target.
    """
    path = Path(info.path)
    try:
        if not targets_ms:
            return
        if any(b < a for a, b in itertools.pairwise(targets_ms)):
            raise InvalidArgumentError(f"Invalid targets_ms {list(targets_ms)}: must be ascending.")
        if container is None:
            container = _open(path)
            vs = _video_stream(path, container)
            _set_threads(vs, info.coded_width * info.coded_height)
        else:
            vs = _video_stream(path, container)
        out_w, out_h = size
        coded_size = (out_h, out_w) if info.rotation % 180 else (out_w, out_h)
        try:
            yield from _scan(path, container, vs, info, targets_ms, coded_size)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"undecodable video: {_reason(exc)}") from exc
    finally:
        if container is not None:
            container.close()


def _scan(
    path: Path,
    container: Any,
    vs: Any,
    info: MediaInfo,
    targets_ms: Sequence[float],
    coded_size: tuple[int, int],
) -> Iterator[tuple[float, np.ndarray]]:
    """Targets far apart (sparse windows) get a seek each; close ones share one forward pass."""
    cache = _Converter(coded_size)  # the last converted frame, shared across runs
    run: list[float] = []
    for t in targets_ms:
        if run and t - run[-1] > _RESEEK_GAP_MS:
            yield from _scan_run(path, container, vs, info, run, cache)
            run = []
        run.append(t)
    yield from _scan_run(path, container, vs, info, run, cache)


def _scan_run(
    path: Path,
    container: Any,
    vs: Any,
    info: MediaInfo,
    targets_ms: Sequence[float],
    cache: _Converter,
) -> Iterator[tuple[float, np.ndarray]]:
    targets_s = [info.origin_s + t / 1000 for t in targets_ms]  # on the container clock
    first_target_s = targets_s[0]
    # Seek to the keyframe at or before the first target; if the demuxer lands after it (an
    # index that is coarse or missing), step further back, and at worst start from the top.
    # A container without an index (MPEG-TS) may land past the only keyframe and decode nothing.
    for lead in (0.0, 2.0, 10.0, math.inf):
        frames = _frames_from(container, vs, first_target_s - lead, info.origin_s, targets_s)
        first = next(frames, None)
        landed_s = math.inf if first is None else float(first.pts * first.time_base)
        if landed_s <= first_target_s or (first is not None and lead == math.inf):
            break
        frames.close()
    if first is None:
        raise MediaError(path, "undecodable video: no frame could be decoded")
    j = 0
    current: Any = first
    del first  # one full-size picture held at a time (a 4K 10-bit one is 25 MB)
    try:
        for nxt in frames:
            nxt_s = float(nxt.pts * nxt.time_base)
            while j < len(targets_s) and targets_s[j] < nxt_s:
                yield _ms(current, info.origin_s), cache.pick(current)
                j += 1
            if j == len(targets_ms):
                return
            current = nxt
    finally:
        frames.close()
    # End of stream: the last frame stays on screen until its own end, and no further.
    shown_until = float(current.pts * current.time_base)
    if current.duration:
        shown_until += float(current.duration * current.time_base)
    else:
        shown_until = max(shown_until, info.origin_s + info.duration_ms / 1000)
    while j < len(targets_ms):
        if targets_s[j] >= shown_until + _TRUNCATION_SLACK_S:
            raise MediaError(
                path,
                f"truncated: the video stops at {_ms(current, info.origin_s):.0f} ms, "
                f"before {targets_ms[j]:.0f} ms",
            )
        yield _ms(current, info.origin_s), cache.pick(current)
        j += 1


def _frames_from(
    container: Any, vs: Any, seek_s: float, origin_s: float, targets_s: Sequence[float]
) -> Generator[Any, None, None]:
    if seek_s > origin_s:
        container.seek(int(seek_s / vs.time_base), stream=vs, backward=True, any_frame=False)
    else:
        container.seek(0, stream=None, backward=True)
    for frame in _decode_needed(container, vs, targets_s):
        if frame.pts is not None:
            if frame.time_base is None:  # drained at the end: no packet lent it a clock
                frame.time_base = vs.time_base
            yield frame


def _decode_needed(container: Any, vs: Any, targets_s: Sequence[float]) -> Iterator[Any]:
    """Decode on from where the container stands, skipping pictures that no target shows.

    The frame on screen at t is the packet with the largest pts <= t among *all* packets, and
    every packet has pts >= dts, so once a packet with dts > t has been demuxed the choice for t
    is final; a picture is out as soon as a later one before the next target turns up.
    Packets wait in a short look-ahead until their fate is known; then the decoder
    gets each one with ``skip_frame`` "DEFAULT" (shown at some target) or "NONREF" (not
    shown: decoded anyway if other pictures reference it, dropped otherwise). Reference
    pictures are always decoded, so what comes out is exact; only unseen, unreferenced pictures
    (most B-frames) are saved. Codecs whose skipping is not known to be exact decode all.
    """
    cc = vs.codec_context
    skipping = str(cc.name) in _NONREF_SKIP_CODECS
    if cc.skip_frame != "DEFAULT":  # left over from a pass that stopped early
        cc.skip_frame = "DEFAULT"
    tb = vs.time_base
    waiting: deque[tuple[Any, float]] = deque()  # (packet, pts in seconds), in decode order
    seen_s: list[float] = []  # pts of every packet demuxed so far, ascending, seconds
    horizon = -math.inf  # the largest dts demuxed so far: every pts to come is later
    ended = False

    def shown(pts_s: float) -> bool | None:
        """Whether the picture at ``pts_s`` is on screen at a target; None while undecided."""
        k = bisect.bisect_left(targets_s, pts_s)
        if k == len(targets_s):
            return False
        t = targets_s[k]
        later = bisect.bisect_right(seen_s, pts_s)
        if later < len(seen_s) and seen_s[later] <= t:
            return False  # a later picture is on screen by the next target already
        if t >= horizon and not ended:
            return None  # a picture between it and the target may still come
        return True

    def send(packet: Any, show: bool) -> Iterator[Any]:
        if skipping:
            mode = "DEFAULT" if show else "NONREF"
            if cc.skip_frame != mode:
                cc.skip_frame = mode
        yield from cc.decode(packet)

    for packet in container.demux(vs):
        if packet.size == 0:  # the demuxer's end-of-stream marker
            break
        if packet.pts is None or not skipping:
            # No pts to choose by: decode everything from here on.
            skipping = False
            while waiting:
                yield from send(waiting.popleft()[0], True)
            yield from send(packet, True)
            continue
        pts_s = float(packet.pts * tb)
        if packet.dts is not None:
            horizon = max(horizon, float(packet.dts * tb))
        bisect.insort(seen_s, pts_s)
        waiting.append((packet, pts_s))
        while waiting:
            show = shown(waiting[0][1])
            if show is None and len(waiting) < _LOOKAHEAD_PACKETS:
                break
            yield from send(waiting.popleft()[0], show is not False)
        if len(seen_s) > 4 * _LOOKAHEAD_PACKETS:
            # Only pts above the earliest one still waiting or to come (dts rises, pts >= dts)
            # are ever looked at again: keep the list short on a long pass.
            cut = min([horizon, *(s for _, s in waiting)])
            del seen_s[: bisect.bisect_left(seen_s, cut)]
    ended = True
    while waiting:
        packet, pts_s = waiting.popleft()
        yield from send(packet, shown(pts_s) is not False)
    if skipping:
        cc.skip_frame = "DEFAULT"
    yield from cc.decode(None)


def _ms(frame: Any, origin_s: float) -> float:
    return float(Fraction(frame.pts) * frame.time_base - Fraction(origin_s)) * 1000


class _Converter:
    """Frames as RGB, each converted once even when several targets land on it.

    One swscale context serves the whole pass: ``VideoFrame.reformat`` builds (and threads)
    a new one per call, which on a 320 x 180 clip costs more than the scaling itself. Small
    pictures are scaled on one thread, for the same reason; the output is the same bits.
    """

    def __init__(self, coded_size: tuple[int, int]) -> None:
        self.coded_size = coded_size
        self.last: tuple[int, np.ndarray] | None = None
        self.sws = VideoReformatter()

    def pick(self, frame: Any) -> np.ndarray:
        if self.last is None or self.last[0] != frame.pts:
            self.last = (int(frame.pts), _to_rgb(frame, self.coded_size, self.sws))
        return self.last[1]


def _to_rgb(frame: Any, coded_size: tuple[int, int], sws: Any) -> np.ndarray:
    """YUV -> RGB with the frame's own matrix and range, scaled in the same swscale pass."""
    width, height = coded_size
    shrink = width * height < frame.width * frame.height
    space = _SWS_COLORSPACE.get(int(frame.colorspace)) or ("itu709" if frame.height >= 720 else "itu601")
    full = int(frame.color_range) == _AVCOL_RANGE_JPEG or frame.format.name.startswith("yuvj")
    rgb = sws.reformat(
        frame,
        width=width,
        height=height,
        format="rgb24",
        src_colorspace=space,
        src_color_range="JPEG" if full else "MPEG",
        dst_color_range="JPEG",
        interpolation="AREA" if shrink else "BICUBIC",
        threads=1 if frame.width * frame.height <= _ONE_THREAD_SWS_PIXELS else _thread_cap,
    )
    arr: np.ndarray = rgb.to_ndarray()
    return arr


def decode_audio(info: MediaInfo, start_ms: float) -> Generator[tuple[int, np.ndarray], None, None]:
    """The audio from ``start_ms`` on, as mono float32 at 22050 Hz: ``(position, samples)`` chunks.

    ``position`` is the chunk's first sample on the timeline, in 22050 Hz samples from timeline
    zero; chunks come in order and follow each other without gaps, except where the stream
    itself has a hole (its timestamps jump), which stays a hole. All channels are averaged; resampling is
    soxr's streaming HQ converter, the engine and quality of ``librosa.resample(res_type=
    "soxr_hq")``, fed in order and flushed at the end, so the output equals librosa's on the
    whole signal. Yields nothing for a file without audio.

    Raises:
        MediaError: the audio fails to decode.
    """
    if not info.has_audio:
        return
    path = Path(info.path)
    with _open(path) as container:
        stream = container.streams.audio[0]
        _audio_channels(stream)
        stream.codec_context.thread_type = "AUTO"
        if _thread_cap:
            stream.codec_context.thread_count = _thread_cap
        try:
            yield from _audio_chunks(container, stream, info, start_ms)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"undecodable audio: {_reason(exc)}") from exc


def _audio_chunks(
    container: Any, stream: Any, info: MediaInfo, start_ms: float
) -> Iterator[tuple[int, np.ndarray]]:
    frames = _decoded(container, stream)
    seek_s = info.origin_s + start_ms / 1000 - _AUDIO_SEEK_LEAD_S
    grid: _SampleGrid | None = None
    if seek_s > info.origin_s:
        # The stream's first frame anchors the sample grid, so that a window decoded after a
        # seek lands on exactly the samples (and resampler phases) of a pass from the top.
        head = next(frames, None)
        if head is None:
            return
        grid = _SampleGrid(head, stream, info.origin_s)
        container.seek(int(seek_s / stream.time_base), stream=stream, backward=True, any_frame=False)
        frames = _decoded(container, stream)
        first = next(frames, None)
        if first is None or float(first.pts * first.time_base) > seek_s + _AUDIO_SEEK_LEAD_S:
            # The demuxer landed after the window (coarse or missing index): start from the top.
            container.seek(0, backward=True)
            frames = _decoded(container, stream)
        else:
            frames = itertools.chain([first], frames)
    resampler: Any = None
    position: int | None = None  # next output sample on the timeline, 22050 Hz
    expected = 0  # where the next input frame should start (source samples) if gapless
    inexact = 0  # frames skipped in a row, waiting for one whose sample index is exact
    pending: list[Any] = []  # gapless frames of one format, mixed and resampled in one call
    pending_samples = 0
    for frame in frames:
        new_rate = grid is not None and int(frame.sample_rate) != grid.rate
        if grid is None or new_rate:
            grid = _SampleGrid(frame, stream, info.origin_s)
        index, exact = grid.index(frame)
        hole = resampler is not None and (new_rate or index - expected > _AUDIO_GAP_S * grid.rate)
        if pending and (hole or not _same_format(pending[0], frame)):
            out = resampler.resample_chunk(_mono(pending), last=False)
            pending, pending_samples = [], 0
            if out.size and position is not None:
                yield position, out
                position += out.size
        if hole:
            # A hole in the stream or a new sample rate: flush what the resampler holds and
            # start again where this frame belongs (silence fills a hole).
            tail = _flush(resampler)
            if tail is not None and position is not None:
                yield position, tail
                position += tail.size
            resampler = None
        expected = index + frame.samples
        if resampler is not None:
            # Per-frame numpy and soxr calls cost more than the work on 1024 samples; soxr's
            # output does not depend on how its input is chunked, so batching is exact.
            pending.append(frame)
            pending_samples += int(frame.samples)
            if pending_samples < _AUDIO_BATCH_SAMPLES:
                continue
            samples = _mono(pending)
            pending, pending_samples = [], 0
        else:
            samples = _mono([frame])
        if resampler is None:
            # Start on a source sample that falls exactly on a 22050 Hz output sample of the
            # whole-stream grid: every decode path then resamples with the same phases.
            skip = -index % grid.period
            if skip >= samples.size or (not exact and inexact < _AUDIO_INEXACT_SKIP):
                inexact += not exact
                continue
            inexact = 0
            samples, index = samples[skip:], index + skip
            resampler = soxr.ResampleStream(grid.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            start = grid.base + index * SAMPLE_RATE // grid.rate
            position = start if position is None else max(position, start)
        out = resampler.resample_chunk(samples, last=False)
        if out.size and position is not None:
            yield position, out
            position += out.size
    if pending:
        out = resampler.resample_chunk(_mono(pending), last=False)
        if out.size and position is not None:
            yield position, out
            position += out.size
    tail = _flush(resampler)
    if tail is not None and position is not None:
        yield position, tail


def _flush(resampler: Any) -> np.ndarray | None:
    """What a resampler still holds at the end of its input, or None."""
    if resampler is None:
        return None
    out: np.ndarray = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
    return out if out.size else None


class _SampleGrid:
    """Exact source-sample indices of audio frames, counted from the stream's first frame.

    Containers with a coarse clock (Matroska and WebM store ms, MPEG-TS 90 kHz ticks) give a
    frame's start only to within a sample or so; codecs with a fixed frame size (AAC 1024, Opus
    960, MP3 1152) put every frame end on the grid ``first end + k * frame_size``, so the index is
    recovered exactly by snapping the end there (the end, not the start: a decoder trims the
    first frame after a seek from its start, as Opus pre-skip does). Where the codec does not
    state its frame size (Opus in PyAV), the largest frame seen so far stands for it.
    """

    def __init__(self, first: Any, stream: Any, origin_s: float) -> None:
        self.rate = int(first.sample_rate)
        self.origin = Fraction(first.pts) * first.time_base
        self.first_samples = int(first.samples)
        self.frame_size = int(stream.codec_context.frame_size or 0)
        self.largest = self.first_samples
        self.period = self.rate // math.gcd(self.rate, SAMPLE_RATE)
        """Source samples between two instants that are on both this and the 22050 Hz grid."""
        self.base = round((float(self.origin) - origin_s) * SAMPLE_RATE)
        """Output position (22050 Hz, on the timeline) of the first frame's first sample."""
        self._sample_clock = first.time_base if first.time_base == Fraction(1, self.rate) else None
        self._first_pts = int(first.pts)

    def index(self, frame: Any) -> tuple[int, bool]:
        """The frame's first sample, and whether that index is exact rather than estimated."""
        if self._sample_clock is not None and frame.time_base == self._sample_clock:
            return int(frame.pts) - self._first_pts, True  # mp4's usual clock counts samples
        tick = Fraction(frame.time_base) * self.rate
        estimate = (Fraction(frame.pts) * frame.time_base - self.origin) * self.rate
        if tick <= 1 or estimate == 0:  # a clock as fine as the samples: the pts is exact
            return round(estimate), True
        self.largest = max(self.largest, int(frame.samples))
        size = self.frame_size or self.largest
        end = estimate + int(frame.samples)
        snapped = self.first_samples + round((end - self.first_samples) / size) * size
        if abs(snapped - end) <= tick / 2 + 1:
            return snapped - int(frame.samples), True
        return round(estimate), False


def _decoded(container: Any, stream: Any) -> Iterator[Any]:
    for frame in container.decode(stream):
        if frame.pts is not None and frame.samples:
            yield frame


def _same_format(a: Any, b: Any) -> bool:
    return bool(a.format.name == b.format.name and a.layout.nb_channels == b.layout.nb_channels)


def _mono(frames: Sequence[Any]) -> np.ndarray:
    """All channels averaged, as float32 in [-1, 1] whatever the sample format.

    ``frames`` follow each other and share one format; each output sample depends only on its
    own column, so mixing them together gives the same bits as one by one.
    """
    frame = frames[0]
    arrays = [_channels(f) for f in frames]
    arr = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)
    name = frame.format.name.rstrip("p")
    if name == "s16":
        data = arr.astype(np.float32) / 32768.0
    elif name == "s32":
        data = (arr.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif name == "u8":
        data = (arr.astype(np.float32) - 128.0) / 128.0
    elif name == "s64":
        data = (arr.astype(np.float64) / 9223372036854775808.0).astype(np.float32)
    else:
        data = arr.astype(np.float32)
    mono: np.ndarray = data.mean(axis=0, dtype=np.float32)
    return np.ascontiguousarray(mono)


def _channels(frame: Any) -> np.ndarray:
    """A frame's samples as ``(channels, samples)``, read from its planes directly.

    Not ``AudioFrame.to_ndarray()``: PyAV 15-18 counts the planes by walking
    ``extended_data`` until a NULL, which for exactly 8 planar channels (AAC or Opus 7.1)
    runs past the 8 data pointers into ``linesize`` and yields a 9th "plane" at a garbage
    address that numpy then reads: a segfault. Only the first ``channels`` planes are touched
    here, each for ``samples`` values, which are the same bytes ``to_ndarray()`` returns.
    """
    channels = int(frame.layout.nb_channels)
    samples = int(frame.samples)
    dtype = _SAMPLE_DTYPES[frame.format.name.rstrip("p")]
    planar = bool(frame.format.is_planar)
    planes: list[Any] = [AudioPlane(frame, k) for k in range(channels if planar else 1)]
    if planar:
        out: np.ndarray = np.stack([np.frombuffer(p, dtype, count=samples) for p in planes])
    else:
        out = np.frombuffer(planes[0], dtype, count=samples * channels).reshape(samples, channels).T
    return out
