"""The video frame pass: for ascending target times, the frames on screen then, in one pass.

The frame on screen at t is the last frame whose pts <= t, exact for constant and variable
frame rates. One forward pass: seek to the keyframe before the first target, decode forward,
keep only the latest decoded frame as the candidate, and convert to RGB only the frames chosen
(:mod:`~seeknetic_prep.decode.colour`). Pictures that no target shows and nothing references
(most B-frames) are never decoded: which ones is decided from the packets' pts and dts in a
short look-ahead (:class:`_Lookahead`), so the choice stays exact. Targets far apart get a seek
each, so a window late in a long file does not decode everything before it.

Kept apart from the container (:mod:`~seeknetic_prep.decode.source`) and the audio pass: this
module decides *which* pictures to decode, and nothing else.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av.error
import numpy as np

from seeknetic_prep.decode.colour import Converter
from seeknetic_prep.decode.probe import TRUNCATION_SLACK_S
from seeknetic_prep.decode.source import reason
from seeknetic_prep.errors import InvalidArgumentError, MediaError

if TYPE_CHECKING:
    from seeknetic_prep.decode.probe import MediaInfo

__all__ = ["frame_pass"]

_RESEEK_GAP_MS = 20_000.0
"""Targets further apart than this get a fresh seek instead of decoding the gap."""
_NONREF_SKIP_CODECS = frozenset({"h264", "hevc"})
"""Decoders whose ``skip_frame="NONREF"`` drops only pictures nothing references (checked on
the fixtures, frame by frame), so frames nobody looks at can go undecoded."""
_LOOKAHEAD_PACKETS = 64
"""Packets held back while their fate is open; past this (no dts in the container) they are
decoded in full, which is always exact."""


def frame_pass(
    container: Any,
    vs: Any,
    info: MediaInfo,
    targets_ms: Sequence[float | Fraction],
    coded_size: tuple[int, int],
    *,
    threads: int,
    reopen: Callable[[], tuple[Any, Any]] | None = None,
) -> Generator[tuple[float, np.ndarray], None, None]:
    """For each target time (ascending), the frame on screen then: ``(pts_ms, rgb)``.

    ``rgb`` is ``uint8 (h, w, 3)``, ``coded_size = (w, h)``, in the stored orientation;
    consecutive targets on one frame share one array. ``threads`` caps swscale's threads.
    ``reopen`` closes the container and opens the file afresh, as ``(container, video
    stream)``: the last resort when no seek lands at or before a target (see :func:`_scan_run`).

    Raises:
        InvalidArgumentError: the targets are not ascending.
        MediaError: the file fails to decode, its frames stop before a target, or even
            decoding from its first byte starts after a target.
    """
    if not targets_ms:
        return
    if any(b < a for a, b in itertools.pairwise(targets_ms)):
        raise InvalidArgumentError(f"Invalid targets_ms {list(targets_ms)}: must be ascending.")
    src = _Input(container, vs, reopen)
    cache = Converter(coded_size, threads)  # the last converted frame, shared across runs
    run: list[float | Fraction] = []
    try:
        # Targets far apart (sparse windows) get a seek each; close ones share one pass.
        for t in targets_ms:
            if run and t - run[-1] > _RESEEK_GAP_MS:
                yield from _scan_run(src, info, run, cache)
                run = []
            run.append(t)
        yield from _scan_run(src, info, run, cache)
    except _Damaged as exc:
        raise MediaError(info.path, f"undecodable video: damaged {_damaged_range(src, info, exc.pts)} "
                         f"({exc.cause})") from exc
    except av.error.FFmpegError as exc:
        raise MediaError(info.path, f"undecodable video: {reason(exc)}") from exc


def _damaged_range(src: _Input, info: MediaInfo, pts: int | None) -> str:
    """Where the damage is, on the timeline: from the packet the decoder refused to the next
    keyframe (where a decoder could start again), or to the end of the video."""
    tb = Fraction(src.vs.time_base)
    origin = _origin_ticks(info, tb)
    if pts is None:
        return "(at an unknown time)"
    start_ms = float((pts - origin) * tb * 1000)
    end_ms = float(info.duration_ms)
    try:
        # From the keyframe before it (a forward seek may skip one), demuxing only.
        src.container.seek(pts, stream=src.vs, backward=True, any_frame=False)
        for packet in src.container.demux(src.vs):
            if packet.pts is not None and packet.is_keyframe and packet.pts > pts:
                end_ms = float((packet.pts - origin) * tb * 1000)
                break
    except av.error.FFmpegError:
        pass  # no keyframe to be found after it: to the end
    return f"from {start_ms:.0f} ms to {end_ms:.0f} ms"


class _Input:
    """The container the pass reads, and how to get a fresh one (from byte 0) when seeks fail."""

    def __init__(self, container: Any, vs: Any, reopen: Callable[[], tuple[Any, Any]] | None) -> None:
        self.container, self.vs, self._reopen = container, vs, reopen

    def fresh(self) -> bool:
        """Open the file again, unread; False when the pass has no way to."""
        if self._reopen is None:
            return False
        self.container, self.vs = self._reopen()
        return True


def _scan_run(
    src: _Input, info: MediaInfo, targets_ms: Sequence[float | Fraction], cache: Converter
) -> Iterator[tuple[float, np.ndarray]]:
    tb = Fraction(src.vs.time_base)
    origin = _origin_ticks(info, tb)
    # Targets as stream ticks, exactly: frame pts <= target iff pts <= floor(target / tick).
    # Floats here picked the previous frame whenever a target was exactly a frame's start
    # (24/48/60 fps: a third of the targets) and rounding put it one ulp below.
    targets = [origin + math.floor(Fraction(t) / 1000 / tb) for t in targets_ms]
    frames, first = _land(src, info, targets, targets_ms, origin)
    j = 0
    current: Any = first
    del first  # one full-size picture held at a time (a 4K 10-bit one is 25 MB)
    try:
        for nxt in frames:
            nxt_pts = _ticks(nxt, tb)
            while j < len(targets) and targets[j] < nxt_pts:
                yield _ms(current, origin, tb), cache.pick(current)
                j += 1
            if j == len(targets):
                return
            current = nxt
    finally:
        frames.close()
    # End of stream: the last frame stays on screen until its own end, and no further.
    shown_until = _ticks(current, tb)
    if current.duration:
        shown_until += math.floor(Fraction(current.duration) * current.time_base / tb)
    else:
        shown_until = max(shown_until, origin + math.floor(Fraction(info.duration_ms, 1000) / tb))
    slack = Fraction(TRUNCATION_SLACK_S) / tb
    while j < len(targets):
        if targets[j] >= shown_until + slack:
            raise MediaError(
                info.path,
                f"truncated: the video stops at {_ms(current, origin, tb):.0f} ms, "
                f"before {float(targets_ms[j]):.0f} ms",
            )
        yield _ms(current, origin, tb), cache.pick(current)
        j += 1


def _land(src: _Input, info: MediaInfo, targets: Sequence[int], targets_ms: Sequence[float | Fraction],
          origin: int) -> tuple[Any, Any]:
    """The frames from a landing at or before the first target, and the first of them."""
    tb = Fraction(src.vs.time_base)
    first_target = targets[0]
    # Seek to the keyframe at or before the first target; if the demuxer lands after it (an
    # index that is coarse or missing, WebM cues that point past their cluster), step further
    # back, then seek to the top. A landing after the first target is never accepted: its
    # frames would stand in for the ones before. Timestamp 0 is not always the top (an MPEG-TS
    # whose clock wraps past 2^33 starts at -8 s), so the last resort is the file opened afresh
    # and decoded from its first byte; a file whose first frame comes after a target even then
    # is refused.
    # A landing whose first packets cannot be decoded (mid-cluster, no keyframe first: VP9
    # refuses them) is a bad landing too, not damage; from the first byte it would be damage.
    first: Any = None
    for lead in (0.0, 2.0, 10.0, math.inf):
        frames = _frames_from(src.container, src.vs, first_target - lead / tb, origin, targets)
        try:
            first = next(frames, None)
        except _Damaged:
            first = None
        if first is not None and _ticks(first, tb) <= first_target:
            break
        frames.close()
    else:
        if not src.fresh():
            raise MediaError(info.path, "undecodable video: no seek lands before "
                             f"{float(targets_ms[0]):.0f} ms and the file cannot be reopened")
        frames = _frames_from(src.container, src.vs, None, origin, targets)
        first = next(frames, None)
        if first is None:
            raise MediaError(info.path, "undecodable video: no frame could be decoded")
        if _ticks(first, tb) > first_target:
            frames.close()
            raise MediaError(
                info.path,
                f"undecodable video: decoded from its first byte, it starts at "
                f"{_ms(first, origin, tb):.0f} ms, after the frame wanted at {float(targets_ms[0]):.0f} ms",
            )
    return frames, first


def _origin_ticks(info: MediaInfo, tb: Fraction) -> int:
    """Timeline zero in the stream's ticks: ``origin_s`` is the float of a whole number of ticks."""
    return round(Fraction(info.origin_s) / tb)


