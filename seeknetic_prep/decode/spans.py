"""Where a decode task's packets lie in its file: byte spans from the container's index.

A file in a bucket is read through range requests (:mod:`seeknetic_prep.sources.reader`), and
each request costs a round trip and, on S3, money; a reader that cannot know how far the
decoder will go must start small after every seek and grow (four requests to reach 2 MiB),
or fetch bytes nobody reads. The container knows: an MP4's or a Matroska file's index gives
every packet's position, so the bytes a task's frame pass and audio pass will read are known
before the first one is read. :func:`byte_spans` turns that index into a few byte ranges, and
the reader fetches inside them in large requests that stop at their ends.

These are hints, not promises: a read outside them is served as before, and a container
without a usable index (MPEG-TS, a stream) gives none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from seeknetic_prep.decode.source import Source, open_container
from seeknetic_prep.errors import MediaError
from seeknetic_prep.util.ranges import merged

if TYPE_CHECKING:
    from seeknetic_prep.decode.probe import MediaInfo
    from seeknetic_prep.decode.profile import Window

__all__ = ["byte_spans", "window_spans"]

_VIDEO_AFTER_S = 0.5
"""Packets read past a task's end: the frame pass looks a few pictures ahead of its last
target, and with B-frames a picture is stored before the ones it precedes on screen."""
_AUDIO_BEFORE_S = 1.5
"""Audio read before a window's start: the audio pass's one-second lead, and a packet's length."""
_AUDIO_AFTER_S = 0.5


def byte_spans(source: Source, info: MediaInfo, windows: Sequence[Window]) -> list[tuple[int, int]]:
    """The byte ranges ``[start, end)`` that decoding ``windows`` of ``source`` reads, sorted and
    merged: the video from the keyframe before the first window to just past the last one, the
    audio over the same time (and its stream's first packet, which anchors the audio pass's
    sample grid). Empty when the index does not say (no entries, or no positions).

    Opens the container once more (its header and index: from a reader's cache, no request).

    Raises:
        MediaError: the container cannot be opened (as the decode itself would).
    """
    return merged(span for spans in window_spans(source, info, windows) for span in spans)


def window_spans(source: Source, info: MediaInfo, windows: Sequence[Window]) -> list[list[tuple[int, int]]]:
    """:func:`byte_spans` of each window alone, from one opening of the container: a plan
    finds them once for all its tasks, which then need not open the container a third time
    (the frame pass and the audio pass each open it) before their first request."""
    if not windows:
        return []
    container = open_container(source)
    try:
        return [_spans(container, info, [w]) for w in windows]
    except MediaError:
        raise
    except Exception:  # an index PyAV cannot read costs the hint, never the task
        return [[] for _ in windows]
    finally:
        container.close()


def _spans(container: Any, info: MediaInfo, windows: Sequence[Window]) -> list[tuple[int, int]]:
    start_s = info.origin_s + min(w.start_ms for w in windows) / 1000
    end_s = info.origin_s + max(w.end_ms for w in windows) / 1000
    size = info.size_bytes
    spans: list[tuple[int, int]] = []
    if info.video_index < len(container.streams):
        video = container.streams[info.video_index]
        spans += _span(video, start_s, end_s + _VIDEO_AFTER_S, size, keyframe=True)
    if container.streams.audio:  # the audio pass decodes the first audio stream
        audio = container.streams.audio[0]
        spans += _span(audio, start_s - _AUDIO_BEFORE_S, end_s + _AUDIO_AFTER_S, size, keyframe=False)
        spans += _first_packet(audio)  # it anchors the audio pass's sample grid
    return merged(spans)


def _span(stream: Any, start_s: float, end_s: float, size: int, *, keyframe: bool) -> list[tuple[int, int]]:
    """The bytes of ``stream``'s packets from the one a seek to ``start_s`` lands on (the
    keyframe before it, for video) to the first one indexed at or after ``end_s``, or to the
    end of the file when none is: an index of keyframes only (Matroska's cues) bounds a
    stretch by the keyframes around it, and says nothing of the last GOP."""
    entries = stream.index_entries
    if len(entries) == 0 or stream.time_base is None:
        return []
    tb = float(stream.time_base)
    first = entries.search_timestamp(int(start_s / tb), backward=True, any_frame=not keyframe)
    a = entries[max(first, 0)]  # -1: before the first entry
    last = entries.search_timestamp(int(end_s / tb), backward=False, any_frame=True)
    end = size if last < 0 else entries[last].pos + entries[last].size
    if a.pos < 0 or (last >= 0 and entries[last].pos < 0) or end <= a.pos:
        return []  # positions unknown, or packets out of order in the file: no hint
    return [(int(a.pos), int(end))]


def _first_packet(stream: Any) -> list[tuple[int, int]]:
    entries = stream.index_entries
    if len(entries) == 0 or entries[0].pos < 0:
        return []
    return [(int(entries[0].pos), int(entries[0].pos + max(entries[0].size, 1)))]
