"""The audio pass: a file's audio from a given time on, as mono float32 at 22050 Hz.

All channels are averaged; resampling is soxr's streaming HQ converter, the engine and quality
of ``librosa.resample(res_type="soxr_hq")``, fed in order and flushed at the end, so the output
equals librosa's on the whole signal. A window decoded on its own (after a seek) gets the same
samples as a pass over the whole file: the resampler starts on the stream's own 22050 Hz grid
(:class:`_SampleGrid`), whatever frame decoding began at.

Kept apart from the frame pass: it reads its own container, alongside the frames, and shares
nothing with them but the timeline's origin.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator, Iterator, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av.error
import numpy as np
import soxr
from av.audio.plane import AudioPlane

from seeknetic_prep.decode.profile import SAMPLE_RATE
from seeknetic_prep.decode.source import Source, audio_channels, demux_only, open_container, reason
from seeknetic_prep.errors import MediaError

if TYPE_CHECKING:
    from seeknetic_prep.decode.probe import MediaInfo

__all__ = ["audio_pass"]

_AUDIO_SEEK_LEAD_S = 1.0
"""Audio decoding for a window starts this much earlier: the codec (MDCT overlap, Opus
pre-roll) and the resampler are settled by the window's start."""
_AUDIO_BATCH_SAMPLES = 8192
"""Source samples gathered before they are mixed down and resampled in one call."""
_AUDIO_INEXACT_SKIP = 3
"""Frames the resampler may wait for one whose sample index is exact, when (re)starting."""
_SAMPLE_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(t) for name, t in (("u8", np.uint8), ("s16", np.int16), ("s32", np.int32),
                                      ("s64", np.int64), ("flt", np.float32), ("dbl", np.float64))
}
"""numpy dtype of each FFmpeg sample format (packed name; the planar one adds a ``p``)."""


def audio_pass(
    source: Source, info: MediaInfo, start_ms: float, *, threads: int
) -> Generator[tuple[int, np.ndarray], None, None]:
    """The audio from ``start_ms`` on, as mono float32 at 22050 Hz: ``(position, samples)`` chunks.

    ``position`` is the chunk's first sample on the timeline, in 22050 Hz samples from timeline
    zero; chunks come in order and follow each other without gaps, except where the stream
    itself has a hole (its timestamps jump further than the container's clock is precise),
    which stays a hole, silent. Yields nothing for a file
    without audio. ``source`` is opened again (a container of the pass's own); ``threads`` caps
    the audio decoder's threads (0: FFmpeg decides).

    Raises:
        MediaError: the audio fails to decode.
    """
    if not info.has_audio:
        return
    with open_container(source) as container:
        stream = container.streams.audio[0]
        demux_only(container, stream)
        audio_channels(stream)
        stream.codec_context.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        try:
            start = _frames_for(container, stream, info, start_ms)
            if start is not None:
                frames, grid = start
                yield from _Resample(stream, info.origin_s, grid).run(frames)
        except av.error.FFmpegError as exc:
            raise MediaError(info.path, f"undecodable audio: {reason(exc)}") from exc


def _frames_for(
    container: Any, stream: Any, info: MediaInfo, start_ms: float
) -> tuple[Iterator[Any], _SampleGrid | None] | None:
    """The decoded frames to resample for audio from ``start_ms`` on, and the stream's sample
    grid when a seek had to read it first; None when the stream has no frame at all."""
    frames = _decoded(container, stream)
    seek_s = info.origin_s + start_ms / 1000 - _AUDIO_SEEK_LEAD_S
    if seek_s <= info.origin_s:
        return frames, None
    # The stream's first frame anchors the sample grid, so that a window decoded after a
    # seek lands on exactly the samples (and resampler phases) of a pass from the top.
    head = next(frames, None)
    if head is None:
        return None
    grid = _SampleGrid(head, stream, info.origin_s)
    container.seek(int(seek_s / stream.time_base), stream=stream, backward=True, any_frame=False)
    frames = _decoded(container, stream)
    first = next(frames, None)
    if first is None or float(first.pts * first.time_base) > seek_s + _AUDIO_SEEK_LEAD_S:
        # The demuxer landed after the window (coarse or missing index): start from the top.
        container.seek(0, backward=True)
        return _decoded(container, stream), grid
    return itertools.chain([first], frames), grid