def _ticks(frame: Any, tb: Fraction) -> int:
    """A decoded frame's pts in the stream's ticks (frames normally carry that clock already)."""
    if frame.time_base == tb:
        return int(frame.pts)
    return math.floor(Fraction(frame.pts) * Fraction(frame.time_base) / tb)


def _frames_from(
    container: Any, vs: Any, seek: Fraction | float | None, origin: int, targets: Sequence[int]
) -> Generator[Any, None, None]:
    """Decoded frames from a seek to ``seek`` (ticks; at or before the origin: to timestamp 0),
    or, with None, from where a freshly opened container stands."""
    if seek is not None and seek > origin:
        container.seek(math.floor(seek), stream=vs, backward=True, any_frame=False)
    elif seek is not None:
        container.seek(0, stream=None, backward=True)
    for frame in _decode_needed(container, vs, targets):
        if frame.pts is not None:
            if frame.time_base is None:  # drained at the end: no packet lent it a clock
                frame.time_base = vs.time_base
            yield frame


def _decode_needed(container: Any, vs: Any, targets: Sequence[int]) -> Iterator[Any]:
    """Decode on from where the container stands, skipping pictures that no target shows.

    The decoder gets each packet, once its fate is known (:class:`_Lookahead`), with
    ``skip_frame`` "DEFAULT" (shown at some target) or "NONREF" (not shown: decoded anyway if
    other pictures reference it, dropped otherwise). Reference pictures are always decoded, so
    what comes out is exact; only unseen, unreferenced pictures (most B-frames) are saved.
    Codecs whose skipping is not known to be exact decode all.
    """
    cc = vs.codec_context
    skipping = str(cc.name) in _NONREF_SKIP_CODECS
    if cc.skip_frame != "DEFAULT":  # left over from a pass that stopped early
        cc.skip_frame = "DEFAULT"
    ahead = _Lookahead(targets)
    for packet in container.demux(vs):
        if packet.size == 0:  # the demuxer's end-of-stream marker
            break
        if packet.pts is None or not skipping:
            # No pts to choose by: decode everything from here on.
            skipping = False
            for held in ahead.release():
                yield from _decode(cc, held)
            yield from _decode(cc, packet)
            continue
        ahead.push(packet, int(packet.pts), None if packet.dts is None else int(packet.dts))
        for held, show in ahead.settled():
            yield from _send(cc, held, show)
    for held, show in ahead.rest():
        yield from _send(cc, held, show)
    if skipping:
        cc.skip_frame = "DEFAULT"
    yield from cc.decode(None)


