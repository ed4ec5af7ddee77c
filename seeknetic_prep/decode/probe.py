"""What a file holds, and where its content really ends: :class:`MediaInfo` and :func:`probe`.

**Timeline.** Times are milliseconds from the presentation time of the video stream's first
frame (its origin), so a file whose video starts at pts 0 reads as-is and one whose container
clock starts elsewhere (MPEG-TS, trimmed edits) still starts at 0. Audio is placed on the same
clock: an audio stream whose first sample is 2 s after the first video frame starts at 2000 ms.

**Duration** is where the video ends: the end of its last frame (pts + duration), found by
demuxing the file's last seconds, not by trusting the header. When the header declares more
than the data holds (a cut download, a faststart mp4 cut short) the file is refused as
truncated rather than padded with copies of the last good frame.

Kept apart from the frame and audio passes: describing a file decodes one frame and demuxes
its tail, and a run does it once per file when it plans the file, long before any window.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import Any

import av.error

from seeknetic_prep.decode.boxes import TAIL_SECONDS
from seeknetic_prep.decode.source import (
    Source,
    audio_channels,
    open_container,
    reason,
    set_video_threads,
    source_name,
    source_size,
)
from seeknetic_prep.decode.streams import best_video_stream
from seeknetic_prep.decode.transform import orientation
from seeknetic_prep.errors import MediaError

__all__ = ["TRUNCATION_SLACK_S", "MediaInfo", "probe", "probe_container"]

TRUNCATION_SLACK_S = 0.1
"""How far the data may fall short of the header's duration before the file counts as cut."""


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, as the decoder sees it.

    ``width``/``height`` are the display size (after rotation and sample aspect ratio);
    ``coded_width``/``coded_height`` are the stored picture. ``rotation`` is the display matrix's
    counter-clockwise angle as FFmpeg reports it (an iPhone portrait clip says -90); when the
    matrix also mirrors (``mirrored``: a flip left to right after the turn) it is the turn that
    goes with that flip (:func:`~seeknetic_prep.decode.transform.orientation`).
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
    mirrored: bool = False
    """Flip left to right after turning by ``rotation`` (mirror or front-camera matrices)."""
    video_index: int = 0
    """The container's stream index of the video decoded: the default track when there are
    several (:func:`~seeknetic_prep.decode.streams.best_video_stream`)."""

    def record(self) -> dict[str, Any]:
        """What a user filters a dataset on before training, as plain values: the results'
        per-file columns (``duration_ms``, ``size_bytes``, display ``width``/``height``, ``fps``,
        codecs, pixel format, audio rate and channels, ``rotation``, ``mirrored``, ``has_audio``)."""
        return {"duration_ms": self.duration_ms, "size_bytes": self.size_bytes, "width": self.width,
                "height": self.height, "fps": round(float(self.fps), 6), "video_codec": self.video_codec,
                "pix_fmt": self.pix_fmt, "audio_codec": self.audio_codec, "audio_rate": self.audio_rate,
                "audio_channels": self.audio_channels, "rotation": self.rotation, "mirrored": self.mirrored,
                "has_audio": self.has_audio}


def probe(source: Source) -> MediaInfo:
    """Open a file, check it is usable video, and describe it.

    Decodes one frame (for the rotation and the timeline origin) and demuxes the last seconds
    (for the true duration), so it stays fast whatever the file's length.

    Raises:
        MediaError: missing, empty, not media, no video stream, undecodable or truncated.

    >>> probe("fixtures/rotated90.mp4").rotation
    -90
    """
    info, container = probe_container(source, threads=None)
    container.close()
    return info


def probe_container(source: Source, *, threads: int | None) -> tuple[MediaInfo, Any]:
    """:func:`probe`, keeping the container open for the frame pass; its video decoder is
    threaded for ``threads`` first (threading cannot change once it is open), unless None."""
    size = source_size(source)
    container = open_container(source)
    try:
        info = _describe(source_name(source), container, size, threads)
    except BaseException:
        container.close()
        raise
    return info, container


def _describe(name: str, container: Any, size: int, threads: int | None) -> MediaInfo:
    vs = best_video_stream(name, container)
    if threads is not None:
        set_video_threads(vs, threads)
    try:
        first = next(container.decode(vs), None)
    except av.error.FFmpegError as exc:
        raise MediaError(name, f"undecodable video: {reason(exc)}") from exc
    if first is None or first.pts is None:
        raise MediaError(name, "undecodable video: no frame could be decoded")
    origin = float(first.pts * first.time_base)
    rotation, mirrored = orientation(_display_matrix(first), float(first.rotation))
    end_s = _content_end(name, container, vs, origin, size)
    fps = float(vs.average_rate or vs.guessed_rate or 0) or 0.0
    sar = vs.sample_aspect_ratio
    cw, ch = int(vs.codec_context.width), int(vs.codec_context.height)
    dw = round(cw * sar) if sar and sar > 0 and sar != 1 else cw
    width, height = (ch, dw) if rotation % 180 else (dw, ch)
    audio = container.streams.audio[0] if container.streams.audio else None
    duration_ms = round((end_s - origin) * 1000)
    if duration_ms <= 0:
        raise MediaError(name, f"no content: the video lasts {duration_ms} ms")
    return MediaInfo(
        path=name,
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
        audio_channels=None if audio is None else audio_channels(audio),
        origin_s=origin,
        size_bytes=size,
        mirrored=mirrored,
        video_index=int(vs.index),
    )