class _Resample:
    """Decoded frames in, ``(position, mono 22050 Hz samples)`` out, placed on the timeline.

    Gapless frames of one format are mixed and resampled in batches; a hole in the stream or a
    new sample rate flushes what the resampler holds and starts it again where the next frame
    belongs (silence fills a hole).
    """

    def __init__(self, stream: Any, origin_s: float, grid: _SampleGrid | None) -> None:
        self.stream = stream
        self.origin_s = origin_s
        self.grid = grid
        self.resampler: Any = None
        self.position: int | None = None  # next output sample on the timeline, 22050 Hz
        self.expected = 0  # where the next input frame should start (source samples) if gapless
        self.inexact = 0  # frames skipped in a row, waiting for one whose sample index is exact
        self.pending: list[Any] = []  # gapless frames of one format, mixed and resampled in one call
        self.pending_samples = 0

    def run(self, frames: Iterator[Any]) -> Iterator[tuple[int, np.ndarray]]:
        for frame in frames:
            yield from self._feed(frame)
        yield from self._flush_pending()
        yield from self._flush_resampler()

    def _feed(self, frame: Any) -> Iterator[tuple[int, np.ndarray]]:
        new_rate = self.grid is not None and int(frame.sample_rate) != self.grid.rate
        if self.grid is None or new_rate:
            self.grid = _SampleGrid(frame, self.stream, self.origin_s)
        index, exact = self.grid.index(frame)
        # Players honour the timestamps, so any jump past the clock's own precision is a hole,
        # kept as silence: A/V sync is written as such a jump (an 80 ms priming gap in a
        # fragmented mp4), and a recording that lost packets goes on at their times. Closing
        # up every jump under 0.1 s, as before, played the rest of the sound early.
        hole = self.resampler is not None and (new_rate or index - self.expected > self.grid.slack)
        if hole or (self.pending and not _same_format(self.pending[0], frame)):
            yield from self._flush_pending()
        if hole:
            yield from self._flush_resampler()
        self.expected = index + frame.samples
        if self.resampler is None:
            yield from self._start(frame, index, exact)
            return
        # Per-frame numpy and soxr calls cost more than the work on 1024 samples; soxr's
        # output does not depend on how its input is chunked, so batching is exact.
        self.pending.append(frame)
        self.pending_samples += int(frame.samples)
        if self.pending_samples >= _AUDIO_BATCH_SAMPLES:
            yield from self._flush_pending()

    def _start(self, frame: Any, index: int, exact: bool) -> Iterator[tuple[int, np.ndarray]]:
        """Start the resampler on a source sample that falls exactly on a 22050 Hz output
        sample of the whole-stream grid: every decode path then resamples with the same phases."""
        grid = self.grid
        assert grid is not None  # set by _feed
        samples = _mono([frame])
        skip = -index % grid.period
        if skip >= samples.size or (not exact and self.inexact < _AUDIO_INEXACT_SKIP):
            self.inexact += not exact
            return
        self.inexact = 0
        samples, index = samples[skip:], index + skip
        self.resampler = soxr.ResampleStream(grid.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        start = grid.base + index * SAMPLE_RATE // grid.rate
        self.position = start if self.position is None else max(self.position, start)
        yield from self._emit(self.resampler.resample_chunk(samples, last=False))

    def _flush_pending(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.pending:
            samples = _mono(self.pending)
            self.pending, self.pending_samples = [], 0
            yield from self._emit(self.resampler.resample_chunk(samples, last=False))

    def _flush_resampler(self) -> Iterator[tuple[int, np.ndarray]]:
        """What the resampler still holds at the end of its input; it is gone afterwards."""
        if self.resampler is not None:
            yield from self._emit(self.resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self.resampler = None

    def _emit(self, out: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        if out.size and self.position is not None:
            yield self.position, out
            self.position += out.size


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
        tick = Fraction(first.time_base) * self.rate
        self.slack = 0 if tick <= 1 else math.ceil(tick / 2) + 1
        """Samples a frame's start may be off by on this clock (a ms clock at 48 kHz: 25), or
        0 where the clock counts samples: a jump in timestamps beyond it is real."""

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
