"""Which video stream of a file is *the* video: the one FFmpeg's ``av_find_best_stream`` picks.

A file may hold several video streams: cover art and thumbnails (one-picture "video"), and
real second tracks (a preview, a camera angle, a disabled track a phone or editor left in).
Players show the default (in mp4/mov: the enabled) track, and so do we; taking the first
stream, as before, decoded whatever track the muxer happened to write first.

Kept apart from :mod:`~seeknetic_prep.decode.source` (the container seam): this is a rule
about the file's content, used the same way by the probe and by every container the decoder
opens, so a window never mixes two tracks.
"""

from __future__ import annotations

from typing import Any

import av

from seeknetic_prep.decode.source import video_stream

__all__ = ["best_video_stream"]

_STILL = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails
_IMPAIRED = av.stream.Disposition.hearing_impaired | av.stream.Disposition.visual_impaired


def best_video_stream(name: str, container: Any) -> Any:
    """The video stream ``av_find_best_stream`` would pick, cover art and thumbnails left out.

    As FFmpeg ranks them: not marked for the impaired, then default (mp4/mov: enabled) first;
    then the higher bit rate, then more frames; on a tie, the first.

    Raises:
        MediaError: no video stream but cover art or thumbnails (see
            :func:`~seeknetic_prep.decode.source.video_stream`).
    """
    candidates = [s for s in container.streams.video if not s.disposition & _STILL]
    if len(candidates) <= 1:
        return video_stream(name, container)

    def rank(stream: Any) -> tuple[int, int, int]:
        flags = stream.disposition
        disposition = int(not flags & _IMPAIRED) + int(bool(flags & av.stream.Disposition.default))
        return disposition, int(stream.codec_context.bit_rate or 0), int(stream.frames or 0)

    best = candidates[0]
    for stream in candidates[1:]:
        if rank(stream) > rank(best):
            best = stream
    return best