def _send(cc: Any, packet: Any, show: bool) -> Iterator[Any]:
    mode = "DEFAULT" if show else "NONREF"
    if cc.skip_frame != mode:
        cc.skip_frame = mode
    yield from _decode(cc, packet)


class _Damaged(Exception):
    """The decoder refused a packet, or handed out a picture it concealed: damaged data."""

    def __init__(self, pts: int | None, cause: str) -> None:
        super().__init__(cause)
        self.pts, self.cause = pts, cause


def _decode(cc: Any, packet: Any) -> list[Any]:
    """The pictures a packet completes. A decoder error, or a picture flagged corrupt (FFmpeg
    concealed its missing parts), is damage: never passed on as an exact frame."""
    try:
        frames: list[Any] = cc.decode(packet)
    except av.error.FFmpegError as exc:
        raise _Damaged(packet.pts, reason(exc)) from exc
    for frame in frames:
        if frame.is_corrupt:
            raise _Damaged(frame.pts, "a picture concealed by the decoder")
    return frames


class _Lookahead:
    """Packets held back until it is known whether a target shows their picture.

    The frame on screen at t is the packet with the largest pts <= t among *all* packets, and
    every packet has pts >= dts, so once a packet with dts > t has been demuxed the choice for t
    is final; a picture is out as soon as a later one before the next target turns up.

    Times are the stream's integer ticks (packets carry the stream's clock), so a target
    exactly on a picture's start counts as showing it.
    """

    def __init__(self, targets: Sequence[int]) -> None:
        self.targets = targets
        self.waiting: deque[tuple[Any, int]] = deque()  # (packet, pts), decode order
        self.seen: list[int] = []  # pts of every packet demuxed so far, ascending
        self.horizon: float = -math.inf  # the largest dts demuxed so far: every pts to come is later
        self.ended = False

    def push(self, packet: Any, pts: int, dts: int | None) -> None:
        if dts is not None:
            self.horizon = max(self.horizon, dts)
        bisect.insort(self.seen, pts)
        self.waiting.append((packet, pts))

    def settled(self) -> Iterator[tuple[Any, bool]]:
        """The waiting packets, in order, whose fate is known, with whether a target shows
        them; once the look-ahead is full the oldest goes anyway, as shown (always exact)."""
        while self.waiting:
            show = self.shown(self.waiting[0][1])
            if show is None and len(self.waiting) < _LOOKAHEAD_PACKETS:
                break
            yield self.waiting.popleft()[0], show is not False
        if len(self.seen) > 4 * _LOOKAHEAD_PACKETS:
            # Only pts above the earliest one still waiting or to come (dts rises, pts >= dts)
            # are ever looked at again: keep the list short on a long pass.
            cut = min([self.horizon, *(s for _, s in self.waiting)])
            del self.seen[: bisect.bisect_left(self.seen, cut)]

    def rest(self) -> Iterator[tuple[Any, bool]]:
        """At the end of the stream (no packet is to come), every packet still waiting."""
        self.ended = True
        while self.waiting:
            packet, pts = self.waiting.popleft()
            yield packet, self.shown(pts) is not False

    def release(self) -> list[Any]:
        """Every packet still waiting, undecided: for decoding in full."""
        held = [packet for packet, _ in self.waiting]
        self.waiting.clear()
        return held

    def shown(self, pts: int) -> bool | None:
        """Whether the picture at ``pts`` is on screen at a target; None while undecided."""
        k = bisect.bisect_left(self.targets, pts)
        if k == len(self.targets):
            return False
        t = self.targets[k]
        later = bisect.bisect_right(self.seen, pts)
        if later < len(self.seen) and self.seen[later] <= t:
            return False  # a later picture is on screen by the next target already
        if t >= self.horizon and not self.ended:
            return None  # a picture between it and the target may still come
        return True


def _ms(frame: Any, origin: int, tb: Fraction) -> float:
    return float((Fraction(frame.pts) * frame.time_base - origin * tb) * 1000)