def _display_matrix(frame: Any) -> list[int]:
    """The frame's display matrix (nine 32-bit ints), or [] when it has none."""
    for side in frame.side_data:
        if str(side.type).endswith("DISPLAYMATRIX") and len(bytes(side)) == 36:
            return list(struct.unpack("<9i", bytes(side)))
    return []


def _content_end(name: str, container: Any, vs: Any, origin: float, size: int) -> float:
    """Where the last video frame ends, on the container clock, in seconds.

    Demuxes (no decoding) from a few seconds before the declared end. A file cut short stops
    delivering packets where its data stops, well before what its header promised: its
    per-stream durations, its frame count (AVI keeps that even when its index is gone), or
    the container's duration.
    """
    streams = [vs, *container.streams.audio[:1]]
    declared, whole = _declared_ends(container, streams, vs)
    declared_end = max([*declared.values(), *([whole] if whole else [])], default=origin)
    seek_to = declared.get(vs.index, declared_end) - TAIL_SECONDS
    seek_pts = int(max(seek_to, origin) / vs.time_base)
    # Any packet will do to start demuxing from (nothing is decoded), which saves most of a
    # GOP on a small file. A file that then looks cut short is scanned again from a keyframe,
    # so the verdict and its message are those of the thorough scan.
    try:
        ends, latest = _tail_ends(name, container, streams, vs, seek_pts, any_frame=True)
        complete = vs.index in ends and _shortfall(ends, declared, whole, vs, origin) is None
    except MediaError:
        complete = False
    if not complete:
        ends, latest = _tail_ends(name, container, streams, vs, seek_pts, any_frame=False)
    if vs.index not in ends:
        raise MediaError(name, "truncated: no video data where the header says the video ends")
    if ends[vs.index] <= latest[vs.index]:  # one frame and no stored duration: one frame period
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        ends[vs.index] = latest[vs.index] + (float(1 / rate) if rate else 0.04)
    short = _shortfall(ends, declared, whole, vs, origin)
    if short is not None:
        what, want, got = short
        raise MediaError(
            name,
            f"truncated: the header declares {what}{want - origin:.3f} s but the data ends at "
            f"{got - origin:.3f} s ({size} bytes)",
        )
    return float(ends[vs.index])


def _declared_ends(
    container: Any, streams: list[Any], vs: Any
) -> tuple[dict[int, float], float | None]:
    """Where the header says each stream ends, and the whole file (None: not said, or other
    streams than those demuxed exist), on the container clock in seconds."""
    declared: dict[int, float] = {}
    for s in streams:
        if s.duration:
            declared[s.index] = float((s.start_time or 0) * s.time_base + s.duration * s.time_base)
    if vs.frames and vs.average_rate and not _edited(container):
        by_count = float((vs.start_time or 0) * vs.time_base + vs.frames / vs.average_rate)
        declared[vs.index] = max(declared.get(vs.index, by_count), by_count)
    whole = None
    if container.duration and len(container.streams) == len(streams):
        # Only when the streams demuxed are all there is: a subtitle or data track may
        # legitimately run past the picture and the sound.
        whole = (float(container.duration) + float(container.start_time or 0)) / 1e6
    return declared, whole


def _edited(container: Any) -> bool:
    """Whether the container may show less than its stored frames: in mp4/mov an edit list
    hides samples (the GOP head kept by a cut at a non-keyframe, the media a two-segment edit
    skips) that the frame count still counts, so only the stream's duration (the edits' total)
    says where the video ends."""
    return "mov" in str(container.format.name).split(",")


def _shortfall(
    ends: dict[int, float], declared: dict[int, float], whole: float | None, vs: Any, origin: float
) -> tuple[str, float, float] | None:
    """The first place the data falls short of the header, as ``(what, declared end, data
    end)`` (``what`` is ``"video up to "``, ``"audio up to "`` or empty for the whole file);
    None when every stream reaches what the header declares."""
    for idx, want in declared.items():
        got = ends.get(idx, origin)
        if got < want - TRUNCATION_SLACK_S:
            return ("video" if idx == vs.index else "audio") + " up to ", want, got
    got_all = max(ends.values())
    if whole is not None and got_all < whole - TRUNCATION_SLACK_S:
        return "", whole, got_all
    return None


def _tail_ends(
    name: str, container: Any, streams: list[Any], vs: Any, seek_pts: int, *, any_frame: bool
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
        raise MediaError(name, f"truncated or corrupt near the end: {reason(exc)}") from exc
    return ends, latest


def _interval(times: list[float]) -> float:
    """A frame duration guess for containers that do not store one: the last pts step."""
    steps = sorted(b - a for a, b in itertools.pairwise(sorted(times[-8:])) if b > a)
    return steps[len(steps) // 2] if steps else 0.0
