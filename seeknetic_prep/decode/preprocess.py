"""The library entry point: a video file in, one
:class:`~seeknetic_prep.decode.profile.Segment` per window out.

Orchestrates the three stages without doing their work: :mod:`~seeknetic_prep.decode.sampling`
says which instants, a :class:`~seeknetic_prep.decode.decoder.VideoDecoder` decodes them in one
forward pass, :mod:`~seeknetic_prep.decode.transform` makes them 224 x 224 upright RGB and cuts
the audio.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from seeknetic_prep.decode.profile import (
    AUDIO_SAMPLES,
    SAMPLE_RATE,
    ResizeMode,
    Segment,
    Window,
)
from seeknetic_prep.decode.sampling import frame_targets, plan_windows
from seeknetic_prep.decode.transform import AudioTimeline, check_resize, fit, scaled_size, upright
from seeknetic_prep.errors import InvalidArgumentError

if TYPE_CHECKING:
    from seeknetic_prep.decode.decoder import VideoDecoder
    from seeknetic_prep.decode.hw import DecodeMode
    from seeknetic_prep.decode.probe import MediaInfo
    from seeknetic_prep.decode.source import Source

__all__ = ["iter_segments", "preprocess"]


def preprocess(
    path: str | os.PathLike[str],
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    resize: ResizeMode = "crop",
    decode: DecodeMode = "auto",
    threads: int = 0,
) -> list[Segment]:
    """Decode a video into its 10-second windows (or one custom window) as Seeknetic tensors.

    Args:
        path: any file PyAV decodes (mp4, mov, mkv, webm, avi; H.264, HEVC 8/10-bit, VP9, ...).
        start_ms: start of one custom window on the file's timeline; >= 0, before the end.
        end_ms: end of that window (> ``start_ms``; clipped to the duration).
        resize: "crop" (shorter side to 224, centre crop; the default), "squash" (both sides
            to 224) or "pad" (longer side to 224, black bars).
        decode: "auto" (NVDEC when a CUDA device is present and the codec is H.264 or HEVC,
            else the CPU), "cpu", or "cuda" (an error without a device); see
            :mod:`seeknetic_prep.decode.hw`.
        threads: FFmpeg threads per decoder (0: FFmpeg's default, one per core).

    Returns:
        One segment per window, in order: ``video`` uint8 (1, 12, 3, 224, 224) RGB, ``audio``
        float32 (1, 1, 220500) mono 22050 Hz, ``frame_times_ms`` the pts of the frames used.

    Raises:
        MediaError: the file is missing, empty, not media, has no video, or is truncated.
        InvalidArgumentError: a window bound or ``resize`` breaks its rule.

    >>> import seeknetic_prep as sp
    >>> segs = sp.preprocess("fixtures/demo/lake.mp4")
    >>> [(s.start_ms, s.end_ms) for s in segs], segs[0].video.shape
    ([(0, 10000), (10000, 12000)], (1, 12, 3, 224, 224))
    """
    # the decoder's PyAV side: check_resize and the window types stay importable without it
    from seeknetic_prep.decode.decoder import VideoDecoder

    mode = check_resize(resize)
    with VideoDecoder(path, device=decode, threads=threads) as decoder:
        windows = plan_windows(decoder.info.duration_ms, start_ms=start_ms, end_ms=end_ms)
        return list(_segments(decoder, windows, mode))


def iter_segments(
    path: Source,
    windows: Sequence[Window] | None = None,
    *,
    resize: ResizeMode = "crop",
    decode: DecodeMode = "auto",
    info: MediaInfo | None = None,
    threads: int = 0,
    gpu_allowed: bool = True,
) -> Iterator[Segment]:
    """Yield each window's segment as soon as it is decoded: one forward pass, flat memory.

    Args:
        path: the video file, or a seekable binary file of it (a URL's range reader).
        windows: ascending, non-overlapping windows on the file's timeline; ``None`` for all
            10-second windows. Ends past the content are clipped to it.
        resize: as for :func:`preprocess`.
        decode: as for :func:`preprocess`.
        info: the file's :func:`~seeknetic_prep.decode.probe.probe`, when the caller has it
            already (a run probed the file to plan it): not probed again while its size is unchanged.
        threads: FFmpeg threads per decoder (0: FFmpeg's default, one per core).
        gpu_allowed: whether ``decode="auto"`` may use NVDEC (False in a mixed pool's CPU workers).

    Raises:
        MediaError: as for :func:`preprocess`; a file that turns out to be cut short midway
            raises when the pass reaches the missing part (earlier windows were already yielded).
        InvalidArgumentError: windows out of order, overlapping, or starting past the end.
    """
    # the decoder's PyAV side: check_resize and the window types stay importable without it
    from seeknetic_prep.decode.decoder import VideoDecoder

    mode = check_resize(resize)
    with VideoDecoder(path, device=decode, threads=threads, gpu_allowed=gpu_allowed,
                      info=info) as decoder:
        info = decoder.info
        if windows is None:
            planned = plan_windows(info.duration_ms)
        else:
            planned = [_clip(w, info) for w in windows]
            for a, b in itertools.pairwise(planned):
                if b.start_ms < a.end_ms:
                    raise InvalidArgumentError(
                        f"Invalid windows {a} then {b}: must be ascending and must not overlap."
                    )
        yield from _segments(decoder, planned, mode)


def _clip(window: Window, info: MediaInfo) -> Window:
    if window.start_ms >= info.duration_ms:
        raise InvalidArgumentError(
            f"Invalid window start {window.start_ms} ms: must be before the end of the content "
            f"({info.duration_ms} ms)."
        )
    return Window(window.index, window.start_ms, min(window.end_ms, info.duration_ms))


def _segments(decoder: VideoDecoder, windows: Sequence[Window], resize: ResizeMode) -> Iterator[Segment]:
    """The windows' segments from one frame pass and one audio pass of ``decoder``."""
    if not windows:
        return
    info = decoder.info
    targets = [frame_targets(w) for w in windows]  # exact: a target on a frame's start shows it
    size = scaled_size(info.width, info.height, resize)
    batches = decoder.batches_at(targets, size=size)
    chunks = decoder.audio(windows[0].start_ms)
    audio = AudioTimeline(chunks)
    try:
        for window, window_targets in zip(windows, targets, strict=True):
            batch = next(batches)
            pictures = fit(upright(batch.data, info.rotation, info.mirrored), resize)
            video = np.ascontiguousarray(pictures.transpose(0, 3, 1, 2)[None])
            start = round(window.start_ms * SAMPLE_RATE / 1000)
            stop = round(window.end_ms * SAMPLE_RATE / 1000)
            samples = audio.take(start, stop, AUDIO_SAMPLES)
            yield Segment(
                index=window.index,
                start_ms=window.start_ms,
                end_ms=window.end_ms,
                video=video,
                audio=samples.reshape(1, 1, AUDIO_SAMPLES),
                frame_times_ms=batch.pts_ms,
                has_audio=info.has_audio,
                target_times_ms=tuple(float(t) for t in window_targets),
                decoder=decoder.device,
            )
    finally:
        # A caller that stops early closes both passes now, not whenever the GC gets to them.
        batches.close()
        chunks.close()
